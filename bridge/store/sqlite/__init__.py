"""The SQLite store (:mod:`.store`) and its record step (:mod:`.record`)."""
