"""The rules in force, and reloading them in every process without a restart.

As in Alertmanager, the rules file is read at start and on a reload only: editing it does
nothing until ``POST /-/reload`` (in any worker) or ``SIGHUP`` to the ``bridge serve`` master.
A reload checks the new version first; a version that fails is refused whole and the old one
stays in force.

Across the processes of one ``bridge serve`` the rules in force are a *snapshot*: a copy of the
checked file (or folder) in the runtime folder the master shares with its workers
(``BRIDGE_RUNTIME_DIR``), named by a small JSON state file. Every worker stats that file before
it uses the rules (about a microsecond) and loads the new snapshot when the generation moved on;
a worker that gunicorn starts later boots from the snapshot, so a half-edited file on disk can
never stop a worker from booting. Without a runtime folder (tests, ``bridge worker``) the state
lives in memory.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bridge.errors import RulesError
from bridge.rules.load import load_rules, rules_files
from bridge.rules.ruleset import RuleSet

log = logging.getLogger("bridge.reload")  # stable log name (not the module path)

STATE_FILE = "rules-state.json"


def _duration(seconds: float) -> str:
    """``14400`` -> ``4h``, ``90`` -> ``1m30s``, ``0.5`` -> ``0.5s`` (for messages)."""
    if seconds != int(seconds) or seconds < 1:
        return f"{seconds:g}s"
    rest, out = int(seconds), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out


def retention_problems(rules: RuleSet, retention: float | None) -> list[str]:
    """Routes whose ``repeat_interval`` is longer than ``BRIDGE_RETENTION`` (seconds): their
    dedup records would be pruned before the interval ends and the alert paged again
    (issue 10). Empty when ``retention`` is ``None`` or every route fits."""
    if retention is None:
        return []
    return [f"routes[{i}] ({name}): repeat_interval {_duration(r.repeat_interval)} is longer "
            f"than BRIDGE_RETENTION {_duration(retention)}: its dedup records would be pruned "
            "first and the alert paged again; raise BRIDGE_RETENTION or shorten repeat_interval"
            for i, (name, r) in enumerate(zip(rules.route_names, rules.routes, strict=True))
            if r.repeat_interval > retention]


class RulesHolder:
    """Holds the :class:`RuleSet` in force for one process.

    ``path``: the rules file or folder (``BRIDGE_RULES``). ``state_dir``: the folder shared by
    the processes of one ``bridge serve`` (or ``None``). ``retention``: ``BRIDGE_RETENTION``
    in seconds, which no route's ``repeat_interval`` may exceed (``None``: not checked). Raises
    :class:`RulesError` at construction when there is no snapshot to boot from and the rules
    fail their checks.
    """

    def __init__(self, path: str, tz: str, state_dir: str | None = None,
                 retention: float | None = None) -> None:
        self.path = path
        self.tz = tz
        self.retention = retention
        self.state_dir = Path(state_dir) if state_dir else None
        self.state_file = self.state_dir / STATE_FILE if self.state_dir else None
        self._lock = threading.Lock()
        self._mtime = -1
        state = None
        if self.state_file is not None:
            self._mtime = self._stat()  # before reading: a later write must look new
            state = self._read_state()
        if state and state.get("snapshot"):
            self._rules = load_rules(self._snapshot_path(state), tz)
            self._state = state
        else:
            self._rules = load_rules(path, tz)
            if problems := retention_problems(self._rules, retention):
                raise RulesError(problems)
            # started_at: the service's start, which every later state carries on (a
            # heartbeat never counts as missing sooner than its expect after it)
            now = time.time()
            self._state = {"generation": 0, "ok": True, "problems": [],
                           "success_ts": now, "version": self._rules.version,
                           "snapshot": None, "started_at": now}
        self._generation = int(self._state.get("generation", 0))

    def publish(self) -> None:
        """Make the rules loaded at start the snapshot every worker boots from (master only)."""
        with self._lock:
            self._write(dict(self._state, snapshot=self._snapshot(self._generation)))

    @property
    def rules(self) -> RuleSet:
        """The rules in force, after picking up a reload another process made."""
        if self.state_file is not None:
            mtime = self._stat()
            if mtime != self._mtime:
                self._follow(mtime)
        return self._rules

    @property
    def state(self) -> dict[str, Any]:
        """``{"generation", "ok", "problems", "success_ts", "version", "snapshot",
        "started_at"}`` of the last load or reload (``started_at``: the first load's time,
        kept by every reload)."""
        _ = self.rules
        return dict(self._state)

    def reload(self) -> list[str]:
        """Load and check the rules again; returns the problems (empty when the new version is
        in force everywhere). On problems the old rules stay in force.

        Reloads in the processes of one ``bridge serve`` are serialised by a lock file, and
        the version checked is the snapshot itself (copied first), so a file edited during a
        reload can never slip in unchecked.
        """
        with self._lock, self._shared_lock():
            problems: list[str] = []
            previous = (self._read_state() if self.state_file is not None else None)
            previous = previous or self._state
            generation = max(int(previous.get("generation", 0)), self._generation) + 1
            source = Path(self.path)
            try:
                if not source.exists():
                    raise RulesError([f"{self.path}: no such file or folder"])
                try:
                    snapshot = self._snapshot(generation)
                except OSError as exc:
                    raise RulesError([f"{self.path}: cannot read: {exc}"]) from None
                source = (self._snapshot_path({"snapshot": snapshot}) if snapshot is not None
                          else Path(self.path))
                new = load_rules(source, self.tz)
                if retention_problems(new, self.retention):
                    raise RulesError(retention_problems(new, self.retention))
            except RulesError as exc:
                problems = [p.replace(str(source), self.path) for p in exc.problems]
                log.error("rules reload refused, old rules stay in force (%d problems):\n  %s",
                          len(problems), "\n  ".join(problems))
            state: dict[str, Any] = dict(previous, generation=generation, ok=not problems,
                                         problems=problems)
            if not problems:
                self._rules = new
                log.info("rules reloaded: %s", new.summary())
                state.update(success_ts=time.time(), version=new.version, snapshot=snapshot)
            self._generation = generation
            self._write(state)
            return problems

    @contextmanager
    def _shared_lock(self) -> Iterator[None]:
        """An exclusive lock across the processes sharing the runtime folder (flock)."""
        if self.state_dir is None:
            yield
            return
        with open(self.state_dir / "reload.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- internals ------------------------------------------------------------------------
    def _stat(self) -> int:
        assert self.state_file is not None
        try:
            return self.state_file.stat().st_mtime_ns
        except OSError:
            return -1

    def _read_state(self) -> dict[str, Any] | None:
        assert self.state_file is not None
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _snapshot_path(self, state: dict[str, Any]) -> Path:
        assert self.state_dir is not None
        snap = self.state_dir / str(state["snapshot"])
        if Path(self.path).is_dir():
            return snap
        return snap / Path(self.path).name

    def _snapshot(self, generation: int) -> str | None:
        """Copy the rules (file or folder) into ``rules-GEN/`` of the runtime folder; keep the
        last two snapshots. Returns the snapshot's folder name."""
        if self.state_dir is None:
            return None
        name = f"rules-{generation}"
        dest = self.state_dir / name
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        for f in rules_files(Path(self.path)):
            shutil.copy2(f, dest / f.name)
        keep = {name, str(self._state.get("snapshot"))}
        for old in self.state_dir.glob("rules-*"):
            if old.name in keep:
                continue
            try:
                if old.is_dir() and int(old.name.split("-", 1)[1]) < generation - 2:
                    shutil.rmtree(old, ignore_errors=True)
            except ValueError:
                continue
        return name

    def _write(self, state: dict[str, Any]) -> None:
        self._state = state
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(state), encoding="utf-8")
            os.replace(tmp, self.state_file)
        except OSError as exc:
            log.error("cannot share the rules state with the other workers: %s", exc)
            return
        self._mtime = -1  # re-read once: another process may have written right after us

    def _follow(self, mtime: int) -> None:
        with self._lock:
            if mtime == self._mtime:
                return
            self._mtime = mtime
            state = self._read_state()
            if state is None:
                return
            generation = int(state.get("generation", 0))
            if generation == self._generation:
                return
            self._generation = generation
            if state.get("ok") and state.get("snapshot") and \
                    state.get("version") != self._rules.version:
                try:
                    self._rules = load_rules(self._snapshot_path(state), self.tz)
                    log.info("rules reloaded in pid %d: %s", os.getpid(), self._rules.summary())
                except RulesError as exc:  # a snapshot was checked: this means a bug
                    log.error("cannot load the rules snapshot; keeping the old rules: %s",
                              "; ".join(exc.problems))
                    return
            self._state = state
