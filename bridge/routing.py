"""Which routes an alert takes (Alertmanager semantics, flattened to one level).

Routes are tried in order; the first whose matchers all hold wins, and the search goes on past
it only when it says ``continue: true``.
"""

from __future__ import annotations

from collections.abc import Mapping

from bridge.rules.model import Route


def route(labels: Mapping[str, str], routes: list[Route]) -> list[int]:
    """Indexes of the routes an alert with ``labels`` takes, in order (possibly none)."""
    hits: list[int] = []
    for i, r in enumerate(routes):
        if all(m.matches(labels) for m in r.matchers):
            hits.append(i)
            if not r.continue_:
                break
    return hits
