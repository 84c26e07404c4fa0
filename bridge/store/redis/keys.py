"""The Redis store's key map, and how values go in and out of it.

Times are UNIX seconds passed to the scripts as text (``repr(float)``) and stored as text, so a
float comes back exactly as it went in (Lua numbers are doubles; a number is never turned into
text inside a script, which would keep only 14 digits).

Key map (``{prefix}`` is ``{bridge}:`` unless configured, always starting with a hash tag; ``{m}``
a mobile, ``{id}`` an item id; with ``BRIDGE_REDIS_WAIT`` > 0 the steps record, acknowledge,
finish_step, mark_sent/retry/failed and ping are followed by ``WAIT``)::

    {prefix}seq                    string  INCR counter; item ids are its values, as text
    {prefix}item:{id}              hash    one stored notification: id mobile fingerprint status
                                           episode route alertname tpl_id variables (JSON text)
                                           state reason created_at updated_at due_at lease_until
                                           attempts [lease_token first_attempt_at sid fee]
    {prefix}items                  zset    every item id, score = id            (recent)
    {prefix}state:{state}          zset    item ids in that state, score = id   (counts, recent)
    {prefix}done                   zset    finished (sent/failed/suppressed) ids,
                                           score = updated_at                   (prune)
    {prefix}mobile:{m}:items       zset    the mobile's item ids, score = id    (recent ?mobile=)
    {prefix}mobile:{m}:pending     zset    the mobile's pending (queued/retrying/held) ids,
                                           score = max(due_at, lease_until): claimable at
    {prefix}mobile:{m}:hour        zset    ids recorded ``queued`` (they count against
                                           per_mobile_per_hour), score = created_at; trimmed to
                                           the last two hours whenever one is added
    {prefix}mobile:{m}:storm       hash    the mobile's storm window: start end count
    {prefix}storms                 zset    mobiles with a storm window, score = its end (prune)
    {prefix}due                    zset    mobiles with pending items, score = when the mobile
                                           can next be claimed = max(its first claimable item,
                                           its pacing gap's end)                (claim)
    {prefix}pace                   zset    mobile -> end of its hold (a claim's lease) or of its
                                           pacing gap (last send that may have gone out +
                                           min_gap), as the last claim or mark set it
    {prefix}dedup:{key}            hash    dedup record of ``mobile|fingerprint|status|episode``:
                                           at (last recorded) paged (0/1); expires
                                           max(dedup_ttl, repeat_interval) after it was written
    {prefix}dedup                  zset    dedup keys, score = at (prune); trimmed on record to
                                           the last ``dedup_ttl`` seconds
    {prefix}day:{day}              string  SMS queued on that day (per_day); expires after 3 days
    {prefix}episode:{fingerprint}  string  the current episode of an alert without startsAt
                                           (legacy Grafana), as text (base.episode_text)
    {prefix}ep:{eid}               string  one alert episode (decide/episodes.py) as JSON text:
                                           id fp ep alertname labels annotations summary
                                           starts_at source silence_id
                                           silence_url route state ack_by ack_at ack_via
                                           resolved_at created_at paged[] steps[]; times are
                                           text ("" for none); paged: mobile route rt at level
                                           item code sent (when a firing SMS to it was first
                                           sent, "" until then; missing in an entry from
                                           before it was kept: sent at ``at``); steps: index
                                           after receiver template
                                           due_at ("" until the route's first SMS for the
                                           episode went out: sent or failed, or met a
                                           configuration error; see MARK_LUA)
                                           state reason lease token ran_at
    {prefix}epkey:{fp}|{episode}   string  the episode id of (fingerprint, episode)
    {prefix}epcode:{code}          string  the episode id an ack code was sent for
    {prefix}episodes               zset    episode ids, score = created_at   (episodes())
    {prefix}epstate:{state}        zset    episode ids in that state, score = created_at
    {prefix}epresolved             zset    resolved episode ids, score = resolved_at (prune)
    {prefix}steps                  zset    ``{eid}|{index}`` of pending steps, score = when
                                           claimable = max(due_at, lease)   (claim_steps)
    {prefix}job:{key}              hash    one background job (base.Job): key kind payload (JSON
                                           text) state due_at since keep_until attempts error
                                           lease token
    {prefix}jobs                   zset    pending job keys, score = when claimable =
                                           max(due_at, lease)                  (claim_jobs)
    {prefix}jobskept               zset    finished job keys, score = keep_until (prune)
    {prefix}unknown:{client}:{min} string  unknown ack codes tried by a client in one minute
                                           (min = now // 60); expires after 120 s
    {prefix}heartbeats             hash    heartbeat name -> JSON text (docs/heartbeats.md):
                                           seen (last beat) state (up/missing) since
                                           (missing_since, "" for none) lease token; times
                                           are text; no field before the first beat
    {prefix}status                 hash    shared status notes (e.g. ``juhe_config``)
    {prefix}ping                   string  written by ``RedisStore.ping``
    {prefix}wake                   channel published by record when it queued an SMS (due
                                           now); every deliverer subscribes
                                           (``RedisStore.work_listener``)

Intake is O(batch) and a claim O(claimed items): claim reads the mobiles due from
``{prefix}due`` and each mobile's claimable ids from its ``pending`` set; nothing scans. What
grows with traffic is removed by :meth:`~bridge.store.redis.store.RedisStore.prune` in bounded
steps (finished items, dedup records, pacing and storm entries) or expires on its own (dedup, day
counters).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, cast

from bridge.decide.episodes import Episode, Paged, Step
from bridge.decide.types import State
from bridge.store.base import Item, Job, JobState

#: The default key prefix: one hash tag, so every key of the bridge is in one cluster slot.
DEFAULT_PREFIX = "{bridge}:"
#: A prefix must start with a hash tag (``{...}``, not empty): Redis hashes only what is inside.
HASH_TAG = re.compile(r"^[^{]*(\{[^}]+\})")
#: Seconds a dedup record lives in Redis at least (longer when its repeat_interval is longer).
DEFAULT_DEDUP_TTL = 7 * 86400  # when opened without a retention; open_store passes BRIDGE_RETENTION


def opt_time(x: Any) -> float | None:
    """A time stored as text ("" for none) as a float or ``None``."""
    return None if x in ("", None) else float(x)


def lua_list(x: Any) -> list[Any]:
    """A JSON list from Lua (cjson writes an empty one as ``{}``)."""
    return list(x) if isinstance(x, list) else []


def decode_episode(raw: str) -> Episode:
    """An :class:`Episode` from its JSON text (see the key map)."""
    e = json.loads(raw)
    return Episode(
        id=e["id"], fingerprint=e["fp"], episode=e["ep"], alertname=e["alertname"],
        labels=dict(e["labels"] or {}), summary=e["summary"],
        starts_at=opt_time(e["starts_at"]), silence_url=e["silence_url"] or None,
        route=e["route"], state=e["state"], acknowledged_by=e["ack_by"] or None,
        acknowledged_at=opt_time(e["ack_at"]), acknowledged_via=e["ack_via"] or None,
        resolved_at=opt_time(e["resolved_at"]), created_at=float(e["created_at"]),
        paged=tuple(Paged(mobile=p["mobile"], route=p["route"],
                          resolved_template=p["rt"] or None, at=float(p["at"]),
                          level=int(p["level"]), item_id=p["item"] or None,
                          code=p["code"] or None,
                          sent_at=float(p["at"]) if "sent" not in p else opt_time(p["sent"]))
                for p in lua_list(e["paged"])),
        steps=tuple(Step(index=int(st["index"]), after=float(st["after"]),
                         receiver=st["receiver"], template=st["template"] or None,
                         due_at=opt_time(st["due_at"]), state=st["state"], reason=st["reason"],
                         ran_at=opt_time(st.get("ran_at")))
                    for st in lua_list(e["steps"])),
        annotations=dict(e.get("annotations") or {}), source=e.get("source") or "",
        silence_id=e.get("silence_id") or None)


def decode_job(flat: Sequence[str]) -> Job:
    """A :class:`Job` from an HGETALL reply of ``{prefix}job:{key}`` (its key in ``key``)."""
    h = dict(zip(flat[::2], flat[1::2], strict=True))
    return Job(key=h["key"], kind=h["kind"], payload=json.loads(h["payload"]),
               state=cast(JobState, h["state"]), due_at=float(h["due_at"]),
               since=float(h["since"]), keep_until=float(h["keep_until"]),
               attempts=int(h.get("attempts", "0")), error=h.get("error", ""))


def time_arg(x: float) -> str:
    """A time or duration as exact text for a script (``repr`` round-trips a float)."""
    return repr(float(x))


def limit_arg(x: int | None) -> str:
    """A limit for a script: its digits, ``""`` for no limit."""
    return "" if x is None else str(int(x))


def decode_item(flat: Sequence[str]) -> Item:
    """An :class:`Item` from an HGETALL reply (``[field, value, ...]``)."""
    h = dict(zip(flat[::2], flat[1::2], strict=True))
    first = h.get("first_attempt_at")
    fee = h.get("fee")
    return Item(
        id=h["id"], mobile=h["mobile"], fingerprint=h["fingerprint"], status=h["status"],
        episode=h["episode"], route=h["route"], alertname=h["alertname"],
        tpl_id=int(h["tpl_id"]), variables=json.loads(h["variables"]),
        state=cast(State, h["state"]), reason=h.get("reason", ""),
        created_at=float(h["created_at"]), updated_at=float(h["updated_at"]),
        due_at=float(h["due_at"]), attempts=int(h.get("attempts", "0")),
        first_attempt_at=None if first is None else float(first), sid=h.get("sid"),
        fee=None if fee is None else int(fee), template=h.get("template") or None,
    )
