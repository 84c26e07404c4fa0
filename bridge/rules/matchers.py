"""Alertmanager label matchers: ``name="v"``, ``name!="v"``, ``name=~"re"``, ``name!~"re"``.

Alertmanager matcher semantics (prometheus/alertmanager ``pkg/labels/matcher.go`` and the
classic parser in ``pkg/labels/parse.go``; ``docs/configuration.md`` "Label matchers"):

- A matcher is three tokens: a label name, an operator and a value. Whitespace around each
  token is ignored.
- The value may be double-quoted or bare. Inside it OpenMetrics escapes apply: ``\\"`` is a
  double quote, ``\\\\`` a backslash and ``\\n`` a line feed; a backslash before any other
  character (or at the very end) is a literal backslash. An unescaped ``"`` may appear only as
  the first and last character. A bare value must not be empty: write ``name=""`` to match an
  empty (or missing) label.
- A label missing from the alert matches as the empty string, so ``team=""`` holds for an alert
  without ``team`` and ``team!~".+"`` too.
- Regular expressions are anchored at both ends (Alertmanager compiles ``^(?:re)$``).

Differences from Go's RE2 that remain (Python's :mod:`re` is used): ``\\p{...}`` Unicode
classes are not supported (the regex is refused at load); look-arounds and back-references,
which RE2 refuses, are accepted. ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII-only as in RE2,
so ``\\w`` does not match Chinese characters; ``(?i)`` folds ASCII letters only. A leading
global flag group such as ``(?i)`` is honoured for the whole regex as in Go.

This module is pure: no I/O, no environment, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

__all__ = ["MatchOp", "Matcher", "matches_all", "parse_matcher", "parse_matchers"]

MatchOp = Literal["=", "!=", "=~", "!~"]
"""The four Alertmanager match operators."""

_OPS: frozenset[str] = frozenset(get_args(MatchOp))
_OP_BY_TEXT: dict[str, MatchOp] = {"=": "=", "!=": "!=", "=~": "=~", "!~": "!~"}
_REGEX_OPS: frozenset[str] = frozenset({"=~", "!~"})

# Classic Prometheus label names (docs/configuration.md, ``<labelname>``).
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# Go's ``\s`` in the classic parser: ASCII whitespace only.
_WS = " \t\n\r\f"

# name, operator, value. The name is the shortest prefix followed by an operator, so the first
# operator in the text wins; ``=~`` is tried before ``=`` so that ``a=~b`` is a regex matcher.
_MATCHER_RE = re.compile(
    r"(?P<name>.*?)[ \t\n\r\f]*(?P<op>=~|!=|!~|=)[ \t\n\r\f]*(?P<value>.*)",
    re.DOTALL,
)

# A global flag group at the very start of a regex, e.g. ``(?i)``; Go allows it anywhere, Python
# only at the start of the whole pattern, so it is hoisted in front of the anchoring group.
_LEADING_FLAGS_RE = re.compile(r"\(\?([ims]+)\)")


def _compile_anchored(value: str) -> re.Pattern[str]:
    """Compile ``value`` so that it must match a whole label value.

    Raises ``ValueError("invalid regex: ...")`` when the pattern does not compile.
    """
    flags = ""
    body = value
    leading = _LEADING_FLAGS_RE.match(value)
    if leading is not None:
        flags = f"(?{leading.group(1)})"
        body = value[leading.end() :]
    try:
        # fullmatch() is the anchoring: unlike ``$``, it does not match before a final newline.
        return re.compile(f"{flags}(?:{body})", re.ASCII)
    except re.error as exc:
        raise ValueError(f"invalid regex: {value!r}: {exc}") from None


def _escape_value(value: str) -> str:
    """OpenMetrics-escape a value for display inside double quotes."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass(frozen=True)
