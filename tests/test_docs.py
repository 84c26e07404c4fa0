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
    """Upper-case names ``bridge/config.py`` hands to a call (``e.get("JUHE_KEY")``,
    ``Field(validation_alias="PORT")``, ``AliasChoices(...)``) or uses as a subscript
    (``e["BRIDGE_STORE"]``). Single words need 4 letters or more (``PORT``; not ``UTC``)."""
    tree = ast.parse(Path(config.__file__).read_text(encoding="utf-8"))
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            found += node.args
            found += [k.value for k in node.keywords]
        elif isinstance(node, ast.Subscript):
            found.append(node.slice)
    return {n.value for n in found if isinstance(n, ast.Constant) and isinstance(n.value, str)
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


def test_settings_variables_found() -> None:
    names = settings_variables()
    assert {"JUHE_KEY", "BRIDGE_STORE", "REDIS_URL", "PORT", "WEB_CONCURRENCY"} <= names, names


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
