"""Acknowledging silences the alert in Alertmanager (docs/oncall.md, "Silences in
Alertmanager").

With ``BRIDGE_ALERTMANAGER_URL`` set, the first acknowledgement of an episode whose alert came
from Alertmanager adds a job (:class:`bridge.store.base.Job`, kind :data:`CREATE`) that creates
a silence through Alertmanager's API v2 (``POST /api/v2/silences``): one equality matcher per
label of the alert (``isEqual`` true, ``isRegex`` false), from now until the acknowledgement
plus ``BRIDGE_ACK_SILENCE``, ``createdBy`` the acknowledger, a ``comment`` naming the bridge
and the episode. Its id is kept with the episode (``silence_id``). When the episode resolves,
a job of kind :data:`EXPIRE` expires it (``DELETE /api/v2/silence/<id>``).

A silence also holds back the alert's resolved notification (Alertmanager mutes resolved
alerts too), so while it lasts a job of kind :data:`WATCH` looks at Alertmanager's alerts and
resolves the episode itself once the alert is no longer firing there.

The acknowledgement itself only adds the job to the store, so Alertmanager being slow, down
or refusing never fails or delays it. The jobs run from the delivery loop in the background
(:class:`bridge.deliver.jobs.JobRunner`), retried after 2 s, 4 s, ... at most a minute apart
for :data:`GIVE_UP_AFTER` seconds after the acknowledgement (or the resolve), then logged and
counted in ``bridge_silence_errors_total{op}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import requests

from bridge import metrics
from bridge.decide.episodes import Episode
from bridge.deliver.jobs import JobResult
from bridge.store.base import Job, Store

log = logging.getLogger(__name__)

#: Job kinds: create a silence for an acknowledged episode, expire a resolved one's, and watch
#: a silenced alert in Alertmanager until it resolves there.
CREATE = "silence.create"
EXPIRE = "silence.expire"
WATCH = "silence.watch"
#: Seconds between two looks at a silenced alert in Alertmanager.
WATCH_EVERY = 10.0
#: After Alertmanager (re)started, seconds before a missing alert counts as resolved: the
#: senders (Prometheus: every minute) post their firing alerts to it again by then.
RESTART_GRACE = 120.0
#: Seconds after the acknowledgement (or resolve) a job stops being retried.
GIVE_UP_AFTER = 600.0
#: Seconds to connect to Alertmanager, and to wait for its answer.
TIMEOUT = (3.0, 5.0)


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones: 2, 4, 8, ... at most 60."""
    return float(min(2 * 2 ** max(attempts, 0), 60))


