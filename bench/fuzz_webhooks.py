#!/usr/bin/env python3
"""Throw arbitrary JSON and arbitrary bytes at both webhooks through the real Flask app.

The property (docs/api.md): whatever the body, a webhook never answers 5xx; it answers
``200`` with a JSON object of counts, or a 4xx (400, 413) with ``{"error": "..."}``. The app is
``create_app(settings)`` on a SQLite store in a temporary folder (dry-run, no delivery
thread), driven through Flask's test client, so thousands of bodies run in a few minutes.

Run::

    python bench/fuzz_webhooks.py [--examples 10000] [--seconds 240] [--seed N]

It prints how many bodies it sent, per answer status, and every distinct failure (a 5xx, a
non-JSON answer, an error without ``"error"``), and exits 1 when there was any. The test suite
(``tests/test_security.py``) imports the strategies and :func:`judge` from here and runs the same
property with fewer examples, also against the real ``bridge serve``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import support  # noqa: E402  (tests/support.py: the rules pieces)

#: Rules that reach every part of the plan: matchers on fuzzed labels, mobiles_from a fuzzed
#: label, a resolved template, limits.
RULES = ("receivers:\n  oncall: [\"13800138000\"]\n  ops: [\"13900139000\"]\ntemplates:\n"
         + support.LENIENT_FIRING + support.LENIENT_RESOLVED
         + "      value: \"{{ values | default('-') }}\"\n" + support.NO_GAP + """\
  per_mobile_per_hour: 50
routes:
  - name: critical
    matchers: ['severity=~"crit.*"']
    receiver: ops
    mobiles_from: oncall_mobile
    template: firing
    resolved_template: resolved
    continue: true
  - name: everything
    matchers: ['alertname=~".*"']
    receiver: oncall
    template: firing
    resolved_template: resolved
""")

SOURCES = ("alertmanager", "grafana")

# -- strategies ------------------------------------------------------------------------------

#: Text, some of it what breaks parsers: lone surrogates, control characters, Juhe's separators.
texts = st.one_of(
    st.text(max_size=20),
    st.text(st.sampled_from(list("#&=%+{}[]\"\\\n\r\t\x00\u2028\ufeff，中\ud800\udc00\udfff")),
            max_size=10),
    st.sampled_from(["", "{{ 7*7 }}", "#code#=1&#x#=2", "a" * 300, "\ud83d\ude00", "null"]),
)

#: Any JSON value (NaN and the infinities included: Python's json reads them).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)


def mostly(usual: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` seven times in eight, else any JSON value."""
    return st.one_of(*[usual] * 7, json_values)


_rfc3339 = st.builds(
    lambda y, mo, d, h, mi, s, frac, off: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
    f"{frac}{off}",
    st.sampled_from([1, 1970, 2026, 9999, 0]), st.integers(0, 13), st.integers(0, 32),
    st.integers(0, 25), st.integers(0, 60), st.integers(0, 61),
    st.sampled_from(["", ".5", ".123456789", ".1234567891"]),
    st.sampled_from(["Z", "z", "+08:00", "-23:59", "+24:00", "+00:60", "", "+0800"]),
)
times = mostly(st.one_of(_rfc3339, st.sampled_from(["0001-01-01T00:00:00Z", "", "now"])))
statuses = mostly(st.sampled_from(["firing", "resolved", "FIRING", ""]))
mobiles = st.sampled_from(["13800138000", "13912345678", "13800138000,13912345678",
                           "13800138000，12345", "12345", "", "1380013800x"])
_label_names = st.one_of(st.sampled_from(["alertname", "severity", "instance", "host",
                                          "oncall_mobile", "summary", "team"]), texts)
_label_values = st.one_of(texts, st.sampled_from(["critical", "crit", "warning"]), mobiles)
label_maps = mostly(st.dictionaries(_label_names, mostly(_label_values), max_size=5))

alerts = st.fixed_dictionaries(
    {"labels": label_maps},
    optional={
        "status": statuses,
        "annotations": label_maps,
        "startsAt": times,
        "endsAt": times,
        "fingerprint": mostly(st.sampled_from(["", "abc", "0" * 16])),
        "generatorURL": mostly(texts),
        "values": mostly(st.dictionaries(texts, st.floats() | st.none(), max_size=3)),
        "valueString": json_values,
    },
)
group_bodies = st.fixed_dictionaries(
    {"alerts": mostly(st.lists(mostly(alerts), max_size=4))},
    optional={
        "version": st.sampled_from(["4", "3", "1", 4, None]),
        "status": statuses,
        "receiver": mostly(texts),
        "externalURL": mostly(texts),
        "groupKey": json_values,
        "commonLabels": label_maps,
        "groupLabels": label_maps,
        "commonAnnotations": label_maps,
        "truncatedAlerts": mostly(st.integers()),
        "orgId": json_values,
    },
)
legacy_bodies = st.fixed_dictionaries(
    {"ruleName": mostly(texts),
     "state": mostly(st.sampled_from(["alerting", "ok", "no_data", "paused", "pending"]))},
    optional={
        "ruleId": mostly(st.integers()),
        "ruleUrl": mostly(texts),
        "message": mostly(texts),
        "title": json_values,
        "tags": label_maps,
        "evalMatches": mostly(st.lists(st.fixed_dictionaries(
            {"metric": json_values, "value": json_values, "tags": json_values}), max_size=2)),
        "dashboardId": json_values,
        "orgId": json_values,
    },
)
payloads = st.one_of(group_bodies, group_bodies, legacy_bodies, json_values)


