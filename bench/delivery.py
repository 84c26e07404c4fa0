"""Delivery throughput: SMS/s from a store to the fake Juhe, against a bare ``requests`` loop.

:func:`bare_rate` posts the forms a :class:`bridge.providers.juhe.JuheClient` would post (same
mobiles, tpl_id, encoded ``tpl_value``, key) to the same fake, one after another over one keep-alive
``requests.Session``: the most one sending thread can do. :func:`deliverer_rate` records ``n``
queued notifications for ``n`` distinct mobiles (so pacing never holds one back; min_gap 0)
with ``Store.record``, then runs one :class:`bridge.deliver.deliverer.Deliverer` in this thread,
``run_once`` after ``run_once``, until all are handled, and checks they are ``sent``.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from benchlib import KEY

if TYPE_CHECKING:
    from bridge.store.base import Claim

TPL_ID = 111


def variables(i: int) -> dict[str, str]:
    return {"name": "DiskFull", "host": f"db-{i}:9100", "summary": "disk /var 97% full o…",
            "at": "01-01 08:00"}


def mobile(i: int) -> str:
    return str(14000000000 + i)


def bare_rate(url: str, n: int) -> float:
    """SMS/s of a bare ``requests.Session`` loop posting ``n`` forms."""
    from bridge.providers.juhe import encode_tpl_value

    forms = [[("mobile", mobile(i)), ("tpl_id", str(TPL_ID)),
              ("tpl_value", encode_tpl_value(variables(i))), ("key", KEY)] for i in range(n)]
    with requests.Session() as session:
        session.post(url, data=forms[0], timeout=5).raise_for_status()  # connect first
        t0 = time.perf_counter()
        for form in forms:
            r = session.post(url, data=form, timeout=5,
                             headers={"Accept": "application/json"})
            if r.json().get("error_code") != 0:
                raise RuntimeError(f"fake juhe refused: {r.text}")
        return n / (time.perf_counter() - t0)


def fill_queue(store_url: str, n: int) -> None:
    """Record ``n`` queued notifications, one per distinct mobile (fresh fingerprints)."""
    from bridge.store import Notification, Policy, open_store

    run = random.randrange(0x10000)
    store = open_store(store_url)
    try:
        notes = [Notification(mobile=mobile(i), fingerprint=f"{run:04x}{i:012x}", status="firing",
                              episode="2026-01-01T00:00:00+00:00", route="db-critical",
                              alertname="DiskFull", tpl_id=TPL_ID, variables=variables(i),
                              repeat_interval=14400.0) for i in range(n)]
        now = time.time()
        for k in range(0, n, 200):
            out = store.record(notes[k:k + 200], Policy(day="2026-11-29"), now)
            assert all(o.state == "queued" for o in out), out[:3]
    finally:
        store.close()


def deliverer_rate(store_url: str, juhe_url: str, rules: Path, n: int) -> tuple[float, int]:
    """SMS/s of one Deliverer sending the ``n`` queued notifications :func:`fill_queue` made
    (counted as they are claimed, so that anything else pending counts too); returns (rate,
    how many more the store has ``sent`` afterwards)."""
    from bridge.config import Settings
    from bridge.deliver.deliverer import Deliverer, DeliveryPolicy
    from bridge.providers.juhe import JuheClient
    from bridge.rules.load import load_rules
    from bridge.store import open_store

    ruleset = load_rules(str(rules), "Asia/Shanghai")
    store = open_store(store_url)
    before = store.counts()["sent"]
    claimed = [0]
    claim = store.claim

    def counting_claim(*args: Any, **kwargs: Any) -> list[Claim]:
        claims = claim(*args, **kwargs)
        claimed[0] += sum(len(c.items) for c in claims)
        return claims

    store.claim = counting_claim  # type: ignore[method-assign]
    client = JuheClient(KEY, juhe_url, timeout=5.0)
    deliverer = Deliverer(store, client, lambda: ruleset, DeliveryPolicy.from_settings(Settings()))
    try:
        client.send(mobile(10**6), TPL_ID, variables(0))  # connect first, as bare_rate does
        t0 = time.perf_counter()
        maintain = getattr(store, "maintain", lambda: None)  # (an older bridge/ has none)
        next_maintain = 0.0
        while claimed[0] < n:
            if time.perf_counter() >= next_maintain:  # once a second, as run_forever does
                next_maintain = time.perf_counter() + 1.0
                maintain()
            if deliverer.run_once() == 0:
                raise RuntimeError(f"nothing left to claim after {claimed[0]} of {n}")
        rate = claimed[0] / (time.perf_counter() - t0)
        sent = store.counts()["sent"] - before
    finally:
        client.close()
        store.close()
    return rate, sent
