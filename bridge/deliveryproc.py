"""The delivery process of ``bridge serve``: one process beside the web workers, forked and
supervised by gunicorn's master (:class:`bridge.server.BridgeArbiter`).

Delivery used to be a thread in every web worker, sharing its GIL and its SQLite write lock with
the webhooks; in a process of its own it delays no request. One ``bridge serve`` still runs
everything (docs/deployment.md, The delivery process).

* The master forks it after the web workers; the child drops what it inherited from the master
  (signal handlers, listening sockets, the workers' heartbeat files), builds its own
  :class:`bridge.intake.service.Bridge` (no connection is shared across the fork) and runs
  :meth:`bridge.deliver.deliverer.Deliverer.run_forever`, which also runs the due escalation
  steps. Its title (``/proc/PID/comm``, what ``ps -o comm`` and ``top`` show) is
  ``bridge-delivery``.
* ``SIGTERM``/``SIGINT`` to it: the SMS in hand is finished (bounded by ``BRIDGE_JUHE_TIMEOUT``)
  and the rest of its claim is given back to the store; ``SIGQUIT``: it exits at once. It
  ignores ``SIGHUP`` (the master reloads the rules; the child's
  :class:`~bridge.intake.reload.RulesHolder` follows the rules snapshot on its next pass) and stops
  by itself when its master is gone.
* When it dies, the master logs how and starts a new one after :class:`Backoff`.
* Watched: the child stamps a clock shared with the master (:class:`PassClock`) after each
  finished pass of its loop; a child with no stamp for ``BRIDGE_DELIVERY_STALL`` is hung (a
  stuck socket, a deadlock, ``SIGSTOP``): the master kills it (``SIGKILL``) and starts a new
  one. Its claims come back to the store when their lease ends (docs/operations.md, "Watched
  delivery").
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bridge.config import Settings

log = logging.getLogger("bridge.delivery")

#: The title of the delivery process (15 characters: the most ``/proc/PID/comm`` holds).
TITLE = "bridge-delivery"

#: Signals held back across a fork (see :func:`signals_blocked`).
FORK_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                          signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU,
                          signal.SIGWINCH, signal.SIGCHLD})


@contextmanager
def signals_blocked() -> Iterator[None]:
    """Block :data:`FORK_SIGNALS` in this thread for the ``with`` body (a fork).

    A signal sent meanwhile waits: in the parent until the block ends, in the child until it
    calls :func:`unblock_signals` once its own handlers are set. Without this, a ``SIGTERM``
    sent by gunicorn's master to a child it has just forked is caught by the child's copy of the
    master's handler, queued where nobody reads it, and lost: the child runs on until the master
    kills it ``graceful_timeout`` (20 s) later.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def unblock_signals() -> None:
    """End the block :func:`signals_blocked` left in a forked child (its handlers are set)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_SIGNALS)


class Backoff:
    """How long to wait before starting a new delivery process: ``first`` seconds after a
    death, doubling up to ``most`` while each one dies young; back to ``first`` once one has
    lived ``healthy`` seconds."""

    def __init__(self, first: float = 1.0, most: float = 30.0, healthy: float = 60.0) -> None:
        self.first = first
        self.most = most
        self.healthy = healthy
        self._next = first

    def after_death(self, lived: float) -> float:
        """The wait (seconds) before the next start, for a process that lived ``lived``
        seconds."""
        if lived >= self.healthy:
            self._next = self.first
        delay = self._next
        self._next = min(self._next * 2, self.most)
        return delay


def describe_status(status: int | None) -> str:
    """``os.waitpid``'s ``status`` in words: ``exit code 1``, ``killed by SIGKILL``; ``None``
    (reaped elsewhere) -> ``exit status unknown``."""
    if status is None:
        return "exit status unknown"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


class PassClock:
    """When the delivery process last finished a pass of its loop, in ``time.monotonic()``
    seconds (one clock for every process on the machine), in memory shared across the fork:
    the child calls :meth:`stamp`, the master reads :meth:`idle`. One aligned double, written
    by one process and read by the other, so no lock."""

    def __init__(self) -> None:
        self._at = multiprocessing.RawValue(ctypes.c_double, time.monotonic())

    def stamp(self) -> None:
        """A pass has finished (now)."""
        self._at.value = time.monotonic()

    def idle(self) -> float:
        """Seconds since the last :meth:`stamp` (or since the clock was made)."""
        return time.monotonic() - float(self._at.value)


class DeliveryProcess:
    """The master's handle on the delivery process: start it, notice its death, start a new
    one, stop it. Not thread-safe: gunicorn's master loop is its only caller.

    In the forked child, ``in_child`` (given to :meth:`supervise`) runs first, dropping what the
    child inherited from the master; ``main(settings, runtime, master_pid, stamp)`` then runs
    there and returns the exit code (default :func:`delivery_main`); it calls ``stamp()`` after
    each finished pass of its loop, and a process that does not for
    ``settings.delivery_stall`` seconds is killed and started again. ``backoff``: the waits
    between restarts (default :class:`Backoff`).
    """

    def __init__(self, settings: Settings, runtime: str,
                 main: Callable[[Settings, str, int, Callable[[], None]], int] | None = None,
                 backoff: Backoff | None = None) -> None:
        self.settings = settings
        self.runtime = runtime
        self.main = main or delivery_main
        self.backoff = backoff or Backoff()
        self.pid: int | None = None
        self.started_at = 0.0
        self.next_start = 0.0
        self.starts = 0
        #: set once the master stops: no new process is started after that
        self.stopping = False
        self.passes = PassClock()
        #: set when the running process was killed as hung (so that it is killed once)
        self.killed_hung = False

    # -- supervision (every pass of the master loop) ---------------------------------------
    def supervise(self, in_child: Callable[[], None]) -> None:
        """Start the process when none is running and its backoff is over; kill it when it
        is hung (:meth:`kill_if_hung`)."""
        if self.stopping:
            return
        self.reap()
        if self.pid is not None:
            self.kill_if_hung()
        elif time.monotonic() >= self.next_start:
            self.start(in_child)

    def kill_if_hung(self) -> bool:
        """``SIGKILL`` the process when it has finished no pass of its loop for
        ``BRIDGE_DELIVERY_STALL`` (:class:`PassClock`); :meth:`reap` then collects it and a new
        one starts after the backoff. Returns whether it was killed now."""
        idle = self.passes.idle()
        if self.pid is None or self.killed_hung or idle < self.settings.delivery_stall:
            return False
        log.error("delivery process %d finished no pass of its loop for %.1fs "
                  "(BRIDGE_DELIVERY_STALL %gs): killed, its claims come back after their lease",
                  self.pid, idle, self.settings.delivery_stall)
        self.killed_hung = True
        self.signal(signal.SIGKILL)
        return True

    def reap(self) -> None:
        """Collect the process's exit if it died (its own ``waitpid``, never blocking). An
        exit another ``waitpid`` collected first (gunicorn's ``waitpid(-1)``) still counts,
        its status unknown."""
        if self.pid is None:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            self._exited(None)
            return
        if pid:
            self._exited(status)

    def start(self, in_child: Callable[[], None]) -> int:
        """Fork the delivery process; returns its pid (in the parent only: the child never
        returns from here)."""
        parent = os.getpid()
        self.passes.stamp()  # its first pass is due within the stall time from now
        self.killed_hung = False
        with signals_blocked():
            pid = os.fork()
            if pid == 0:
                self._child(in_child, parent)
        self.pid, self.started_at = pid, time.monotonic()
        self.starts += 1
        if self.starts == 1:
            log.info("delivery: runs in process %d (beside the web workers)", pid)
        else:
            log.warning("delivery: restarted in process %d", pid)
        return pid

    def _child(self, in_child: Callable[[], None], parent: int) -> None:
        code = 1
        try:
            stop_with_parent(parent)  # SIGTERM is blocked until the signal thread waits for it
            in_child()
            code = self.main(self.settings, self.runtime, parent, self.passes.stamp)
        except BaseException:
            log.exception("delivery process %d failed", os.getpid())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _exited(self, status: int | None) -> None:
        from prometheus_client import multiprocess

        pid, self.pid = self.pid, None
        assert pid is not None
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
        how = describe_status(status)
        if self.stopping:
            log.info("delivery process %d stopped (%s)", pid, how)
            return
        delay = self.backoff.after_death(time.monotonic() - self.started_at)
        self.next_start = time.monotonic() + delay
        log.error("delivery process %d died (%s) after %.1fs; a new one starts in %.0fs", pid,
                  how, time.monotonic() - self.started_at, delay)

    # -- stopping ---------------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process, if one is running."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def begin_stop(self, graceful: bool) -> None:
        """No more starts; ``SIGTERM`` (``graceful``: it finishes the SMS in hand) or
        ``SIGKILL`` to the process."""
        self.stopping = True
        self.signal(signal.SIGTERM if graceful else signal.SIGKILL)

    def finish_stop(self, deadline: float) -> None:
        """Wait for the process to exit until ``deadline`` (``time.monotonic()`` seconds), then
        ``SIGKILL`` it and collect its exit."""
        while self.pid is not None and time.monotonic() < deadline:
            self.reap()
            if self.pid is not None:
                time.sleep(0.05)
        if self.pid is None:
            return
        log.warning("delivery process %d did not stop in time: killed", self.pid)
        self.signal(signal.SIGKILL)
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            self._exited(None)
            return
        self._exited(status)


# -- the child ------------------------------------------------------------------------------
def set_title(title: str = TITLE) -> None:
    """Name this process ``title`` for ``ps``/``top`` (``/proc/self/comm``, Linux), and in
    gunicorn's style when setproctitle is installed."""
    from gunicorn import util as gunicorn_util

    gunicorn_util._setproctitle(title)
    try:
        with open("/proc/self/comm", "w", encoding="ascii") as f:
            f.write(title[:15])
    except OSError:
        pass


#: The signals that stop delivery gracefully (the SMS in hand is finished).
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def stop_on_signals(stop: threading.Event, *, parent: int | None = None,
                    on_hup: Callable[[], object] | None = None,
                    every: float = 1.0) -> threading.Thread:
    """Set ``stop`` on ``SIGTERM``/``SIGINT`` (and call ``on_hup`` on ``SIGHUP`` when given)
    from a thread of its own that waits for them (``sigwait``); returns that thread.

    Never from a signal handler: a handler runs in the main thread between two bytecodes, maybe
    while that thread holds ``stop``'s own lock (inside ``stop.wait()``), and ``stop.set()``
    there waits for that lock forever (CPython's signal docs warn of it; a ``bridge serve``
    delivery process hung so once). Call it from the main thread before it starts other
    threads: the signals are blocked in it, and the threads started later inherit the block.

    ``sigwait``, not ``sigtimedwait``: on Linux a stop and continue (``SIGSTOP``/``SIGCONT``,
    ``docker pause``) interrupts ``sigtimedwait``, and CPython 3.11's ``signal.sigtimedwait``
    then answers a siginfo it never filled when its timeout has passed meanwhile (the signal
    thread died on ``ValueError: 1263049536 is not a valid Signals``); glibc's ``sigwait``
    waits on through such an interruption.

    ``parent``: also set ``stop`` once it is no longer this process's parent (the master died
    without stopping us: SIGKILL, OOM). On Linux :func:`stop_with_parent` has the kernel send
    ``SIGTERM`` then; a second thread checks ``getppid()`` every ``every`` seconds as well
    (other systems, and a master that died before the request took effect).
    """
    signals = STOP_SIGNALS | ({signal.SIGHUP} if on_hup is not None else frozenset())
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    thread = threading.Thread(target=_wait_for_signals, args=(stop, signals, parent, on_hup),
                              name="signals", daemon=True)
    thread.start()
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(stop, parent, every), name="parent",
                         daemon=True).start()
    return thread


