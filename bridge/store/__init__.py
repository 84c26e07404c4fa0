"""Store implementations behind :class:`bridge.store.base.Store`, and :func:`open_store`, the one
place that knows them all (``base`` imports no implementation)."""

from bridge.plan import EpisodeMark, Notification
from bridge.store.base import PAGING_POLICY, Claim, Item, Outcome, Policy, PolicyRow, Store


def open_store(url: str) -> Store:
    """Open the store a ``BRIDGE_STORE`` URL names: ``sqlite:///PATH`` or
    ``redis://[:password@]host:port/db`` / ``rediss://`` / ``unix://``. Raises ``ValueError``
    otherwise."""
    if url.startswith("sqlite:///"):
        from bridge.store.sqlite import SqliteStore

        return SqliteStore(url[len("sqlite:///"):])
    if url.startswith(("redis://", "rediss://", "unix://")):
        from bridge.store.redis import RedisStore

        return RedisStore(url)
    scheme = url.split(":", 1)[0]
    raise ValueError(f"BRIDGE_STORE: expected sqlite:///PATH or redis://..., got {scheme}:")


__all__ = ["PAGING_POLICY", "Claim", "EpisodeMark", "Item", "Notification", "Outcome", "Policy",
           "PolicyRow", "Store", "open_store"]
