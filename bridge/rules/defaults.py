"""What the rules file means where it says nothing, each written once (docs/rules.md).

A leaf of plain numbers: the rules model, the loaded rules and the notifications the plan
decides read them from here.
"""

#: A route's ``repeat_interval`` when it sets none (seconds; Alertmanager's default, 4 h).
DEFAULT_REPEAT_INTERVAL = 4 * 3600.0
#: Characters a rendered variable keeps unless the rules say otherwise (``max_var_len``).
DEFAULT_MAX_VAR_LEN = 20
#: Numbers one alert's ``mobiles_from`` may page per route unless the rules say otherwise.
DEFAULT_MAX_MOBILES_FROM = 10