@st.composite
def encoded(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    """A JSON value as a body: ASCII-escaped or raw UTF-8 (lone surrogates as CESU-8 bytes,
    which Python's json reads), sometimes cut short or with a byte changed."""
    value = draw(values)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), allow_nan=True)
    body = text.encode("utf-8", "surrogatepass")
    how = draw(st.sampled_from(["as is"] * 6 + ["cut", "flip", "nest"]))
    if how == "cut" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif how == "flip" and body:
        i = draw(st.integers(0, len(body) - 1))
        body = body[:i] + bytes([draw(st.integers(0, 255))]) + body[i + 1:]
    elif how == "nest":
        depth = draw(st.sampled_from([10, 900, 5000, 100_000]))
        body = b'{"alerts": [{"labels": {"a": ' + b"[" * depth + body + b"]" * depth + b"}}]}"
    return body


#: A webhook body: mostly JSON shaped like the real payloads, else any JSON, else any bytes.
bodies = st.one_of(encoded(payloads), encoded(payloads), encoded(payloads),
                   st.binary(max_size=300))
requests_ = st.one_of(
    st.tuples(st.sampled_from(SOURCES), bodies),
    st.tuples(st.just("alertmanager"), encoded(group_bodies)),
    st.tuples(st.just("grafana"), encoded(st.one_of(group_bodies, legacy_bodies))),
)

# -- the property ----------------------------------------------------------------------------


def judge(status: int, content_type: str | None, data: bytes) -> str:
    """Why a webhook answer breaks the property ("" when it holds)."""
    if status >= 500:
        return f"HTTP {status}: {data[:300]!r}"
    if not (content_type or "").startswith("application/json"):
        return f"HTTP {status} with content type {content_type!r}: {data[:300]!r}"
    try:
        answer = json.loads(data)
    except ValueError:
        return f"HTTP {status} body is not JSON: {data[:300]!r}"
    if status == 200:
        if not isinstance(answer, dict) or not all(
                isinstance(answer.get(k), int) and answer[k] >= 0
                for k in ("alerts", "queued", "suppressed")):
            return f"HTTP 200 without the counts: {answer!r}"
        return ""
    if status not in (400, 413):
        return f"unexpected HTTP {status}: {answer!r}"
    if not isinstance(answer, dict) or not isinstance(answer.get("error"), str) \
            or not answer["error"]:
        return f"HTTP {status} without an error message: {answer!r}"
    return ""


def make_client(workdir: Path, **env: str) -> Any:
    """A Flask test client on ``create_app(settings)``: SQLite in ``workdir``, dry-run
    (no ``JUHE_KEY``), no token, :data:`RULES`. ``env`` adds or overrides variables."""
    from bridge.config import Settings
    from bridge.web.app import create_app

    rules = workdir / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    settings = Settings.from_env({"BRIDGE_RULES": str(rules),
                                  "BRIDGE_STORE": f"sqlite:///{workdir / 'bridge.db'}", **env})
    return create_app(settings).test_client()


# -- the bench -------------------------------------------------------------------------------


def run(examples: int, seconds: float, seed_value: int | None) -> int:
    """Fuzz for ``examples`` bodies or ``seconds``, whichever ends first; print the outcome.
    Returns the number of distinct failures."""
    logging.basicConfig(level=logging.CRITICAL)  # render warnings for odd values are expected
    with tempfile.TemporaryDirectory(prefix="fuzz-webhooks.") as tmp:
        return _run(make_client(Path(tmp)), examples, seconds, seed_value)


def _run(client: Any, examples: int, seconds: float, seed_value: int | None) -> int:
    failures: dict[str, tuple[str, bytes]] = {}
    statuses: Counter[str] = Counter()
    sent = 0
    deadline = time.monotonic() + seconds

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(requests_)
    def prop(req: tuple[str, bytes]) -> None:
        nonlocal sent
        if time.monotonic() > deadline:
            return
        source, body = req
        r = client.post(f"/webhook/{source}", data=body,
                        headers={"Content-Type": "application/json"})
        sent += 1
        statuses[f"{source} {r.status_code}"] += 1
        why = judge(r.status_code, r.content_type, r.get_data())
        if why:
            failures.setdefault(why[:120], (source, body))

    if seed_value is not None:
        prop = seed(seed_value)(prop)
    started = time.monotonic()
    prop()
    elapsed = time.monotonic() - started
    print(f"sent {sent} bodies in {elapsed:.1f}s")
    for key, n in sorted(statuses.items()):
        print(f"  {key}: {n}")
    print(f"{len(failures)} distinct failure(s)")
    for why, (source, body) in failures.items():
        print(f"- {why}\n    POST /webhook/{source} body {body[:200]!r}")
    return len(failures)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--examples", type=int, default=10_000, help="bodies to send (default 10000)")
    ap.add_argument("--seconds", type=float, default=240.0,
                    help="stop after this long whatever the count (default 240)")
    ap.add_argument("--seed", type=int, default=None, help="hypothesis seed, for a rerun")
    args = ap.parse_args(argv)
    return 1 if run(args.examples, args.seconds, args.seed) else 0


if __name__ == "__main__":
    sys.exit(main())
