"""Store implementations behind :class:`bridge.store.base.Store`, and :func:`open_store`, the one
place that knows them all (``base`` imports no implementation)."""

from bridge.config import REDIS_SCHEMES, Settings
from bridge.decide.types import PAGING_POLICY, EpisodeMark, Notification, Policy, PolicyRow
from bridge.store.base import Claim, Item, Outcome, Store


def open_store(url: str, *, redis_wait: int = Settings.redis_wait,
               redis_wait_timeout: float = Settings.redis_wait_timeout,
               retention: float | None = None) -> Store:
    """Open the store a ``BRIDGE_STORE`` URL names: ``sqlite:///PATH``, or Redis
    (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``, ``redis+cluster://``; see
    :class:`bridge.store.redis.store.RedisStore`) with ``redis_wait`` replicas confirming each write
    within ``redis_wait_timeout`` seconds (``BRIDGE_REDIS_WAIT``), its dedup records living
    ``retention`` seconds (``BRIDGE_RETENTION``; default the store's own), as SQLite keeps them
    until pruned after ``retention`` (docs/configuration.md). Raises ``ValueError`` otherwise."""
    if url.startswith("sqlite:///"):
        from bridge.store.sqlite.store import SqliteStore

        return SqliteStore(url[len("sqlite:///"):])
    if url.startswith(REDIS_SCHEMES):
        from bridge.store.redis.store import RedisStore

        if retention is None:
            return RedisStore(url, wait=redis_wait, wait_timeout=redis_wait_timeout)
        return RedisStore(url, wait=redis_wait, wait_timeout=redis_wait_timeout,
                          dedup_ttl=max(int(retention), 1))
    scheme = url.split(":", 1)[0]
    raise ValueError(f"BRIDGE_STORE: expected sqlite:///PATH or redis://..., got {scheme}:")


__all__ = ["PAGING_POLICY", "Claim", "EpisodeMark", "Item", "Notification", "Outcome", "Policy",
           "PolicyRow", "Store", "open_store"]
