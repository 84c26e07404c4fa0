"""The rules file: models (:mod:`.model`) and loading/merging/checking (:mod:`.load`)."""

from bridge.rules.load import RuleSet, load_rules

__all__ = ["RuleSet", "load_rules"]