def _master_gone(stop: threading.Event, parent: int) -> bool:
    """Set ``stop`` (and log it) when ``parent`` is no longer this process's parent."""
    if os.getppid() == parent:
        return False
    if not stop.is_set():
        log.warning("delivery process %d: the master (pid %d) is gone; stopping", os.getpid(),
                    parent)
        stop.set()
    return True


def _watch_parent(stop: threading.Event, parent: int, every: float) -> None:
    while not stop.wait(every):
        if _master_gone(stop, parent):
            return


def _wait_for_signals(stop: threading.Event, signals: frozenset[int], parent: int | None,
                      on_hup: Callable[[], object] | None) -> None:
    while True:
        sig = signal.sigwait(signals)
        if sig == signal.SIGHUP and on_hup is not None:
            try:
                on_hup()
            except Exception:
                log.exception("SIGHUP: reloading the rules failed")
        elif sig in STOP_SIGNALS:
            if parent is not None and _master_gone(stop, parent):  # stop_with_parent's SIGTERM
                continue
            log.info("%s: delivery stops after the SMS in hand", signal.Signals(sig).name)
            stop.set()


#: ``prctl`` option: the signal this process gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


def stop_with_parent(parent: int, sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``, through ctypes); returns False where that is not available,
    or when ``parent`` (the pid that forked us) is already gone, which the request would miss.
    Call it first thing in a forked child."""
    if not sys.platform.startswith("linux"):
        return os.getppid() == parent
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    return os.getppid() == parent


def delivery_main(settings: Settings, runtime: str, parent: int,
                  stamp: Callable[[], None] | None = None) -> int:
    """The delivery process's body: deliver until ``SIGTERM``/``SIGINT`` or the master
    ``parent`` is gone, with a :class:`~bridge.intake.service.Bridge` of its own on the runtime
    folder ``runtime`` (the rules snapshot), calling ``stamp()`` after each finished pass of its
    loop; returns the exit code (0).

    Raises what building the bridge raises (``RulesError``, ``ValueError``): the master logs it
    and starts a new process after the backoff.
    """
    set_title()
    stop = threading.Event()
    stop_on_signals(stop, parent=parent)  # SIGTERM and SIGINT stay blocked but in its thread
    signal.signal(signal.SIGQUIT, lambda *_: os._exit(0))
    for sig in FORK_SIGNALS - STOP_SIGNALS - {signal.SIGQUIT, signal.SIGCHLD}:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_SIGNALS - STOP_SIGNALS)
    from bridge.intake.service import Bridge

    bridge = Bridge(settings, state_dir=runtime)
    log.info("delivery process %d started", os.getpid())
    try:
        bridge.deliverer(on_pass=stamp).run_forever(stop, settings.delivery_interval)
    finally:
        bridge.store.close()
    log.info("delivery process %d stopped", os.getpid())
    return 0
