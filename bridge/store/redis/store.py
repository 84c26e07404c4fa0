"""The shared store: one Redis (7.x) for every instance of the bridge, e.g. on a PaaS.

Every atomic step of :class:`bridge.store.base.Store` is **one Lua script** (a constant of
:mod:`bridge.store.redis.lua`, run by its SHA1 with ``EVALSHA`` and loaded when the server
answers ``NOSCRIPT``).
Redis runs a script alone, so any number of processes on any number of machines sharing the
Redis never double-page, never both pass a limit and never both claim the same SMS. A script's
writes are all-or-nothing as far as Redis allows: a read-only replica or ``maxmemory`` refuses
the *first* write of a script, before anything was changed. Key names are derived from the
prefix inside the scripts, all under one hash tag (:mod:`bridge.store.redis.topology`); the
key map is :mod:`bridge.store.redis.keys`.

Durability is Redis's own: run it with ``appendonly yes`` (``appendfsync everysec`` loses at most
the last second on a power loss, ``always`` nothing) and with ``maxmemory-policy noeviction``
(an evicting policy would silently drop queued SMS and dedup records).
:meth:`RedisStore.config_warnings` reports both settings when the server lets it read them.
AOF protects against a restart of the server; against losing the master itself (a failover to a
replica, which copies writes asynchronously) ``BRIDGE_REDIS_WAIT`` makes each write step wait for
replicas (``WAIT``) before the webhook is answered (see :class:`RedisStore`).

"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, cast

import redis
from redis.exceptions import (
    MovedError,
    NoScriptError,
    RedisClusterException,
)

from bridge.config import Settings
from bridge.decide.episodes import (
    Episode,
    Paged,
    StepClaim,
    StepState,
    code_expired,
    has_placeholder,
    new_code,
    new_id,
)
from bridge.decide.heartbeats import Action, HeartbeatClaim, HeartbeatRecord
from bridge.decide.types import EpisodeMark, Notification, Policy, State
from bridge.errors import StoreUnavailable, StoreUnconfirmed
from bridge.privacy import redact_url
from bridge.rules.render import ACK_PLACEHOLDER
from bridge.store.base import (
    EPISODE_STALE,
    STATES,
    Claim,
    Item,
    Job,
    JobClaim,
    JobState,
    Outcome,
    Store,
    dumps_vars,
    episode_text,
)
from bridge.store.redis.keys import (
    DEFAULT_DEDUP_TTL,
    DEFAULT_PREFIX,
    HASH_TAG,
    decode_episode,
    decode_item,
    decode_job,
    limit_arg,
    opt_time,
    time_arg,
)
from bridge.store.redis.lua import (
    ACK_LUA,
    ADD_JOB_LUA,
    BEAT_LUA,
    CLAIM_HEARTBEAT_LUA,
    CLAIM_JOBS_LUA,
    CLAIM_LUA,
    CLAIM_STEPS_LUA,
    EPISODE_STATES_LUA,
    FINISH_HEARTBEAT_LUA,
    FINISH_STEP_LUA,
    MARK_LUA,
    PENDING_LUA,
    PRUNE_EPISODES_LUA,
    PRUNE_JOBS_LUA,
    PRUNE_LUA,
    RECENT_LUA,
    RECORD_LUA,
    SET_SILENCE_LUA,
    SETTLE_JOB_LUA,
    Script,
)
from bridge.store.redis.topology import RECONNECT, Topology, from_replica


def _codes_needed(notes: Sequence[Notification]) -> int:
    """Fresh ack codes the record script may need: two per notification that renders
    ``ack_code`` (a taken code is skipped), and a few spare; none when no template reads it."""
    k = sum(1 for n in notes if has_placeholder(n.variables))
    return 2 * k + 4 if k else 0


class RedisWake:
    """A deliverer's subscription to the store's ``{prefix}wake`` channel (pub/sub on the
    master that holds the bridge's keys; a cluster passes a ``PUBLISH`` to every node).
    Subscribes on the first :meth:`wait`; after a connection error it waits out the timeout
    (the caller polls meanwhile) and subscribes again on the next call, maybe on a new master.
    A wake published while it was not subscribed is lost: the poll finds that SMS."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self._pubsub: Any = None

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a wake; True when one came (every wake queued
        so far is consumed). Never raises."""
        started = time.monotonic()
        try:
            if self._pubsub is None:
                self._pubsub = self.store._node().pubsub(ignore_subscribe_messages=True)
                self._pubsub.subscribe(self.store._k("wake"))
            # the subscription's confirmation comes back as None at once: wait on after it
            while (left := timeout - (time.monotonic() - started)) > 0:
                if self._pubsub.get_message(timeout=left) is not None:
                    while self._pubsub.get_message(timeout=0.0) is not None:
                        pass
                    return True
            return False
        except (redis.RedisError, RedisClusterException, OSError):
            self.close()
            time.sleep(max(timeout - (time.monotonic() - started), 0.0))
            return False

    def close(self) -> None:
        """Drop the subscription (safe to call twice)."""
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except (redis.RedisError, OSError):
                pass


class RedisStore(Store):
    """:class:`Store` on the Redis named by ``url`` (``BRIDGE_STORE``, docs/configuration.md; read
    by :func:`bridge.config.parse_redis_url`); every key starts with ``prefix``, which must hold a
    hash tag (``{bridge}:`` by default) so that every key lives in one Redis Cluster slot.

    * ``redis://[[user]:password@]host:port/db``, ``rediss://`` (TLS), ``unix:///path?db=N``:
      one server, through ``redis.Redis.from_url``;
    * ``redis+sentinel://[:password@]host:port[,host:port...]/SERVICE[/db]``: the master that
      the sentinels name for SERVICE, through ``redis.sentinel.Sentinel(...).master_for``: every
      new connection asks the sentinels, so after a failover the next call reaches the new
      master (a demoted master's ``READONLY`` or refused ``WAIT`` drops the connections; so
      does a write too few replicas confirmed while the sentinels name another master: the
      old master, still running, takes writes until it is made a replica, and then drops
      them, so that write raises :class:`StoreUnavailable`, see :meth:`_confirmed`);
    * ``redis+cluster://[:password@]host:port[,...]``: ``redis.cluster.RedisCluster`` finds the
      master of the bridge's slot and every step runs there; after a connection error,
      ``MOVED`` or ``CLUSTERDOWN`` the slot map is read again (on the next call).

    ``wait`` (``BRIDGE_REDIS_WAIT``) > 0: each write step that a webhook's answer or a delivery
    result depends on (record, acknowledge, finish_step, mark_sent/retry/failed, ping) is
    followed on the same connection by ``WAIT wait wait_timeout``; fewer confirmations raise
    :class:`StoreUnconfirmed` (a :class:`StoreUnavailable`: the write stands on the master but a
    failover may lose it). A claim is waited for too but not refused for too few
    confirmations: it comes back with ``confirmed`` false and the deliverer decides. A claim
    lost in a failover would let a second deliverer send what the first is sending (its lease
    token is unknown to the new master, so the first one's marks change nothing and the items
    come due again); with the replica's confirmation the claim survives.
    Releases, pruning and status notes are not waited for: losing one only keeps a mobile held
    until its lease lapses or an old record a little longer.

    Nothing connects until the first call. Connections come from redis-py's pools, which are
    thread-safe, reset themselves in a forked child and reconnect by themselves when Redis comes
    back; an operation that fails raises :class:`StoreUnavailable` (never with the password)
    and leaves nothing behind that would fail the next one. A script the server does not know
    (``NOSCRIPT``: a new master after a failover, a restart, ``SCRIPT FLUSH``) is loaded and run
    again. ``dedup_ttl`` (seconds) is how long a dedup record lives at least; ``socket_timeout``
    (seconds) bounds every connect and reply. Raises ``ValueError`` for a bad URL or prefix.
    """

    wakes_deliverers = True

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, *, socket_timeout: float = 3.0,
                 dedup_ttl: int = DEFAULT_DEDUP_TTL, wait: int = Settings.redis_wait,
                 wait_timeout: float = Settings.redis_wait_timeout) -> None:
        if not HASH_TAG.match(prefix):
            raise ValueError(f"the key prefix must start with a hash tag like {{bridge}}:, "
                             f"not {prefix!r}")
        self.url = url
        self.prefix = prefix
        self.dedup_ttl = int(dedup_ttl)
        self.wait = int(wait)
        self.wait_timeout = float(wait_timeout)
        # a reply may take the WAIT timeout longer: never cut it off (a timed-out step would be
        # sent again by the retry)
        self._topology = Topology(
            url, self._k("seq"), socket_timeout=socket_timeout,
            reply_timeout=socket_timeout + (self.wait_timeout if self.wait else 0.0))
        self.target = self._topology.target
        self._secrets = [p for p in (self.target.password, self.target.sentinel_password) if p]
        self._lua_record = Script(RECORD_LUA)
        self._lua_claim = Script(CLAIM_LUA)
        self._lua_mark = Script(MARK_LUA)
        self._lua_recent = Script(RECENT_LUA)
        self._lua_pending = Script(PENDING_LUA)
        self._lua_prune = Script(PRUNE_LUA)
        self._lua_ack = Script(ACK_LUA)
        self._lua_claim_steps = Script(CLAIM_STEPS_LUA)
        self._lua_finish_step = Script(FINISH_STEP_LUA)
        self._lua_prune_episodes = Script(PRUNE_EPISODES_LUA)
        self._lua_set_silence = Script(SET_SILENCE_LUA)
        self._lua_add_job = Script(ADD_JOB_LUA)
        self._lua_claim_jobs = Script(CLAIM_JOBS_LUA)
        self._lua_settle_job = Script(SETTLE_JOB_LUA)
        self._lua_prune_jobs = Script(PRUNE_JOBS_LUA)
        self._lua_beat = Script(BEAT_LUA)
        self._lua_claim_heartbeat = Script(CLAIM_HEARTBEAT_LUA)
        self._lua_finish_heartbeat = Script(FINISH_HEARTBEAT_LUA)
        self._lua_episode_states = Script(EPISODE_STATES_LUA)

    # -- plumbing ---------------------------------------------------------------------------
    def _k(self, name: str) -> str:
        return self.prefix + name

    def _node(self) -> redis.Redis:
        """The client of the master that holds the bridge's keys (:meth:`Topology.node`)."""
        return self._topology.node()

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn every redis-py error into :class:`StoreUnavailable` (without the password)."""
        try:
            yield
        except (redis.RedisError, RedisClusterException) as exc:
            if isinstance(exc, RECONNECT) or from_replica(exc):
                self._topology.renew()
            raise StoreUnavailable(
                f"redis {redact_url(self.url)}: {self._scrub(f'{type(exc).__name__}: {exc}')}"
            ) from None

    def _run(self, script: Script, keys: Sequence[str], args: Sequence[str | int],
             confirm: bool | str = True) -> Any:
        """Run ``script`` on the master (:meth:`_execute`); with ``confirm`` and ``wait`` > 0
        followed on the same connection by ``WAIT``, and too few confirmations raise
        :class:`StoreUnconfirmed` (``confirm="soft"``: waited for, but too few confirmations
        are not an error; either way a master the sentinels replaced raises, see
        :meth:`_confirmed`). Raises :class:`StoreUnavailable` / :class:`StoreUnconfirmed`."""
        reply, acks = self._execute(script, keys, args, bool(confirm) and self.wait > 0)
        if acks is not None:
            self._confirmed(acks, strict=confirm != "soft")
        return reply

    def _execute(self, script: Script, keys: Sequence[str], args: Sequence[str | int],
                 waiting: bool) -> tuple[Any, int | None]:
        """Run ``script`` on the master; with ``waiting`` followed on the same connection by
        ``WAIT``. Returns the script's reply and how many replicas confirmed it (``None``
        without ``waiting``). ``keys`` must hold at least one key of the bridge: a cluster
        routes the script by it (every key shares the prefix's slot). A ``NOSCRIPT`` answer
        loads the script and runs it again. Raises :class:`StoreUnavailable`."""
        if not keys:
            raise ValueError("a script needs at least one key to be routed by")
        with self._errors():
            for attempt in range(3):
                client = self._node()
                pipe = client.pipeline(transaction=False)
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                if waiting:
                    pipe.wait(self.wait, int(self.wait_timeout * 1000))
                replies = pipe.execute(raise_on_error=False)
                if isinstance(replies[0], NoScriptError) and attempt < 2:
                    client.script_load(script.text)
                    continue
                if isinstance(replies[0], MovedError) and attempt < 2:
                    self._topology.slot_moved()  # read the slot map, run it there
                    continue
                for reply in replies:
                    if isinstance(reply, Exception):
                        raise reply
                return replies[0], (int(replies[1]) if waiting else None)
        raise StoreUnavailable(f"redis {redact_url(self.url)}: script kept failing")

    def _confirmed(self, acks: Any, strict: bool = True) -> bool:
        """Whether ``wait`` replicas confirmed a write (``acks`` of them did). Fewer: when the
        sentinels name another master now, the write went to the old one, which drops it once
        it is made a replica, so it is not stored: :class:`StoreUnavailable` (the connections
        are renewed, a retry reaches the new master; :meth:`Topology.master_moved`). Else,
        with ``strict``, :class:`StoreUnconfirmed`; without, ``False``."""
        if int(acks) >= self.wait:
            return True
        moved = self._topology.master_moved()
        if moved is not None:
            raise StoreUnavailable(
                f"redis {redact_url(self.url)}: the sentinels name {moved} as the master now; "
                "this write went to the old master, which drops it when it is made a replica")
        if not strict:
            return False
        raise StoreUnconfirmed(
            f"redis {redact_url(self.url)}: {int(acks)} of {self.wait} replicas confirmed "
            f"the write within {self.wait_timeout:g}s (BRIDGE_REDIS_WAIT); it stands on "
            "the master, which may lose it in a failover")

    def describe(self) -> str:
        """The topology in use, for the start-up line, e.g. ``redis sentinel mymaster via 3
        sentinels, wait 1 replica``."""
        t = self.target
        n = len(t.hosts)
        if t.topology == "sentinel":
            text = (f"redis sentinel {t.service} via {n} sentinel{'s' if n != 1 else ''}"
                    + (f", db {t.db}" if t.db else ""))
        elif t.topology == "cluster":
            text = (f"redis cluster via {n} seed node{'s' if n != 1 else ''}, every key "
                    f"under {HASH_TAG.match(self.prefix).group(1)}")  # type: ignore[union-attr]
        else:
            text = f"redis {redact_url(self.url)}"
        if self.wait:
            text += f", wait {self.wait} replica{'s' if self.wait != 1 else ''}"
            if self.wait_timeout != Settings.redis_wait_timeout:  # not the default
                text += f" within {self.wait_timeout:g}s"
        return text

    def close(self) -> None:
        self._topology.close()

    # -- the contract -----------------------------------------------------------------------
    def record(self, notes: Sequence[Notification], policy: Policy, now: float,
               episodes: Sequence[EpisodeMark] = (),
               resolved: Sequence[tuple[str, str]] = ()) -> list[Outcome]:
        payload = dumps_vars([
            {"m": n.mobile, "fp": n.fingerprint, "st": n.status, "ep": n.episode,
             "route": n.route, "an": n.alertname, "tpl": int(n.tpl_id),
             "tn": n.template or "",
             "vars": dumps_vars(n.variables),
             "ri": float(n.repeat_interval), "state": n.state, "reason": n.reason,
             "ut": 1 if n.untimed else 0, "rt": n.resolved_template or "", "lv": int(n.level),
             "steps": [{"after": time_arg(st.after), "receiver": st.receiver,
                        "template": st.template}
                       for st in n.steps],
             "info": {} if n.info is None else {
                 "labels": dict(n.info.labels), "summary": n.info.summary,
                 "starts_at": "" if n.info.starts_at is None else time_arg(n.info.starts_at),
                 "silence_url": n.info.silence_url or "",
                 "annotations": dict(n.info.annotations), "source": n.info.source}}
            for n in notes])
        marks = dumps_vars([{"fp": m.fingerprint, "f": 1 if m.firing else 0} for m in episodes])
        keys = [self._k(k) for k in ("seq", "items", "due", "pace", "dedup", "done", "storms")]
        storm = policy.storm_threshold if policy.storm_window > 0 else None
        args: list[str | int] = [
            self.prefix, time_arg(now), "(" + time_arg(now - 3600),
            limit_arg(policy.per_mobile_per_hour), limit_arg(policy.per_day), limit_arg(storm),
            time_arg(policy.storm_window), policy.day,
            self.dedup_ttl, time_arg(now - self.dedup_ttl), time_arg(now - 7200), payload, marks,
            episode_text(now), ACK_PLACEHOLDER,
            json.dumps([new_code() for _ in range(_codes_needed(notes))]),
            json.dumps([new_id() for _ in range(len(notes) + 1)]),
            json.dumps([[fp, ep] for fp, ep in resolved])]
        rows = self._run(self._lua_record, keys, args)
        out = []
        for n, (state, reason, id, ep, eid, filled) in zip(notes, rows, strict=True):
            if n.untimed:
                n = replace(n, episode=ep)
            if filled:  # what was stored, with the ack code filled in
                n = replace(n, variables=json.loads(str(filled)))
            out.append(Outcome(n, cast(State, state), reason, id or None, eid or None))
        return out

    # -- episodes ---------------------------------------------------------------------------
    def _get_episodes(self, ids: Sequence[str]) -> list[Episode]:
        if not ids:
            return []
        with self._errors():
            raws = self._node().mget([self._k(f"ep:{i}") for i in ids])
        return [decode_episode(str(r)) for r in raws if r is not None]

    def episodes_by_key(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Episode]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        with self._errors():
            ids = self._node().mget([self._k(f"epkey:{fp}|{ep}") for fp, ep in wanted])
        found = {str(i): k for k, i in zip(wanted, ids, strict=True) if i is not None}
        return {found[e.id]: e for e in self._get_episodes(list(found)) if e.id in found}

    def episode_states(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """See :meth:`Store.episode_states`: one script call, the episodes' JSON decoded in
        Redis (the deliverer asks before each send)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        states = self._run(self._lua_episode_states, [self._k("episodes")],
                           [self.prefix, *(f"{fp}|{ep}" for fp, ep in wanted)], confirm=False)
        return {k: str(s) for k, s in zip(wanted, states, strict=True) if s}

    def episodes(self, state: str | None = None, limit: int = 50) -> list[Episode]:
        index = self._k(f"epstate:{state}") if state else self._k("episodes")
        with self._errors():
            ids = self._node().zrevrange(index, 0, max(int(limit), 1) - 1)
        return self._get_episodes([str(i) for i in ids])[:limit]

    def episode(self, id: str) -> Episode | None:
        found = self._get_episodes([id])
        return found[0] if found else None

    def episode_by_code(self, code: str, now: float) -> tuple[Episode, Paged] | None:
        if not code:
            return None
        with self._errors():
            eid = self._node().get(self._k(f"epcode:{code}"))
        episode = self.episode(str(eid)) if eid is not None else None
        if episode is None or code_expired(episode, now):
            return None
        paged = next((p for p in episode.paged if p.code == code), None)
        return None if paged is None else (episode, paged)

    def acknowledge(self, id: str, by: str, via: str, now: float) -> tuple[Episode, bool]:
        row = self._run(self._lua_ack, [self._k(f"ep:{id}")],
                        [self.prefix, id, by, via, time_arg(now)])
        if not row:
            raise KeyError(id)
        return decode_episode(str(row[0])), bool(int(row[1]))

    def unknown_code_hit(self, client: str, now: float) -> int:
        key = self._k(f"unknown:{client}:{int(now // 60)}")
        with self._errors():
            pipe = self._node().pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, 120)
            n, _ = pipe.execute()
        return int(n)

    def unknown_code_hits(self, client: str, now: float) -> int:
        with self._errors():
            n = self._node().get(self._k(f"unknown:{client}:{int(now // 60)}"))
        return int(n or 0)

    def claim_steps(self, now: float, lease: float, limit: int = 20) -> list[StepClaim]:
        lease_until = now + lease
        tokens = [secrets.token_hex(8) for _ in range(max(int(limit), 1))]
        rows = self._run(self._lua_claim_steps, [self._k("steps")],
                         [self.prefix, time_arg(now), time_arg(lease_until), int(limit), *tokens],
                         confirm=False)
        return [StepClaim(str(eid), int(idx), str(token), lease_until)
                for eid, idx, token in rows]

    def finish_step(self, claim: StepClaim, state: StepState, reason: str,
                    now: float) -> bool:
        return bool(self._run(self._lua_finish_step, [self._k("steps")], [
            self.prefix, claim.episode_id, str(claim.index), claim.token, state, reason,
            time_arg(now)]))

    def set_silence(self, id: str, silence_id: str | None) -> None:
        self._run(self._lua_set_silence, [self._k(f"ep:{id}")],
                  [self.prefix, id, silence_id or ""])

    # -- jobs -------------------------------------------------------------------------------
    def add_job(self, key: str, kind: str, payload: dict[str, Any], due_at: float,
                keep_until: float, now: float) -> bool:
        return bool(self._run(self._lua_add_job, [self._k("jobs")], [
            self.prefix, key, kind, dumps_vars(payload), time_arg(due_at),
            time_arg(keep_until), time_arg(now)]))

    def claim_jobs(self, now: float, lease: float, limit: int = 20) -> list[JobClaim]:
        lease_until = now + lease
        tokens = [secrets.token_hex(8) for _ in range(max(int(limit), 1))]
        rows = self._run(self._lua_claim_jobs, [self._k("jobs")],
                         [self.prefix, time_arg(now), time_arg(lease_until), int(limit),
                          *tokens], confirm=False)
        return [JobClaim(decode_job(flat), str(token), lease_until) for token, flat in rows]

    def settle_job(self, claim: JobClaim, state: JobState, now: float, *,
                   due_at: float | None = None, error: str = "") -> bool:
        return bool(self._run(self._lua_settle_job, [self._k("jobs"), self._k("jobskept")], [
            self.prefix, claim.job.key, claim.token, state,
            time_arg(now if due_at is None else due_at), error]))

    def job(self, key: str) -> Job | None:
        with self._errors():
            h = cast(Any, self._node().hgetall)(self._k(f"job:{key}"))
        if not h:
            return None
        return decode_job([str(x) for kv in dict(h).items() for x in kv])

    # -- heartbeats -------------------------------------------------------------------------
    def beat(self, names: Sequence[str], now: float) -> None:
        if names:
            self._run(self._lua_beat, [self._k("heartbeats")],
                      [time_arg(now), *dict.fromkeys(names)])

    def heartbeats(self) -> dict[str, HeartbeatRecord]:
        with self._errors():
            raw = self._node().hgetall(self._k("heartbeats"))
        out = {}
        for name, text in dict(raw).items():
            h = json.loads(text)
            out[str(name)] = HeartbeatRecord(str(name), float(h["seen"]), h["state"],
                                             opt_time(h["since"]), float(h["lease"]))
        return out

    def claim_heartbeat(self, name: str, action: Action, last_seen: float, since: float,
                        now: float, lease: float) -> HeartbeatClaim | None:
        token = secrets.token_hex(8)
        row = self._run(self._lua_claim_heartbeat, [self._k("heartbeats")],
                        [name, action, time_arg(last_seen), time_arg(since), time_arg(now),
                         time_arg(now + lease), token], confirm="soft")
        if not row:
            return None
        return HeartbeatClaim(name, action, token, now + lease, float(row[0]), float(row[1]))

    def finish_heartbeat(self, claim: HeartbeatClaim, now: float) -> bool:
        return bool(self._run(self._lua_finish_heartbeat, [self._k("heartbeats")],
                              [claim.name, claim.action, claim.token]))

    def claim(self, now: float, lease: float, max_mobiles: int,
              max_items: int = 0) -> list[Claim]:
        lease_until = now + lease
        tokens = [secrets.token_hex(8) for _ in range(max(int(max_mobiles), 1))]
        rows, acks = self._execute(
            self._lua_claim, [self._k("due"), self._k("pace")],
            [self.prefix, time_arg(now), time_arg(lease_until), int(max_mobiles),
             max(int(max_items), 0), *tokens], self.wait > 0)
        # waited for but not refused: the deliverer decides (bridge.deliver.deliverer)
        confirmed = acks is None or self._confirmed(acks, strict=False)
        return [Claim(mobile, [decode_item(flat) for flat in items], lease_until, bool(gapped),
                      token, confirmed)
                for mobile, gapped, token, items in rows]

    def _mark(self, op: str, ids: Sequence[str], token: str, pace_until: float | None,
              now: float | None, due_at: float | None, reason: str = "", sid: str = "",
              fee: int = 0, start_clock: bool = False, fold: bool = False,
              check: Sequence[tuple[str, str]] = ()) -> tuple[int, dict[tuple[str, str], str]]:
        """One run of MARK_LUA: (items changed, the episode states of ``check`` after it)."""
        if not ids or not token:  # an unleased item carries no token: nothing may mark it
            return 0, (self.episode_states(check) if check else {})
        keys = [self._k("due"), self._k("pace"), self._k("done"), self._k("dedup")]
        wanted = list(dict.fromkeys(check))
        row = self._run(self._lua_mark, keys, [
            self.prefix, op, "" if now is None else time_arg(now),
            "" if due_at is None else time_arg(due_at),
            reason, sid, str(int(fee)), token, "" if pace_until is None else time_arg(pace_until),
            "1" if start_clock else "", "1" if fold else "", len(ids),
            *[str(i) for i in ids], *(f"{fp}|{ep}" for fp, ep in wanted)],
            confirm=op != "release")
        return int(row[0]), {k: str(s) for k, s in zip(wanted, row[1:], strict=True) if s}

    def mark_sent(self, ids: Sequence[str], sid: str, fee: int, now: float, reason: str = "",
                  *, token: str, pace_until: float | None, fold: bool = False) -> int:
        return self._mark("sent", ids, token, pace_until, now, None, reason, sid, fee,
                          fold=fold)[0]

    def mark_sent_and_check(self, ids: Sequence[str], sid: str, fee: int, now: float,
                            reason: str = "", *, token: str, pace_until: float | None,
                            check: Sequence[tuple[str, str]]
                            ) -> tuple[int, dict[tuple[str, str], str]]:
        """See :meth:`Store.mark_sent_and_check`: one script call (MARK_LUA reads the states
        after the mark)."""
        return self._mark("sent", ids, token, pace_until, now, None, reason, sid, fee,
                          check=check)

    def mark_retry(self, ids: Sequence[str], due_at: float, reason: str, now: float, *,
                   token: str, pace_until: float | None, start_clock: bool = False) -> int:
        return self._mark("retrying", ids, token, pace_until, now, due_at, reason,
                          start_clock=start_clock)[0]

    def mark_failed(self, ids: Sequence[str], reason: str, now: float, *, token: str,
                    pace_until: float | None) -> int:
        return self._mark("failed", ids, token, pace_until, now, None, reason)[0]

    def mark_suppressed(self, ids: Sequence[str], reason: str, now: float, *, token: str,
                        pace_until: float | None) -> int:
        return self._mark("suppressed", ids, token, pace_until, now, None, reason)[0]

    def release(self, ids: Sequence[str], due_at: float, *, token: str,
                pace_until: float | None = None) -> int:
        return self._mark("release", ids, token, pace_until, None, due_at)[0]

    def untimed_starts(self, fingerprints: Sequence[str]) -> dict[str, str]:
        wanted = list(dict.fromkeys(fingerprints))
        if not wanted:
            return {}
        with self._errors():
            values = self._node().mget([self._k(f"episode:{fp}") for fp in wanted])
        # (a value without 'T' is a start from before episodes were stored as text)
        return {fp: str(v) for fp, v in zip(wanted, values, strict=True)
                if v is not None and "T" in str(v)}

    def pending(self, address: str) -> list[Item]:
        rows = self._run(self._lua_pending, [self._k(f"mobile:{address}:pending")],
                         [self.prefix], confirm=False)
        return sorted((decode_item(flat) for flat in rows), key=lambda i: int(i.id))

    def recent(self, limit: int = 50, state: str | None = None,
               mobile: str | None = None) -> list[Item]:
        rows = self._run(self._lua_recent, [self._k("items")],
                         [self.prefix, int(limit), state or "", mobile or ""], confirm=False)
        return [decode_item(flat) for flat in rows]

    def counts(self) -> dict[str, int]:
        with self._errors():
            pipe = self._node().pipeline(transaction=True)
            for s in STATES:
                pipe.zcard(self._k(f"state:{s}"))
            sizes = pipe.execute()
        return {s: int(n) for s, n in zip(STATES, sizes, strict=True)}

    def prune(self, before: float, batch: int = 1000) -> int:
        """See :meth:`Store.prune`; each step (one script call) deletes at most ``batch`` of
        each kind, so webhooks wait at most one short step."""
        keys = [self._k(k) for k in ("done", "items", "dedup", "pace", "storms", "due")]
        total = 0
        while True:
            deleted, more = self._run(self._lua_prune, keys,
                                      [self.prefix, "(" + time_arg(before), int(batch)],
                                      confirm=False)
            total += int(deleted)
            if not more:
                break
        while int(self._run(self._lua_prune_episodes,
                            [self._k("epresolved"), self._k("episodes")],
                            [self.prefix, "(" + time_arg(before), int(batch),
                             "(" + time_arg(before - EPISODE_STALE)], confirm=False)) >= batch:
            pass
        while int(self._run(self._lua_prune_jobs, [self._k("jobskept")],
                            [self.prefix, "(" + time_arg(before), int(batch)],
                            confirm=False)) >= batch:
            pass
        return total

    def next_due(self) -> float | None:
        """See :meth:`Store.next_due`: the lowest score of ``{prefix}due`` (when a mobile can
        next be claimed), of ``{prefix}steps`` and of ``{prefix}jobs``."""
        with self._errors():
            pipe = self._node().pipeline(transaction=False)
            pipe.zrange(self._k("due"), 0, 0, withscores=True)
            pipe.zrange(self._k("steps"), 0, 0, withscores=True)
            pipe.zrange(self._k("jobs"), 0, 0, withscores=True)
            firsts = pipe.execute()
        times = [float(first[0][1]) for first in firsts if first]
        return min(times) if times else None

    def work_listener(self) -> RedisWake:
        """A subscriber of ``{prefix}wake``, which :meth:`record` publishes to when it queued
        an SMS: every instance's deliverer is woken (see :class:`RedisWake`)."""
        return RedisWake(self)

    def oldest_due(self, now: float) -> float | None:
        """See :meth:`Store.oldest_due`: the lowest score of ``{prefix}due`` up to ``now``
        (a mobile's score is already when it can next be claimed)."""
        with self._errors():
            first = self._node().zrangebyscore(self._k("due"), "-inf", time_arg(now), start=0,
                                               num=1, withscores=True)
        return float(first[0][1]) if first else None

    def set_status(self, key: str, value: str | None) -> None:
        with self._errors():
            if value is None:
                self._node().hdel(self._k("status"), key)
            else:
                self._node().hset(self._k("status"), key, value)

    def get_status(self, key: str) -> str | None:
        with self._errors():
            value = self._node().hget(self._k("status"), key)
        return None if value is None else str(value)

    def ping(self) -> None:
        """See :meth:`Store.ping`; with ``wait`` > 0 the write must also be confirmed by that
        many replicas (:class:`StoreUnconfirmed` otherwise), so ``/readyz`` says why webhooks
        get 503."""
        with self._errors():
            pipe = self._node().pipeline(transaction=False)
            pipe.set(self._k("ping"), "1")
            if self.wait:
                pipe.wait(self.wait, int(self.wait_timeout * 1000))
            replies = pipe.execute()
        if self.wait:
            self._confirmed(replies[1])

    def config_warnings(self) -> list[str]:
        """What in the server's configuration weakens the guarantees, as sentences for the
        start-up log: AOF off, an evicting ``maxmemory-policy``, fewer connected replicas than
        ``wait``, and (sentinel, cluster) ``wait`` 0, under which a failover may take back a
        200. Empty when fine; the ``INFO`` checks are left out when the server refuses
        ``INFO``. Raises :class:`StoreUnavailable`."""
        out = []
        if self.wait == 0 and self.target.topology != "redis":
            out.append("BRIDGE_REDIS_WAIT=0: replicas copy writes asynchronously, so a failover "
                       "may lose webhooks answered 200 just before it; set BRIDGE_REDIS_WAIT=1")
        with self._errors():
            node = self._node()
            try:
                info: dict[str, Any] = dict(node.info("persistence"))
                info.update(node.info("memory"))
                info.update(node.info("replication"))
            except redis.ResponseError:
                return out
        if str(info.get("aof_enabled", "1")) == "0":
            out.append("redis runs without AOF (appendonly no): a restart of redis may lose "
                       "queued SMS and dedup records; set appendonly yes")
        policy = str(info.get("maxmemory_policy", "noeviction"))
        if policy != "noeviction":
            out.append(f"redis maxmemory-policy is {policy}: when full, redis may evict queued "
                       "SMS and dedup records; set maxmemory-policy noeviction")
        replicas = int(info.get("connected_slaves", 0))
        if self.wait and replicas < self.wait:
            out.append(f"the redis master has {replicas} connected replicas but "
                       f"BRIDGE_REDIS_WAIT={self.wait}: webhooks get 503 until enough connect")
        return out
