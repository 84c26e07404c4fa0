"""SMS providers, one module each (:mod:`.juhe`)."""
