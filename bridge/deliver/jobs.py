"""Running durable background jobs from the delivery loop (docs/oncall.md: "Silences in
Alertmanager", "Shift notices").

A job is a leased timer in the store (:class:`bridge.store.base.Job`), like an escalation step:
each key is added once across workers, instances and restarts, claimed with a lease by one
runner, and settled fenced by the lease's token, so a crash mid-job leaves it pending and it
runs again after the lease (each handler is safe to run twice). :class:`JobRunner` is called on
every pass of the delivery loop; jobs that talk to a slow outside service run in a small thread
pool, so they never hold up the SMS (a claim is leased for longer than any such call lasts).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from bridge.errors import StoreUnavailable
from bridge.store.base import Job, JobClaim, Store

log = logging.getLogger(__name__)

#: Seconds a claimed job is leased to one runner (longer than any handler may take).
JOB_LEASE = 60.0


@dataclass(frozen=True)
class JobResult:
    """What a handler made of a job: ``done``; ``retry`` at ``due_at`` (UNIX seconds); or
    ``failed`` for good. ``error`` says why (kept with the job)."""

    outcome: Literal["done", "retry", "failed"]
    error: str = ""
    due_at: float = 0.0


#: A handler: the job and ``now`` -> its result. It may raise; the runner then retries it
#: after :data:`JOB_LEASE` (:class:`StoreUnavailable`) or logs it and tries again in a minute.
Handler = Callable[[Job, float], JobResult]


class JobRunner:
    """Claims due jobs and hands each to the handler of its ``kind``. ``background`` kinds
    run in a pool of ``threads`` threads (outside HTTP calls); the others in the caller's
    thread. ``clock`` gives UNIX seconds."""

    def __init__(self, store: Store, handlers: Mapping[str, Handler], *,
                 background: frozenset[str] = frozenset(), threads: int = 2,
                 clock: Callable[[], float] = time.time, lease: float = JOB_LEASE) -> None:
        self.store = store
        self.handlers = dict(handlers)
        self.background = background
        self.threads = threads
        self.clock = clock
        self.lease = lease
        self._pool: ThreadPoolExecutor | None = None

    def run_once(self, now: float | None = None) -> int:
        """Claim the jobs due at ``now`` (default the clock) and run or start each; returns
        how many were claimed. Raises :class:`StoreUnavailable`."""
        now = self.clock() if now is None else now
        claims = self.store.claim_jobs(now, self.lease)
        for claim in claims:
            if claim.job.kind in self.background:
                if self._pool is None:  # made in the process that runs it (after a fork)
                    self._pool = ThreadPoolExecutor(self.threads, "bridge-jobs")
                self._pool.submit(self._run, claim)
            else:
                self._run(claim, now)
        return len(claims)

    def _run(self, claim: JobClaim, now: float | None = None) -> None:
        job = claim.job
        handler = self.handlers.get(job.kind)
        now = self.clock() if now is None else now
        try:
            if handler is None:
                result = JobResult("failed", f"no handler for jobs of kind {job.kind!r}")
            else:
                result = handler(job, now)
            done = self.clock()
            if result.outcome == "retry":
                self.store.settle_job(claim, "pending", done, due_at=result.due_at,
                                      error=result.error)
            else:
                self.store.settle_job(claim, result.outcome, done, error=result.error)
        except StoreUnavailable as exc:  # the lease lapses and the job runs again
            log.warning("job %s: store unavailable: %s", job.key, exc)
        except Exception:  # a bug must not stop the loop; the job is tried again later
            log.exception("job %s failed", job.key)
            try:
                self.store.settle_job(claim, "pending", self.clock(),
                                      due_at=self.clock() + 60, error="internal error")
            except StoreUnavailable:
                pass

    def close(self, wait: bool = True) -> None:
        """Stop the pool (``wait``: after the jobs in hand)."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait)
            self._pool = None
