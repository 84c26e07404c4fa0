"""The documentation stands on its own: every relative link in ``README.md`` and ``docs/*.md``
resolves to a file of the repository (and a ``#anchor`` to a heading of that page), nothing
points outside the repository, and every environment variable ``Settings`` reads is documented
in ``docs/configuration.md`` and listed in ``.env.example`` (docs/development.md, Tests).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from bridge import config

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
_CODE_SPAN = re.compile(r"`+[^`\n]*`+")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
#: An environment variable's name: upper-case words joined by ``_`` (``PORT``, ``JUHE_KEY``).
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and code spans (links there are examples)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to
    ``-`` (``"/readyz says 503"`` -> ``"readyz-says-503"``)."""
    text = re.sub(r"`|\*\*|__", "", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of ``page``, with GitHub's ``-1``, ``-2`` suffixes for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    """The link targets of ``page`` outside code (inline links and images)."""
    return _LINK.findall(_prose(page.read_text(encoding="utf-8")))


def broken_links(page: Path) -> list[str]:
    """What is wrong with ``page``'s relative links: a missing file, a target outside the
    repository, an anchor that names no heading."""
    problems = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_outside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    found = [w for w in ("SPEC", "JUHE.md", "EPISODES.md", "../shared") if w in text]
    assert found == []


def _names_in_source() -> set[str]:
    """Every upper-case string ``bridge/config.py`` writes (``e.get("JUHE_KEY")``,
    ``e["BRIDGE_STORE"]``, a name in a table of names and defaults, ``Field(validation_alias=
    "PORT")``), wherever it stands: a name kept in a tuple or a dict is read all the same.
    Single words need 4 letters or more (``PORT``; not ``UTC``)."""
    tree = ast.parse(Path(config.__file__).read_text(encoding="utf-8"))
    return {n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and _ENV_NAME.fullmatch(n.value) and ("_" in n.value or len(n.value) >= 4)}


def _names_of_fields() -> set[str]:
    """Where ``Settings`` is a pydantic-settings model: each field's variable, its alias(es)
    or ``env_prefix`` + its name in upper case (fields marked ``exclude`` are not read)."""
    fields = getattr(config.Settings, "model_fields", None)
    if not fields:
        return set()
    prefix = str(getattr(config.Settings, "model_config", {}).get("env_prefix") or "")
    names: set[str] = set()
    for name, field in fields.items():
        if getattr(field, "exclude", False):
            continue
        aliases = []
        for alias in (getattr(field, "validation_alias", None), getattr(field, "alias", None)):
            if isinstance(alias, str):
                aliases.append(alias)
            for choice in getattr(alias, "choices", ()):
                aliases.append(choice if isinstance(choice, str) else str(choice.path[0]))
        names.update(a.upper() for a in aliases)
        if not aliases:
            names.add((prefix + name).upper())
    return names


def settings_variables() -> set[str]:
    """Every environment variable the settings read."""
    return _names_in_source() | _names_of_fields()


#: Variables the finder must see, among them the providers' (read from a table once, where a
#: finder that looked only at call arguments missed them).
KNOWN = {"JUHE_KEY", "BRIDGE_STORE", "REDIS_URL", "PORT", "WEB_CONCURRENCY",
         "ALIYUN_ACCESS_KEY_ID", "ALIYUN_ACCESS_KEY_SECRET", "ALIYUN_SMS_URL", "ALIYUN_VOICE_URL",
         "TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY", "TENCENTCLOUD_REGION",
         "TENCENT_SMS_URL", "TENCENT_VMS_URL", "BRIDGE_FAILOVER_AFTER"}


def test_settings_variables_found() -> None:
    names = settings_variables()
    assert KNOWN <= names, sorted(KNOWN - names)


def test_arriving_lists_only_variables_not_read_yet() -> None:
    """``docs/configuration.md``'s "Arriving with their features" names only variables the
    code does not read yet; one the code reads belongs in the tables above it."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    _, _, arriving = text.partition("## Arriving with their features")
    arriving = arriving.split("\n## ", 1)[0]
    read = sorted(n for n in settings_variables() if f"`{n}`" in arriving)
    assert read == [], f"read by the code but listed as arriving: {read}"


def test_every_variable_is_in_configuration_md() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = sorted(n for n in settings_variables() if f"`{n}`" not in text)
    assert missing == [], f"not documented in docs/configuration.md: {missing}"


def test_every_variable_is_in_env_example() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.M))
    missing = sorted(settings_variables() - listed)
    assert missing == [], f"not listed in .env.example: {missing}"


@pytest.mark.parametrize(("heading", "anchor"), [
    ("Dedup: who is paged once, and for how long", "dedup-who-is-paged-once-and-for-how-long"),
    ("/readyz says 503", "readyz-says-503"),
    ("POST /api/episodes/<id>/ack", "post-apiepisodesidack"),
    ("Encoding tpl_value", "encoding-tpl_value"),
    ("`BRIDGE_TOKEN` and the page", "bridge_token-and-the-page"),
], ids=["colon-comma", "slash", "path", "underscore", "code"])
def test_slug(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


_TOKEN = re.compile(r"`([^`]+)`(\s*\()?|\)")


def layout_modules() -> set[str]:
    """The modules docs/development.md's "Code layout" table names, as paths (``bridge/web/
    app.py``): a cell's ``bridge/PKG/`` names the folder of the files after it, ``sub/ (...)``
    a subfolder of the files in its parentheses."""
    text = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    section = text.split("## Code layout", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    found: set[str] = set()
    for row in rows[1:]:
        stack = [""]
        for m in _TOKEN.finditer(row.split("|")[2]):
            token, opens = m.group(1), m.group(2)
            if token is None:
                stack.pop()
            elif token.startswith("bridge/") and token.endswith("/"):
                stack = [token]
            elif token.endswith("/") and opens:
                stack.append(stack[-1] + token)
            elif token.endswith(".py"):
                found.add(token if token.startswith("bridge/") else stack[-1] + token)
    return found


def test_layout_table_matches_the_tree() -> None:
    tree = {str(p.relative_to(ROOT)) for p in (ROOT / "bridge").rglob("*.py")}
    named = layout_modules()
    assert sorted(named - tree) == [], "named in docs/development.md but not in bridge/"
    missing = sorted(p for p in tree - named if not p.endswith("/__init__.py"))
    assert missing == [], "in bridge/ but not in docs/development.md's layout table"


_METRIC_MAKERS = {"Counter", "Gauge", "Histogram", "Summary", "GaugeMetricFamily",
                  "CounterMetricFamily", "gauge"}


def metric_names() -> set[str]:
    """Every metric ``bridge/`` defines: the name a ``Counter``, ``Gauge``, ``Histogram``, a
    metric family or ``metrics.gauge`` is made with."""
    names: set[str] = set()
    for path in (ROOT / "bridge").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (called in _METRIC_MAKERS and isinstance(first, ast.Constant)
                    and isinstance(first.value, str) and first.value.startswith("bridge_")):
                names.add(first.value)
    return names


def test_every_metric_is_in_operations_md() -> None:
    names = metric_names()
    assert {"bridge_webhooks_total", "bridge_queue_depth", "bridge_oncall"} <= names, names
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    missing = sorted(n for n in names if f"`{n}" not in text)
    assert missing == [], f"not in docs/operations.md, Metrics: {missing}"
