"""Alertmanager matcher semantics: parsing and matching.

Cases marked "AM parse_test" are ported from prometheus/alertmanager ``pkg/labels/parse_test.go``;
"AM docs" from ``docs/configuration.md`` ("Label matchers").
"""

from __future__ import annotations

import pytest

from bridge.rules.matchers import Matcher, matches_all, parse_matcher, parse_matchers

# --- parse_matcher: valid input -> (name, op, value) ------------------------------------------

PARSE_OK = [
    pytest.param('foo="bar"', ("foo", "=", "bar"), id="AM-equal"),
    pytest.param('foo=~"bar.*"', ("foo", "=~", "bar.*"), id="AM-regex"),
    pytest.param('foo!="bar"', ("foo", "!=", "bar"), id="AM-not-equal"),
    pytest.param('foo!~"bar.*"', ("foo", "!~", "bar.*"), id="AM-not-regex"),
    pytest.param('foo=""', ("foo", "=", ""), id="AM-quoted-empty-value"),
    pytest.param('foo="bar,quux"', ("foo", "=", "bar,quux"), id="AM-comma-inside-quotes"),
    pytest.param('instance=~"some-api.*"', ("instance", "=~", "some-api.*"), id="AM-instance"),
    pytest.param('foo = "bar"', ("foo", "=", "bar"), id="AM-spaces-around-equal"),
    pytest.param('dings != "bums"', ("dings", "!=", "bums"), id="AM-spaces-around-not-equal"),
    pytest.param("foo=bar", ("foo", "=", "bar"), id="AM-unquoted"),
    pytest.param("dings!=bums", ("dings", "!=", "bums"), id="AM-unquoted-not-equal"),
    pytest.param(
        r'quote="She said: \"Hi, ladies! That' + "'s gender-neutral…" + r'\""',
        ("quote", "=", 'She said: "Hi, ladies! That\'s gender-neutral…"'),
        id="AM-escaped-quotes-and-utf8",
    ),
    pytest.param('statuscode=~"5.."', ("statuscode", "=~", "5.."), id="AM-statuscode"),
    pytest.param("tricky=~~~", ("tricky", "=~", "~~"), id="AM-tricky-tildes"),
    pytest.param(r"trickier==\\=\=\"", ("trickier", "=", '=\\=\\="'), id="AM-trickier-escapes"),
    pytest.param(r'contains_quote != "\""', ("contains_quote", "!=", '"'), id="AM-only-a-quote"),
    pytest.param(
        'contains_comma !~ "foo,bar"', ("contains_comma", "!~", "foo,bar"), id="AM-comma-regex"
    ),
    pytest.param("alertname = Watchdog", ("alertname", "=", "Watchdog"), id="AM-docs-unquoted"),
    pytest.param(
        'severity =~ "warning|critical"',
        ("severity", "=~", "warning|critical"),
        id="AM-docs-regex-spaced",
    ),
    pytest.param("severity=critical", ("severity", "=", "critical"), id="unquoted-severity"),
    pytest.param('  team="db"\t', ("team", "=", "db"), id="outer-whitespace"),
    pytest.param('foo=" a b "', ("foo", "=", " a b "), id="spaces-inside-quotes-kept"),
    pytest.param('team="数据库"', ("team", "=", "数据库"), id="utf8-chinese-quoted"),
    pytest.param("alertname=磁盘空间不足", ("alertname", "=", "磁盘空间不足"), id="utf8-unquoted"),
    pytest.param('alertname=~"磁盘.*"', ("alertname", "=~", "磁盘.*"), id="utf8-regex"),
    pytest.param(r'msg="a\nb"', ("msg", "=", "a\nb"), id="escaped-newline"),
    pytest.param(r'path="C:\\tmp"', ("path", "=", "C:\\tmp"), id="escaped-backslash"),
    pytest.param(r'code=~"\d+"', ("code", "=~", "\\d+"), id="spurious-escape-is-literal"),
    pytest.param("x=a\\", ("x", "=", "a\\"), id="trailing-backslash-literal"),
    pytest.param('msg="a\nb"', ("msg", "=", "a\nb"), id="literal-newline-tolerated"),
    pytest.param("_private=x", ("_private", "=", "x"), id="underscore-name"),
    pytest.param('foo="a=b"', ("foo", "=", "a=b"), id="operator-inside-value"),
    pytest.param("foo!=!=", ("foo", "!=", "!="), id="first-operator-wins"),
    pytest.param("severity==", ("severity", "=", "="), id="double-equal-value-is-equals-sign"),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_OK)
def test_parse_matcher_valid(text: str, expected: tuple[str, str, str]) -> None:
    m = parse_matcher(text)
    assert (m.name, m.op, m.value) == expected


