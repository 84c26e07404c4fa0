"""Store implementations behind :class:`bridge.store.base.Store`."""

from bridge.store.base import Claim, Item, Notification, Outcome, Policy, Store, open_store

__all__ = ["Claim", "Item", "Notification", "Outcome", "Policy", "Store", "open_store"]
