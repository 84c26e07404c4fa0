"""The rules in force, and reloading them in every process without a restart.

A reload (``POST /-/reload`` in any worker, or ``SIGHUP`` to the ``bridge serve`` master) checks
the rules first: a version that fails is refused whole and the old one stays. The outcome is
written to a small JSON state file in the runtime folder ``bridge serve`` shares with its
workers (``BRIDGE_RUNTIME_DIR``); every worker stats that file before it uses the rules (about a
microsecond) and loads the new version when the generation moved on. Without a runtime folder
(tests, a single process) the state lives in memory.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from bridge.errors import RulesError
from bridge.rules.load import RuleSet, load_rules

log = logging.getLogger(__name__)

STATE_FILE = "rules-state.json"


class RulesHolder:
    """Holds the :class:`RuleSet` in force for one process.

    ``state_dir``: the folder shared by the processes of one ``bridge serve`` (or ``None``).
    Raises :class:`RulesError` at construction when the rules fail their checks.
    """

    def __init__(self, path: str, tz: str, state_dir: str | None = None) -> None:
        self.path = path
        self.tz = tz
        self.state_file = Path(state_dir) / STATE_FILE if state_dir else None
        self._lock = threading.Lock()
        self._rules = load_rules(path, tz)
        self._mtime = -1
        self._generation = 0
        self._state: dict[str, Any] = {"generation": 0, "ok": True, "problems": [],
                                       "success_ts": time.time(), "version": self._rules.version}
        if self.state_file is not None and self.state_file.exists():
            self._mtime = self.state_file.stat().st_mtime_ns
            self._state = self._read_state() or self._state
            self._generation = int(self._state.get("generation", 0))

    @property
    def rules(self) -> RuleSet:
        """The rules in force, after picking up a reload another process made."""
        if self.state_file is not None:
            try:
                mtime = self.state_file.stat().st_mtime_ns
            except OSError:
                mtime = -1
            if mtime != self._mtime:
                self._follow(mtime)
        return self._rules

    @property
    def state(self) -> dict[str, Any]:
        """``{"generation", "ok", "problems", "success_ts", "version"}`` of the last reload."""
        _ = self.rules
        return dict(self._state)

    def _read_state(self) -> dict[str, Any] | None:
        assert self.state_file is not None
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _follow(self, mtime: int) -> None:
        with self._lock:
            if mtime == self._mtime:
                return
            self._mtime = mtime
            state = self._read_state()
            if state is None:
                return
            self._state = state
            generation = int(state.get("generation", 0))
            if generation == self._generation:
                return
            self._generation = generation
            if state.get("ok") and state.get("version") != self._rules.version:
                try:
                    self._rules = load_rules(self.path, self.tz)
                    log.info("rules reloaded in pid %d: %s", os.getpid(), self._rules.summary())
                except RulesError as exc:
                    log.error("rules changed again since the reload; keeping the old ones: %s",
                              "; ".join(exc.problems))

    def reload(self) -> list[str]:
        """Load and check the rules again; returns the problems (empty when the new version is
        in force everywhere). On problems the old rules stay in force."""
        with self._lock:
            problems: list[str] = []
            try:
                new = load_rules(self.path, self.tz)
            except RulesError as exc:
                problems = exc.problems
                log.error("rules reload refused, old rules stay in force (%d problems):\n  %s",
                          len(problems), "\n  ".join(problems))
            else:
                self._rules = new
                log.info("rules reloaded: %s", new.summary())
            now = time.time()
            previous = self._read_state() if self.state_file is not None else self._state
            previous = previous or self._state
            self._generation = int(previous.get("generation", 0)) + 1
            self._state = {
                "generation": self._generation,
                "ok": not problems,
                "problems": problems,
                "success_ts": now if not problems else previous.get("success_ts", 0),
                "version": self._rules.version,
            }
            if self.state_file is not None:
                tmp = self.state_file.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(self._state), encoding="utf-8")
                os.replace(tmp, self.state_file)
                self._mtime = self.state_file.stat().st_mtime_ns
            return problems