# --- parse_matcher: invalid input -> exact message --------------------------------------------

PARSE_ERRORS = [
    pytest.param(
        'job="value',
        "unescaped double quote in value '\"value': the closing quote is missing",
        id="AM-missing-closing-quote",
    ),
    pytest.param(
        'job=value"',
        "unescaped double quote in value 'value\"' (write \\\" for a literal quote)",
        id="AM-quote-at-end-of-bare-value",
    ),
    pytest.param(
        r'trickier==\\=\=\""',
        'unescaped double quote in value \'=\\\\\\\\=\\\\=\\\\""\' (write \\" for a literal quote)',
        id="AM-trickier-extra-quote",
    ),
    pytest.param(
        'contains_unescaped_quote = foo"bar',
        "unescaped double quote in value 'foo\"bar' (write \\\" for a literal quote)",
        id="AM-quote-inside-bare-value",
    ),
    pytest.param(
        'job="a" x',
        'unescaped double quote in value \'"a" x\' (write \\" for a literal quote)',
        id="text-after-closing-quote",
    ),
    pytest.param(
        'invalid-name = "valid label"',
        "invalid label name 'invalid-name' in 'invalid-name = \"valid label\"': "
        "must match [a-zA-Z_][a-zA-Z0-9_]*",
        id="AM-invalid-name",
    ),
    pytest.param(
        '"foo=\\"bar\\""',
        'invalid label name \'"foo\' in \'"foo=\\\\"bar\\\\""\': must match [a-zA-Z_][a-zA-Z0-9_]*',
        id="AM-double-escaped-whole-matcher",
    ),
    pytest.param(
        '"foo="bar""',
        'invalid label name \'"foo\' in \'"foo="bar""\': must match [a-zA-Z_][a-zA-Z0-9_]*',
        id="AM-quoted-whole-matcher",
    ),
    pytest.param(
        '{foo="bar"}',
        "invalid label name '{foo' in '{foo=\"bar\"}': must match [a-zA-Z_][a-zA-Z0-9_]*",
        id="braces-need-parse_matchers",
    ),
    pytest.param(
        '1abc="x"',
        "invalid label name '1abc' in '1abc=\"x\"': must match [a-zA-Z_][a-zA-Z0-9_]*",
        id="name-starts-with-digit",
    ),
    pytest.param(
        'foo.bar="x"',
        "invalid label name 'foo.bar' in 'foo.bar=\"x\"': must match [a-zA-Z_][a-zA-Z0-9_]*",
        id="name-with-dot",
    ),
    pytest.param(
        '服务="x"',
        "invalid label name '服务' in '服务=\"x\"': must match [a-zA-Z_][a-zA-Z0-9_]*",
        id="utf8-name-refused",
    ),
    pytest.param(
        "job=",
        "expected name, operator and value: 'job=' has no value "
        '(write job="" to match an empty or missing label)',
        id="AM-bare-empty-value",
    ),
    pytest.param(
        "severity",
        "expected name, operator and value, e.g. 'severity=\"critical\"': got 'severity'",
        id="no-operator",
    ),
    pytest.param(
        "=critical",
        "expected name, operator and value, e.g. 'severity=\"critical\"': got '=critical'",
        id="no-name",
    ),
    pytest.param(
        "",
        "expected name, operator and value, e.g. 'severity=\"critical\"': got ''",
        id="empty",
    ),
]


@pytest.mark.parametrize(("text", "message"), PARSE_ERRORS)
def test_parse_matcher_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_matcher(text)
    assert str(exc.value) == message


REGEX_ERRORS = [
    pytest.param('foo=~"invalid[regexp"', "invalid regex: 'invalid[regexp': ", id="AM-bad-regex"),
    pytest.param('foo!~"(a"', "invalid regex: '(a': ", id="unbalanced-paren"),
    pytest.param(
        r'name=~"\p{Han}+"', "invalid regex: '\\\\p{Han}+': ", id="RE2-unicode-class-unsupported"
    ),
    pytest.param('foo=~"a(?i)b"', "invalid regex: 'a(?i)b': ", id="flags-not-at-start"),
]