class Matcher:
    """One Alertmanager label matcher.

    Shape: ``name`` is a classic label name (``[a-zA-Z_][a-zA-Z0-9_]*``), ``op`` one of
    ``=``, ``!=``, ``=~``, ``!~`` and ``value`` the unescaped value (a regex for ``=~`` and
    ``!~``). Regexes are compiled once, at construction, and anchored at both ends.

    Raises ``ValueError`` at construction for an invalid label name ("invalid label name ..."),
    an unknown operator or a regex that does not compile ("invalid regex: ...").

    Source: Alertmanager matcher semantics (``pkg/labels/matcher.go``).
    """

    name: str
    op: MatchOp
    value: str
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if not _LABEL_NAME_RE.fullmatch(self.name):
            raise ValueError(f"invalid label name {self.name!r}: must match [a-zA-Z_][a-zA-Z0-9_]*")
        if self.op not in _OPS:
            raise ValueError(f"invalid operator {self.op!r}: expected one of =, !=, =~, !~")
        if self.op in _REGEX_OPS:
            object.__setattr__(self, "_regex", _compile_anchored(self.value))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Return whether the label set satisfies this matcher.

        ``labels`` maps label names to values; a missing label matches as ``""``. For ``=~`` and
        ``!~`` the whole value must (or must not) match the regex.
        """
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        """Render as Alertmanager does, e.g. ``severity=~"critical|warning"``."""
        return f'{self.name}{self.op}"{_escape_value(self.value)}"'


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher written in Alertmanager's syntax.

    Accepts ``name="v"``, ``name!="v"``, ``name=~"re"``, ``name!~"re"``, bare values
    (``severity=critical``), whitespace around the tokens (``severity = "critical"``), escapes
    in the value (``\\"``, ``\\\\``, ``\\n``) and any UTF-8 in the value (``team="数据库"``).

    Returns a :class:`Matcher` whose ``value`` is unescaped. Raises ``ValueError`` whose message
    starts with "expected name, operator and value" (no operator, no name, or a bare empty
    value), "invalid label name", "unescaped double quote" or "invalid regex: ...".

    Source: Alertmanager matcher semantics (classic ``ParseMatcher`` in
    ``pkg/labels/parse.go``); braces and comma-separated lists are :func:`parse_matchers`.
    """
    if not isinstance(text, str):
        raise ValueError(
            f"expected name, operator and value as a string like 'name=\"value\"', "
            f"got {type(text).__name__}"
        )
    stripped = text.strip(_WS)
    parts = _MATCHER_RE.fullmatch(stripped)
    if parts is None or not parts.group("name"):
        raise ValueError(
            f"expected name, operator and value, e.g. 'severity=\"critical\"': got {text!r}"
        )
    name, op, raw = parts.group("name"), _OP_BY_TEXT[parts.group("op")], parts.group("value")
    if not _LABEL_NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid label name {name!r} in {text!r}: must match [a-zA-Z_][a-zA-Z0-9_]*"
        )
    if raw == "":
        raise ValueError(
            f"expected name, operator and value: {text!r} has no value "
            f'(write {name}{op}"" to match an empty or missing label)'
        )
    value = _unescape(raw)
    return Matcher(name=name, op=op, value=value)


def _unescape(raw: str) -> str:
    """Unescape a matcher value token (quoted or bare) as Alertmanager's classic parser does."""
    quoted = raw.startswith('"')
    body = raw[1:] if quoted else raw
    expect_closing_quote = quoted
    out: list[str] = []
    escaped = False
    last = len(body) - 1
    for i, ch in enumerate(body):
        if escaped:
            escaped = False
            if ch == "n":
                out.append("\n")
            elif ch in ('"', "\\"):
                out.append(ch)
            else:  # a spurious escape: the backslash is literal
                out.append("\\")
                out.append(ch)
            continue
        if ch == "\\":
            if i < last:
                escaped = True
            else:  # a backslash as the last character is literal
                out.append("\\")
        elif ch == '"':
            if not expect_closing_quote or i < last:
                raise ValueError(
                    f'unescaped double quote in value {raw!r} (write \\" for a literal quote)'
                )
            expect_closing_quote = False
        else:
            out.append(ch)
    if expect_closing_quote:
        raise ValueError(f"unescaped double quote in value {raw!r}: the closing quote is missing")
    return "".join(out)


def parse_matchers(text: str) -> list[Matcher]:
    """Parse a comma-separated list of matchers, optionally in braces.

    Accepts e.g. ``{foo="bar", dings!="bums", }``, ``foo=bar,dings!=bums`` and
    ``{quote="She said: \\"Hi, all!\\""}``: commas inside double quotes do not separate, a
    single trailing comma is allowed, and ``{`` / ``}`` are optional. An empty input (or
    ``{}``) is an empty list.

    Returns the matchers in order. Raises ``ValueError`` as :func:`parse_matcher` does for the
    first bad one.

    Source: Alertmanager matcher semantics (classic ``ParseMatchers`` in
    ``pkg/labels/parse.go``).
    """
    body = text.strip(_WS)
    body = body.removeprefix("{").removesuffix("}")
    tokens: list[str] = []
    current: list[str] = []
    inside_quotes = False
    escaped = False
    for ch in body:
        if ch == "," and not inside_quotes:
            tokens.append("".join(current).strip(_WS))
            current = []
            continue
        if ch == '"':
            if escaped:
                escaped = False
            else:
                inside_quotes = not inside_quotes
        elif ch == "\\":
            escaped = not escaped
        else:
            escaped = False
        current.append(ch)
    tail = "".join(current).strip(_WS)
    if tail:
        tokens.append(tail)
    return [parse_matcher(token) for token in tokens]


def matches_all(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    """Return whether every matcher holds for ``labels`` (true for an empty sequence).

    Source: Alertmanager matcher semantics (``labels.Matchers.Matches``): all matchers of a
    route must hold.
    """
    return all(m.matches(labels) for m in matchers)
