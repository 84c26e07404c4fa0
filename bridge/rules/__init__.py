"""The rules file: models (:mod:`.model`), loading/merging/checking (:mod:`.load`), matchers,
time intervals, schedules (who is on call at T) and the template sandbox (:mod:`.render`, its
templates compile when the rules load)."""
