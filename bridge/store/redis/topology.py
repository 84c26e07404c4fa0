"""How the Redis store reaches the master that holds the bridge's keys.

Topologies (:func:`bridge.config.parse_redis_url`): one server, the master that Redis Sentinel
names, or a Redis Cluster. **Every key starts with the prefix's hash tag** (``{bridge}:``), so all
of them live in one cluster slot, on one master: each script stays one atomic step there, and a
proxy that accepts only scripts whose keys share a slot accepts them. Scripts build most key
names from the prefix (``ARGV[1]``) inside Lua; every script also passes at least one real key
(``KEYS[1]``), by which a cluster routes it to that slot's master. The bridge's load is therefore
not spread over a cluster's shards.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, ClusterError, RedisClusterException, TryAgainError
from redis.retry import Retry
from redis.sentinel import Sentinel

from bridge.config import parse_redis_url

#: redis-py errors after which the connections (or the cluster's slot map) are renewed.
RECONNECT = (redis.ConnectionError, redis.TimeoutError, ClusterError, AskError,
             TryAgainError, RedisClusterException)


def from_replica(exc: BaseException) -> bool:
    """Whether ``exc`` is a replica refusing a master's work (``READONLY``, or ``WAIT cannot be
    used with replica instances``): the connection is to a master that a failover turned into a
    replica, so the connections are renewed too. redis-py reconnects by itself after
    ``READONLY`` on a Sentinel connection, not after a refused ``WAIT`` (of a step that wrote
    nothing), which would otherwise fail every step on that connection."""
    return isinstance(exc, redis.ReadOnlyError) or (
        isinstance(exc, redis.ResponseError)
        and str(exc).startswith("WAIT cannot be used with replica"))


def _untyped(f: Any) -> Any:
    """``f`` for a call mypy cannot check (redis-py leaves these functions unannotated)."""
    return f


class _Sentinel(Sentinel):
    """redis-py's :class:`~redis.sentinel.Sentinel`, except that a sentinel leading a failover
    is not taken at its word: until the failover ends (its replicas reconfigured) its
    ``SENTINEL MASTERS`` still names the old master, flagged ``failover_in_progress``, while the
    replica it promoted takes the writes and the other sentinels may name it already. The
    next sentinel is asked instead."""

    def check_master_state(self, state: Any, service_name: str) -> bool:
        flags = str(state.get("flags", "")).split(",")
        return "failover_in_progress" not in flags and bool(
            _untyped(super().check_master_state)(state, service_name))


class Topology:
    """The clients of one ``BRIDGE_STORE`` Redis URL (:func:`bridge.config.parse_redis_url`):
    one server, the master the sentinels name, or the cluster master of ``route_key``'s slot.
    ``socket_timeout`` bounds every connect (seconds), ``reply_timeout`` every reply. Raises
    ``ValueError`` for a bad URL. Nothing connects until the first call."""

    def __init__(self, url: str, route_key: str, *, socket_timeout: float,
                 reply_timeout: float) -> None:
        self.url = url
        self.target = parse_redis_url(url)
        self.route_key = route_key
        self._lock = threading.Lock()
        # One quick retry of a failed connection or timeout: it replaces a connection Redis
        # closed (a restart) without the caller seeing an error. redis-py 6+ deprecates
        # ``retry_on_timeout=True``; the Retry below is its documented replacement.
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1,
                      supported_errors=(redis.ConnectionError, redis.TimeoutError))
        self._options: dict[str, Any] = {
            "decode_responses": True, "socket_timeout": reply_timeout,
            "socket_connect_timeout": socket_timeout, "health_check_interval": 15}
        self._sentinel: Sentinel | None = None
        self._cluster: RedisCluster | None = None
        self._cluster_stale = False
        self._client: redis.Redis | None = None
        t = self.target
        if t.topology == "redis":
            self._client = redis.Redis.from_url(url, retry=retry, retry_on_error=[
                redis.ConnectionError, redis.TimeoutError], **self._options)
        elif t.topology == "sentinel":
            self._sentinel = _untyped(_Sentinel)(
                list(t.hosts), sentinel_kwargs={
                    "socket_timeout": min(socket_timeout, 1.0),
                    "socket_connect_timeout": min(socket_timeout, 1.0),
                    "password": t.sentinel_password, "decode_responses": True,
                    # a sentinel that does not answer: ask the next one (redis-py's default
                    # retries each for seconds)
                    "retry": Retry(NoBackoff(), 0)})
            self._client = _untyped(self._sentinel.master_for)(
                t.service, redis_class=redis.Redis, db=t.db, username=t.username,
                password=t.password, retry=retry,
                retry_on_error=[redis.ConnectionError, redis.TimeoutError], **self._options)

    def node(self) -> redis.Redis:
        """The client of the master that holds the bridge's keys: the one server, the master
        the sentinels name, or the cluster master of the prefix's slot (the cluster client is
        made on first use, and its slot map read again after an error)."""
        if self._client is not None:
            return self._client
        with self._lock:
            if self._cluster is None:
                t = self.target
                self._cluster = RedisCluster(
                    startup_nodes=[_untyped(ClusterNode)(h, p) for h, p in t.hosts],
                    username=t.username, password=t.password, require_full_coverage=False,
                    retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
                    **self._options)
                self._cluster_stale = False
            elif self._cluster_stale:
                self._cluster_stale = False
                self._cluster.nodes_manager.initialize()
            cluster = self._cluster
        node = _untyped(cluster.get_node_from_key)(self.route_key)
        return cluster.get_redis_connection(node)

    def master_moved(self) -> str | None:
        """Sentinel only, after a write fell short of replica confirmations: ask the sentinels
        which node is the master now. When it is not the one this client last connected to
        (a failover moved it, and the old master, still running, takes writes until the
        sentinels turn it into a replica, which then drops them), the idle connections are
        dropped, so the next call reaches the new master, and the new master is returned as
        ``host:port``. ``None``: unchanged, not known (no sentinel answers) or not Sentinel.

        The client's last connection stands for the node written to: this process's other
        threads may have reconnected meanwhile, so a write of theirs on the old master may
        be missed here (their connections to it are dropped when given back)."""
        if self._sentinel is None or self._client is None:
            return None
        pool: Any = self._client.connection_pool
        before = pool.master_address
        try:
            now = pool.get_master_address()  # drops the idle connections when it changed
        except (redis.RedisError, OSError):
            return None
        if before is None or tuple(now) == tuple(before):
            return None
        return f"{now[0]}:{now[1]}"

    def renew(self) -> None:
        """Drop idle pooled connections (after a restart or failover they are all dead), or
        have the cluster's slot map read again on the next call."""
        if self._client is not None:
            self._client.connection_pool.disconnect(inuse_connections=False)
        else:
            self._cluster_stale = True

    def slot_moved(self) -> None:
        """The cluster answered ``MOVED``: read the slot map again on the next call."""
        self._cluster_stale = True

    def close(self) -> None:
        """Close every connection (the clients reconnect on their next use)."""
        if self._client is not None:
            self._client.close()
        if self._sentinel is not None:
            for s in self._sentinel.sentinels:
                s.close()
        with self._lock:
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None