def iso(ts: float) -> str:
    """UNIX seconds as Alertmanager's RFC 3339 UTC time (millisecond precision)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def silence_body(labels: dict[str, str], by: str, episode_id: str, alertname: str,
                 starts_at: float, ends_at: float) -> dict[str, Any]:
    """The ``POST /api/v2/silences`` body: one equality matcher per label with a value (an
    empty value would match every alert lacking the label), sorted by name; times UNIX
    seconds. Raises ``ValueError`` when no label has a value (Alertmanager refuses a silence
    that matches everything)."""
    matchers = [{"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in sorted(labels.items()) if v]
    if not matchers:
        raise ValueError("the alert has no label with a value to silence it by")
    return {"matchers": matchers, "startsAt": iso(starts_at), "endsAt": iso(ends_at),
            "createdBy": by or "alert-sms bridge",
            "comment": f"Acknowledged in the alert-sms bridge: episode {episode_id}"
                       + (f" ({alertname})" if alertname else "")}


class Silencer:
    """Adds and runs the silence jobs of this bridge. ``url`` is ``BRIDGE_ALERTMANAGER_URL``
    (no trailing slash), ``duration`` ``BRIDGE_ACK_SILENCE`` in seconds."""

    def __init__(self, store: Store, url: str, duration: float,
                 resolve: Callable[[Episode, float], None] | None = None) -> None:
        self.store = store
        self.url = url.rstrip("/")
        self.duration = duration
        #: resolves an episode whose alert resolved in Alertmanager (its resolved notification
        #: held back by the silence): the bridge's intake of that resolved alert
        self.resolve = resolve

    # -- adding jobs (from the web side: cheap, one store write each) -----------------------
    def on_acknowledged(self, episode: Episode, now: float) -> bool:
        """After the first acknowledgement of ``episode``: add its create job when the alert
        came from Alertmanager; true when added. Raises :class:`StoreUnavailable`."""
        if episode.source != "alertmanager":
            return False
        payload = {"episode": episode.id, "labels": dict(episode.labels),
                   "by": episode.acknowledged_by or "", "alertname": episode.alertname,
                   "ends_at": (episode.acknowledged_at or now) + self.duration}
        return self.store.add_job(f"{CREATE}:{episode.id}", CREATE, payload, now,
                                  now + self.duration, now)

    def on_resolved(self, episodes: Iterable[Episode], now: float) -> int:
        """After a webhook resolved some episodes: add an expire job for each resolved one that
        has a silence; returns how many were added. Raises :class:`StoreUnavailable`."""
        added = 0
        for e in episodes:
            if e.state == "resolved" and e.silence_id:
                added += self.store.add_job(f"{EXPIRE}:{e.id}", EXPIRE,
                                            {"episode": e.id, "silence": e.silence_id},
                                            now, now, now)
        return added

    # -- running them (job handlers) --------------------------------------------------------
    def create(self, job: Job, now: float) -> JobResult:
        """Handler of :data:`CREATE`: create the silence, keep its id with the episode (and
        expire it again at once when the episode resolved meanwhile)."""
        p = job.payload
        eid = str(p["episode"])
        episode = self.store.episode(eid)
        if episode is None or episode.state == "resolved":
            why = "episode gone" if episode is None else "resolved before it was silenced"
            log.info("silence for episode %s not created: %s", eid, why)
            return JobResult("done", why)
        if episode.silence_id:
            return JobResult("done")
        try:
            body = silence_body(dict(p["labels"]), str(p["by"]), eid, str(p["alertname"]),
                                now, max(float(p["ends_at"]), now + 60))
        except ValueError as exc:
            return self._give_up("create", eid, str(exc))
        try:
            r = requests.post(f"{self.url}/api/v2/silences", json=body, timeout=TIMEOUT)
            if r.status_code != 200:
                raise RuntimeError(f"alertmanager answered {r.status_code}: {r.text[:200]}")
            silence_id = str(r.json()["silenceID"])
        except (requests.RequestException, RuntimeError, ValueError, KeyError, TypeError) as exc:
            return self._failed(job, "create", eid, str(exc), now)
        self.store.set_silence(eid, silence_id)
        log.info("episode %s (%s): silenced in alertmanager as %s until %s (by %s)", eid,
                 episode.alertname or episode.fingerprint, silence_id, body["endsAt"],
                 body["createdBy"])
        after = self.store.episode(eid)
        if after is not None and after.state == "resolved":
            self.on_resolved([after], now)
        elif self.resolve is not None:
            self.store.add_job(f"{WATCH}:{eid}", WATCH, {"episode": eid,
                               "ends_at": float(p["ends_at"])}, now + WATCH_EVERY,
                               float(p["ends_at"]), now)
        return JobResult("done")

    def watch(self, job: Job, now: float) -> JobResult:
        """Handler of :data:`WATCH`: while the episode's silence lasts, look every
        :data:`WATCH_EVERY` seconds whether Alertmanager still has the alert firing. A silence
        also holds back the alert's resolved notification, so when Alertmanager no longer has
        it (and has been up :data:`RESTART_GRACE` seconds since before the silence: a restart
        forgets alerts until their senders post them again), the bridge resolves the episode
        itself, as that notification would have (resolved SMS, the silence expired)."""
        eid = str(job.payload["episode"])
        episode = self.store.episode(eid)
        if episode is None or episode.state == "resolved" or not episode.silence_id:
            return JobResult("done")
        if now >= float(job.payload["ends_at"]):
            return JobResult("done", "the silence ended")
        again = JobResult("retry", "", now + WATCH_EVERY)
        try:
            if self._firing(episode) or self._restarted(job.since, now):
                return again
        except (requests.RequestException, RuntimeError, ValueError, KeyError,
                TypeError) as exc:
            return JobResult("retry", str(exc), now + WATCH_EVERY)
        log.info("episode %s (%s): alertmanager no longer has the alert firing (the silence "
                 "holds its resolved notification back): resolving it", eid,
                 episode.alertname or episode.fingerprint)
        assert self.resolve is not None
        self.resolve(episode, now)
        return JobResult("done")

    def _firing(self, episode: Episode) -> bool:
        """Whether Alertmanager has an active alert with the episode's labels (silenced ones
        included)."""
        params: dict[str, Any] = {"active": "true", "silenced": "true", "inhibited": "true",
                                  "unprocessed": "true"}
        if episode.alertname:
            name = episode.alertname.replace("\\", "\\\\").replace('"', '\\"')
            params["filter"] = f'alertname="{name}"'
        r = requests.get(f"{self.url}/api/v2/alerts", params=params, timeout=TIMEOUT)
        if r.status_code != 200:
            raise RuntimeError(f"alertmanager answered {r.status_code}: {r.text[:200]}")
        return any(dict(a.get("labels") or {}) == episode.labels for a in r.json())

    def _restarted(self, since: float, now: float) -> bool:
        """True while Alertmanager started after ``since`` less than :data:`RESTART_GRACE`
        seconds ago (``/api/v2/status`` ``uptime``: its start time)."""
        r = requests.get(f"{self.url}/api/v2/status", timeout=TIMEOUT)
        if r.status_code != 200:
            raise RuntimeError(f"alertmanager answered {r.status_code}: {r.text[:200]}")
        started = datetime.fromisoformat(str(r.json()["uptime"]).replace("Z", "+00:00"))
        return started.timestamp() > since and now - started.timestamp() < RESTART_GRACE

    def expire(self, job: Job, now: float) -> JobResult:
        """Handler of :data:`EXPIRE`: expire the silence (one Alertmanager no longer knows, or
        already expired, counts as expired)."""
        eid, silence_id = str(job.payload["episode"]), str(job.payload["silence"])
        try:
            r = requests.delete(f"{self.url}/api/v2/silence/{silence_id}", timeout=TIMEOUT)
            gone = r.status_code == 404 or "already expired" in r.text
            if r.status_code != 200 and not gone:
                raise RuntimeError(f"alertmanager answered {r.status_code}: {r.text[:200]}")
        except (requests.RequestException, RuntimeError) as exc:
            return self._failed(job, "expire", eid, str(exc), now)
        log.info("episode %s resolved: silence %s expired in alertmanager", eid, silence_id)
        return JobResult("done")

    def _failed(self, job: Job, op: str, eid: str, error: str, now: float) -> JobResult:
        due = now + retry_delay(job.attempts)
        if due - job.since > GIVE_UP_AFTER:
            return self._give_up(op, eid, f"{error} (tried {job.attempts + 1} times for "
                                          f"{now - job.since:.0f}s)")
        log.warning("episode %s: alertmanager silence %s failed, retry in %.0fs: %s", eid, op,
                    due - now, error)
        return JobResult("retry", error, due)

    @staticmethod
    def _give_up(op: str, eid: str, error: str) -> JobResult:
        log.error("episode %s: alertmanager silence %s given up: %s", eid, op, error)
        metrics.SILENCE_ERRORS.labels(op).inc()
        return JobResult("failed", error)
