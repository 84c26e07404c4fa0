"""The Redis store (standalone, Sentinel, Cluster): :mod:`.store`."""
