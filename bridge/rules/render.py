"""Rendering SMS template variables from an alert, in a Jinja2 sandbox.

Each variable of a rules-file template is a Jinja2 template compiled once when the rules load.
Alert text only ever enters as context data, so ``{{ 7*7 }}`` inside an annotation stays those
nine characters. Rendered values are folded (control characters and newlines -> one space) and
cut to ``max_var_len`` characters, the last of which is then ``…``.
"""

from __future__ import annotations

import logging
import operator
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import ChainableUndefined, TemplateSyntaxError, nodes
from jinja2.environment import Template
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bridge.alert import Alert, Batch
from bridge.config import Settings

log = logging.getLogger("bridge.render")  # stable log name (not the module path)

#: What the plan renders for ``{{ ack_code }}``: exactly as long as an ack code
#: (:data:`bridge.decide.episodes.CODE_LEN` characters), two of them from Unicode's private use
#: area (never folded, never in a real alert), so cutting treats it like the code; the record
#: step replaces it with the code stored for the (episode, mobile), inside its atomic step.
ACK_PLACEHOLDER = "\ue000ack_code__\ue001"
ELLIPSIS = "…"
#: Runs of C0/C1 control characters (newline, tab, CR, ...) and Unicode line separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
#: Invisible characters that can hide or reorder text on a phone: zero-width spaces and
#: joiners' neighbours, bidirectional embeddings/overrides/isolates, the BOM.
_INVISIBLE = re.compile(
    r"[\u00ad\u061c\u180e\u200b\u200c\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
#: Pictographs an emoji ZWJ sequence is made of (with a variation selector or skin tone).
_EMOJI = "\u00a9\u00ae\u203c-\u2bff\u3030\u303d\u3297\u3299\U0001F000-\U0001FAFF"
#: A zero-width joiner outside an emoji sequence (it stays inside one: 👨‍👩‍👧 is one glyph).
_STRAY_ZWJ = re.compile(rf"(?<![{_EMOJI}\ufe0f])\u200d|\u200d(?![{_EMOJI}])")
RENDER_ERROR = "?"
#: The private-use characters that open and close :data:`ACK_PLACEHOLDER`.
_MARK_OPEN, _MARK_CLOSE = ACK_PLACEHOLDER[0], ACK_PLACEHOLDER[-1]
#: Any character one of the three patterns above may change.
_ODD = re.compile("|".join((_CONTROL.pattern, _INVISIBLE.pattern, "\u200d")))


def fold_and_cut(value: str, max_len: int) -> str:
    """Drop invisible characters (zero-width, bidi overrides; a zero-width joiner only outside
    an emoji sequence), fold each run of control
    characters to one space, strip, and cut to ``max_len`` characters; a cut value ends with
    ``…`` (the ``…`` counts in ``max_len``). The ack code (:data:`ACK_PLACEHOLDER`) is never
    cut: the text around it is (what follows it first), and it stays whole even when it alone
    is longer than ``max_len``."""
    if _ODD.search(value) is not None:  # (most values have none: one scan, not three)
        value = _CONTROL.sub(" ", _STRAY_ZWJ.sub("", _INVISIBLE.sub("", value)))
    value = value.strip()
    if len(value) <= max_len:
        return value
    if ACK_PLACEHOLDER in value:
        return _cut_around_code(value, max_len)
    return value[: max_len - 1].removesuffix("\u200d") + ELLIPSIS


def _cut_around_code(value: str, max_len: int) -> str:
    """Cut ``value`` to ``max_len`` keeping the first ack code whole (see fold_and_cut)."""
    head, _, tail = value.partition(ACK_PLACEHOLDER)
    room = max(max_len - len(ACK_PLACEHOLDER), 0)
    if len(head) > room:
        head = head[: room - 1] + ELLIPSIS if room >= 1 else ""
        return head + ACK_PLACEHOLDER
    room -= len(head)
    if len(tail) > room:
        tail = tail[: room - 1] + ELLIPSIS if room >= 1 else ""
    return head + ACK_PLACEHOLDER + tail


def _guard_code(name: str, value: str) -> str:
    """``value`` unless it carries a piece of :data:`ACK_PLACEHOLDER` that is not the whole
    placeholder (something was done to ``ack_code``, which the rules check refuses, or an
    alert carried the marker characters): then :data:`RENDER_ERROR`, logged, so that no SMS
    carries the marker where the code belongs (docs/oncall.md, "Ack codes")."""
    rest = value.replace(ACK_PLACEHOLDER, "")
    if _MARK_OPEN not in rest and _MARK_CLOSE not in rest:
        return value
    log.warning("variable %s carries a changed ack code (a filter, slice, method or operator on "
                "ack_code?), rendered as %s", name, RENDER_ERROR)
    return RENDER_ERROR


def _localtime(value: Any, fmt: str, tz: str) -> str:
    """Jinja2 filter ``localtime(fmt)``: an aware datetime (or UNIX seconds) shown in
    ``BRIDGE_TZ``; anything else (e.g. a missing time) renders as ``-``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = datetime.fromtimestamp(value, ZoneInfo("UTC"))
    if not isinstance(value, datetime):
        return "-"
    return value.astimezone(ZoneInfo(tz)).strftime(fmt)


# -- what one variable may cost -----------------------------------------------------------------

#: A variable over its budget renders as this (and is logged).
OVER_BUDGET = "[over budget]"
#: Longest string or list one operation may produce, and longest output of one variable.
MAX_RESULT = 10_000
#: Largest integer (in bits) ``*`` or ``**`` may produce.
MAX_INT_BITS = 4096
#: Items ``range()`` may give in one variable, over all its calls (nested loops included).
MAX_RANGE_ITEMS = 10_000
#: Sandbox operations (attribute and item reads, calls, operators) of one variable, and its
#: wall-clock time in seconds.
MAX_OPS = 100_000
MAX_SECONDS = 1.0
#: Filters and ``str`` methods whose int arguments size their result.
_SIZED = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "indent", "wordwrap",
                    "truncate", "format", "join"})
_PCT_WIDTH = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


class OverBudget(SecurityError):
    """Raised when a template variable would cost more than its budget (size, range, time)."""


class _Budget(threading.local):
    ops = 0
    range_items = 0
    deadline = float("inf")

    def start(self) -> None:
        self.ops, self.range_items = 0, 0
        self.deadline = time.monotonic() + MAX_SECONDS

    def tick(self) -> None:
        self.ops += 1
        if self.ops > MAX_OPS:
            raise OverBudget(f"more than {MAX_OPS} operations")
        if self.ops % 64 == 0 and time.monotonic() > self.deadline:
            raise OverBudget(f"took more than {MAX_SECONDS:g}s")


_budget = _Budget()


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


def _check_power(left: Any, right: Any) -> None:
    if _ints(left, right) and right > 0:
        bits = max(abs(left).bit_length(), 1) * right if abs(left) > 1 else 1
        if bits > MAX_INT_BITS:
            raise OverBudget(f"{left} ** {right} has about {bits} bits (at most {MAX_INT_BITS})")


def _check_product(left: Any, right: Any) -> None:
    if _ints(left, right) and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
        raise OverBudget(f"a product over {MAX_INT_BITS} bits")
    for seq, n in ((left, right), (right, left)):
        size = _size(seq)
        if size is not None and isinstance(n, int) and size * n > MAX_RESULT:
            raise OverBudget(f"repeating {size} items {n} times is {size * n} "
                             f"(at most {MAX_RESULT})")


def _check_sum(left: Any, right: Any) -> None:
    a, b = _size(left), _size(right)
    if a is not None and b is not None and a + b > MAX_RESULT:
        raise OverBudget(f"joining {a} and {b} items (at most {MAX_RESULT})")


def _check_format(left: Any, right: Any) -> None:
    if not isinstance(left, str):
        return
    for width, precision in _PCT_WIDTH.findall(left):
        for n in (width, precision):
            if n == "*" or (n and int(n) > MAX_RESULT):
                raise OverBudget(f"a %-format width or precision of {n} "
                                 f"(at most {MAX_RESULT})")


def _ints(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


#: The binary operators whose result can outgrow the budget, and the check of each.
_BINOP_CHECKS: dict[str, Callable[[Any, Any], None]] = {
    "**": _check_power, "*": _check_product, "+": _check_sum, "%": _check_format,
}


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Raise :class:`OverBudget` when ``left <operator> right`` would be too large (a string
    or list over :data:`MAX_RESULT`, an integer over :data:`MAX_INT_BITS` bits)."""
    check = _BINOP_CHECKS.get(operator)
    if check is not None:
        check(left, right)


def _check_sized(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    for n in (*args, *kwargs.values()):
        if isinstance(n, int) and not isinstance(n, bool) and abs(n) > MAX_RESULT:
            raise OverBudget(f"{name}({n}) (at most {MAX_RESULT})")
        if isinstance(n, str) and name == "format" and _PCT_WIDTH.search(n) is None and \
                re.search(r"\d{6,}", n):
            raise OverBudget(f"format width in {n[:40]!r}")


def _range(*args: int) -> range:
    """``range()`` in templates: at most :data:`MAX_RANGE_ITEMS` items per variable in all."""
    rng = range(*args)
    _budget.range_items += len(rng)
    if _budget.range_items > MAX_RANGE_ITEMS:
        raise OverBudget(f"range() gave more than {MAX_RANGE_ITEMS} items")
    return rng


class _BudgetEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with every operation counted and sized against the variable's budget."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _budget.tick()
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget.tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _budget.tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _budget.tick()
        name = getattr(__obj, "__name__", "")
        if name in _SIZED:
            _check_sized(name, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def _sized_filter(name: str, f: Any) -> Any:
    def checked(*args: Any, **kwargs: Any) -> Any:
        _budget.tick()
        _check_sized(name, args[1:], kwargs)
        return f(*args, **kwargs)

    for attr in ("jinja_pass_arg",):
        if hasattr(f, attr):
            setattr(checked, attr, getattr(f, attr))
    return checked


_BINOPS: dict[str, Any] = {"*": operator.mul, "**": operator.pow, "+": operator.add,
                           "-": operator.sub, "/": operator.truediv, "//": operator.floordiv,
                           "%": operator.mod}


class _NotConstant(Exception):
    pass


def _constant(node: nodes.Node) -> Any:
    """The value of a constant expression, checked against the budget as it is computed;
    raises :class:`_NotConstant` when it depends on the alert, :class:`OverBudget`."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.Neg | nodes.Pos):
        value = _constant(node.node)
        return -value if isinstance(node, nodes.Neg) else value
    if isinstance(node, nodes.BinExpr):
        left, right = _constant(node.left), _constant(node.right)
        check_binop(node.operator, left, right)
        try:
            return _BINOPS[node.operator](left, right)
        except Exception:
            raise _NotConstant from None
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and \
            node.node.name == "range" and not node.kwargs:
        args = [_constant(a) for a in node.args]
        if all(isinstance(a, int) for a in args):
            try:
                n = len(range(*args))
            except (TypeError, ValueError):
                raise _NotConstant from None
            if n > MAX_RANGE_ITEMS:
                raise OverBudget(f"range() of {n} items (at most {MAX_RANGE_ITEMS})")
            return range(*args)
    raise _NotConstant


def constant_cost_problems(env: ImmutableSandboxedEnvironment, source: str) -> list[str]:
    """Constant parts of a variable's expression that are over budget, each with its line
    (``bridge check``); constants are computed with the budget checked at every step."""
    problems = []
    for node in env.parse(source).find_all((nodes.BinExpr, nodes.Call, nodes.Filter)):
        try:
            if isinstance(node, nodes.Filter):
                args = [_constant(a) for a in node.args]
                if node.name in _SIZED:
                    _check_sized(node.name, tuple(args), {})
            else:
                _constant(node)
        except _NotConstant:
            continue
        except OverBudget as exc:
            problems.append(f"over budget (line {node.lineno}): {exc}")
    return list(dict.fromkeys(problems))


class Renderer:
    """Compiles and renders template variables. ``tz`` is ``BRIDGE_TZ`` for ``localtime``.

    Each variable renders within a budget (:data:`MAX_RESULT` characters per string, list or
    output, :data:`MAX_INT_BITS`-bit integers, :data:`MAX_RANGE_ITEMS` ``range()`` items,
    :data:`MAX_OPS` operations, :data:`MAX_SECONDS`); over it, it renders as
    :data:`OVER_BUDGET` and is logged. Constant expressions over budget are refused at compile
    time (``bridge check``).
    """

    def __init__(self, tz: str = Settings.tz) -> None:
        self.tz = tz
        self.env = _BudgetEnvironment(autoescape=False, undefined=ChainableUndefined)
        self.env.globals["range"] = _range
        for name in _SIZED & set(self.env.filters):
            self.env.filters[name] = _sized_filter(name, self.env.filters[name])

        def localtime(value: Any, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
            return _localtime(value, fmt, self.tz)

        self.env.filters["localtime"] = localtime

    def compile(self, source: str) -> Template:
        """Compile one variable's expression; raises ``ValueError`` with Jinja2's message."""
        try:
            problems = constant_cost_problems(self.env, source)
            if problems:
                raise ValueError("; ".join(problems))
            return self.env.from_string(source)
        except TemplateSyntaxError as exc:
            raise ValueError(f"template syntax error: {exc.message} (line {exc.lineno})") from None

    def render(self, templates: Mapping[str, Template], context: Mapping[str, Any],
               max_len: int) -> dict[str, str]:
        """Render every variable with ``context``; returns name -> folded, cut value.

        A variable whose rendering fails at run time (e.g. a filter given the wrong type)
        renders as ``?`` and is logged, so one odd alert never loses the page; one over its
        budget renders as :data:`OVER_BUDGET`, logged too.
        """
        out: dict[str, str] = {}
        # One context for all variables: Template.generate would copy the environment's
        # globals and the context into a fresh dict for every variable (a third of the render
        # time, bench/RESULTS.md); templates only read it, so a shared merged dict serves all.
        base = {**self.env.globals, **context}
        for name, tpl in templates.items():
            try:
                _budget.start()
                value = ""
                for chunk in tpl.root_render_func(tpl.new_context(base, shared=True)):
                    value += chunk
                    if len(value) > MAX_RESULT:
                        raise OverBudget(f"output over {MAX_RESULT} characters")
            except OverBudget as exc:
                log.warning("variable %s over its budget, rendered as %s: %s", name,
                            OVER_BUDGET, exc)
                value = OVER_BUDGET
            except MemoryError:
                log.warning("variable %s ran out of memory, rendered as %s", name, OVER_BUDGET)
                value = OVER_BUDGET
            except (TemplateError, SecurityError, TypeError, ValueError, ArithmeticError,
                    AttributeError, LookupError) as exc:
                log.warning("variable %s failed to render: %s", name, exc)
                value = RENDER_ERROR
            if _MARK_OPEN in value or _MARK_CLOSE in value:
                value = _guard_code(name, value)
            out[name] = fold_and_cut(value, max_len)
        return out


def template_context(*, labels: Mapping[str, str], annotations: Mapping[str, str],
                     status: str, fingerprint: str, starts_at: datetime | None,
                     ends_at: datetime | None = None, source: str = "", generator_url: str = "",
                     values: Mapping[str, Any] | None = None, receiver: str = "",
                     external_url: str = "", common_labels: Mapping[str, str] | None = None,
                     group_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What a template variable sees of an alert (docs/rules.md, Templates and their
    variables): every key, written once. The group fields (``receiver`` ... ``group_labels``)
    are empty where there is no webhook (an escalation step)."""
    return {
        "labels": dict(labels),
        "annotations": dict(annotations),
        "status": status,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "fingerprint": fingerprint,
        "source": source,
        "generator_url": generator_url,
        "values": dict(values or {}),
        "receiver": receiver,
        "external_url": external_url,
        "common_labels": dict(common_labels or {}),
        "group_labels": dict(group_labels or {}),
    }


def alert_context(alert: Alert, batch: Batch) -> dict[str, Any]:
    """:func:`template_context` of an alert of a webhook's ``batch``."""
    return template_context(
        labels=alert.labels, annotations=alert.annotations, status=alert.status,
        fingerprint=alert.fingerprint, starts_at=alert.starts_at, ends_at=alert.ends_at,
        source=alert.source, generator_url=alert.generator_url, values=alert.values,
        receiver=batch.receiver, external_url=batch.external_url,
        common_labels=batch.common_labels, group_labels=batch.group_labels)