@pytest.mark.parametrize(("text", "prefix"), REGEX_ERRORS)
def test_parse_matcher_invalid_regex(text: str, prefix: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_matcher(text)
    assert str(exc.value).startswith(prefix)


# --- matching --------------------------------------------------------------------------------

GRAFANA_DOC_LABELS = {"foo": "bar", "baz": "qux", "id": "12"}

MATCH_CASES = [
    # Missing label matches as the empty string.
    pytest.param('team=""', {}, True, id="missing-equals-empty"),
    pytest.param('team!=""', {}, False, id="missing-not-equal-empty"),
    pytest.param('team="db"', {}, False, id="missing-equal-value"),
    pytest.param('team!="db"', {}, True, id="missing-not-equal-value"),
    pytest.param('team=~".*"', {}, True, id="missing-regex-any"),
    pytest.param('team=~".+"', {}, False, id="missing-regex-nonempty"),
    pytest.param('team!~".+"', {}, True, id="missing-not-regex-nonempty"),
    pytest.param('team=""', {"team": ""}, True, id="present-empty-equals-empty"),
    # Equality is exact.
    pytest.param('severity="critical"', {"severity": "critical"}, True, id="equal"),
    pytest.param('severity="critical"', {"severity": "Critical"}, False, id="equal-case"),
    pytest.param('severity!="critical"', {"severity": "warning"}, True, id="not-equal"),
    pytest.param("foo=bar", GRAFANA_DOC_LABELS, True, id="grafana-docs-foo=bar"),
    pytest.param("foo!=bar", GRAFANA_DOC_LABELS, False, id="grafana-docs-foo!=bar"),
    pytest.param("id=~[0-9]+", GRAFANA_DOC_LABELS, True, id="grafana-docs-id-regex"),
    pytest.param("baz!~[0-9]+", GRAFANA_DOC_LABELS, True, id="grafana-docs-not-regex"),
    # Regexes are anchored at both ends.
    pytest.param('severity=~"crit"', {"severity": "critical"}, False, id="anchored-prefix"),
    pytest.param('severity=~"tical"', {"severity": "critical"}, False, id="anchored-suffix"),
    pytest.param('severity=~"crit.*"', {"severity": "critical"}, True, id="explicit-wildcard"),
    pytest.param('team=~"db|mysql"', {"team": "db"}, True, id="alternation-first"),
    pytest.param('team=~"db|mysql"', {"team": "mysql"}, True, id="alternation-second"),
    pytest.param('team=~"db|mysql"', {"team": "mysqldb"}, False, id="alternation-anchored"),
    pytest.param('team=~"db|mysql"', {"team": "xdb"}, False, id="alternation-anchored-left"),
    pytest.param('team!~"db|mysql"', {"team": "mysqldb"}, True, id="not-regex-anchored"),
    pytest.param('foo=~"bar"', {"foo": "bar\n"}, False, id="no-match-before-final-newline"),
    pytest.param('msg=~".*"', {"msg": "a\nb"}, False, id="dot-excludes-newline"),
    pytest.param('msg=~"(?s).*"', {"msg": "a\nb"}, True, id="dotall-flag"),
    pytest.param('statuscode=~"5.."', {"statuscode": "503"}, True, id="AM-statuscode-503"),
    pytest.param('statuscode=~"5.."', {"statuscode": "5030"}, False, id="AM-statuscode-5030"),
    pytest.param('severity=~"(?i)critical"', {"severity": "CRITICAL"}, True, id="case-flag"),
    pytest.param('severity=~"(?i)crit|warn"', {"severity": "WARN"}, True, id="case-flag-alt"),
    pytest.param('code=~"\\d+"', {"code": "503"}, True, id="backslash-d"),
    # UTF-8 values.
    pytest.param('alertname="磁盘空间不足"', {"alertname": "磁盘空间不足"}, True, id="utf8-equal"),
    pytest.param('alertname=~"磁盘.*"', {"alertname": "磁盘空间不足"}, True, id="utf8-regex"),
    pytest.param('alertname=~"\\w+"', {"alertname": "磁盘"}, False, id="RE2-w-is-ascii"),
    pytest.param(
        r'quote="She said: \"Hi!\""', {"quote": 'She said: "Hi!"'}, True, id="escaped-quote"
    ),
]


@pytest.mark.parametrize(("text", "labels", "expected"), MATCH_CASES)
def test_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(text).matches(labels) is expected


WATCHDOG = [parse_matcher('alertname="Watchdog"'), parse_matcher('severity=~"warning|critical"')]

MATCHES_ALL_CASES = [
    pytest.param(WATCHDOG, {"alertname": "Watchdog", "severity": "critical"}, True, id="AM-all"),
    pytest.param(WATCHDOG, {"alertname": "Watchdog", "severity": "none"}, False, id="AM-one-fails"),
    pytest.param(WATCHDOG, {"severity": "critical"}, False, id="missing-label"),
    pytest.param([], {"alertname": "x"}, True, id="no-matchers"),
]


@pytest.mark.parametrize(("matchers", "labels", "expected"), MATCHES_ALL_CASES)
def test_matches_all(matchers: list[Matcher], labels: dict[str, str], expected: bool) -> None:
    assert matches_all(matchers, labels) is expected


# --- Matcher construction and rendering ---------------------------------------------------------

CONSTRUCT_ERRORS = [
    pytest.param("1x", "=", "v", "invalid label name '1x'", id="bad-name"),
    pytest.param("", "=", "v", "invalid label name ''", id="empty-name"),
    pytest.param("x", "==", "v", "invalid operator '=='", id="bad-operator"),
    pytest.param("x", "=~", "[", "invalid regex: '['", id="regex-compiled-at-construction"),
    pytest.param("x", "!~", "(", "invalid regex: '('", id="not-regex-compiled-at-construction"),
]


@pytest.mark.parametrize(("name", "op", "value", "prefix"), CONSTRUCT_ERRORS)
def test_matcher_construction_errors(name: str, op: str, value: str, prefix: str) -> None:
    with pytest.raises(ValueError) as exc:
        Matcher(name, op, value)  # type: ignore[arg-type]
    assert str(exc.value).startswith(prefix)


def test_matcher_equality_ignores_compiled_regex() -> None:
    assert parse_matcher('a=~"x|y"') == Matcher("a", "=~", "x|y")
    assert hash(parse_matcher('a=~"x|y"')) == hash(Matcher("a", "=~", "x|y"))


RENDER_CASES = [
    pytest.param(Matcher("foo", "=", "bar"), 'foo="bar"', id="plain"),
    pytest.param(Matcher("q", "!=", 'a"b'), 'q!="a\\"b"', id="quote"),
    pytest.param(Matcher("p", "=~", "a\\d"), 'p=~"a\\\\d"', id="backslash"),
    pytest.param(Matcher("m", "!~", "a\nb"), 'm!~"a\\nb"', id="newline"),
    pytest.param(Matcher("t", "=", "数据库"), 't="数据库"', id="utf8"),
]


@pytest.mark.parametrize(("matcher", "text"), RENDER_CASES)
def test_str_renders_and_round_trips(matcher: Matcher, text: str) -> None:
    assert str(matcher) == text
    assert parse_matcher(text) == matcher


# --- parse_matchers (composed lists) --------------------------------------------------------------

PARSE_LIST_CASES = [
    pytest.param('{foo="bar"}', [("foo", "=", "bar")], id="AM-braces-one"),
    pytest.param(
        '{foo="bar", baz!="quux"}',
        [("foo", "=", "bar"), ("baz", "!=", "quux")],
        id="AM-braces-two",
    ),
    pytest.param(
        '{foo="bar",baz!~".*quux", derp="wat"}',
        [("foo", "=", "bar"), ("baz", "!~", ".*quux"), ("derp", "=", "wat")],
        id="AM-braces-three",
    ),
    pytest.param(
        '{foo="bar,quux", job="job1"}',
        [("foo", "=", "bar,quux"), ("job", "=", "job1")],
        id="AM-comma-in-quotes",
    ),
    pytest.param(
        '{foo = "bar", dings != "bums", }',
        [("foo", "=", "bar"), ("dings", "!=", "bums")],
        id="AM-trailing-comma",
    ),
    pytest.param(
        "foo=bar,dings!=bums", [("foo", "=", "bar"), ("dings", "!=", "bums")], id="AM-no-braces"
    ),
    pytest.param(
        r'{quote="She said: \"Hi, ladies!\""}',
        [("quote", "=", 'She said: "Hi, ladies!"')],
        id="AM-escaped-quote-with-comma",
    ),
    pytest.param(
        r'contains_quote != "\"" , contains_comma !~ "foo,bar" , ',
        [("contains_quote", "!=", '"'), ("contains_comma", "!~", "foo,bar")],
        id="AM-quote-and-comma",
    ),
    pytest.param(
        '{\n   alertname = "Watchdog",\n   severity =~ "warning|critical",\n}',
        [("alertname", "=", "Watchdog"), ("severity", "=~", "warning|critical")],
        id="AM-docs-multiline",
    ),
    pytest.param("{}", [], id="empty-braces"),
    pytest.param("", [], id="empty"),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_LIST_CASES)
def test_parse_matchers(text: str, expected: list[tuple[str, str, str]]) -> None:
    assert [(m.name, m.op, m.value) for m in parse_matchers(text)] == expected


PARSE_LIST_ERRORS = [
    pytest.param(
        "a=b,,c=d",
        "expected name, operator and value, e.g. 'severity=\"critical\"': got ''",
        id="empty-item",
    ),
    pytest.param(
        '{foo="bar", 2x="y"}',
        "invalid label name '2x' in '2x=\"y\"': must match [a-zA-Z_][a-zA-Z0-9_]*",
        id="bad-second-item",
    ),
]


@pytest.mark.parametrize(("text", "message"), PARSE_LIST_ERRORS)
def test_parse_matchers_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_matchers(text)
    assert str(exc.value) == message
