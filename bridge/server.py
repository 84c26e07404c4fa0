"""``bridge serve``: gunicorn run in-process, with the bridge's hooks.

* each web worker builds its own :class:`bridge.intake.service.Bridge` after the fork (no connection
  is shared across a fork) and takes webhooks; it does not deliver;
* the master (:class:`BridgeArbiter`) also forks and supervises one delivery process beside the
  workers (:mod:`bridge.deliveryproc`; not with ``--no-delivery``): started after the workers,
  started again (with a backoff) when it dies, stopped with them: on ``SIGTERM``/``SIGINT`` it
  finishes the SMS in hand and gives the rest of its claim back, within ``graceful_timeout``
  (then ``SIGKILL``); on ``SIGQUIT`` it is killed at once;
* ``SIGHUP`` to the master reloads the rules (checked first; refused whole when bad) instead
  of gunicorn's default of restarting the workers with the new configuration; the workers and
  the delivery process follow the new rules snapshot;
* every fork (web worker or delivery process) happens with the stop signals blocked, so that a
  ``SIGTERM`` arriving as a child starts is not lost (it used to leave that child running until
  the master killed it 20 s later);
* ``child_exit`` marks a dead worker's metrics files (prometheus_client multiprocess), and the
  supervisor those of a dead delivery process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from typing import Any

from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger as GunicornBaseLogger
from gunicorn.workers.gthread import ThreadWorker

from bridge.config import Settings
from bridge.deliveryproc import DeliveryProcess, signals_blocked, unblock_signals
from bridge.errors import StoreUnavailable
from bridge.intake.reload import RulesHolder

log = logging.getLogger("bridge")


class GunicornLogger(GunicornBaseLogger):  # type: ignore[misc]
    """Routes gunicorn's own lines through the bridge's root handler (text or JSON)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for lg in (self.error_log, self.access_log):
            lg.handlers = []
            lg.propagate = True


class BridgeArbiter(Arbiter):  # type: ignore[misc]
    """Gunicorn's master, with SIGHUP reloading the rules in every process, and the delivery
    process (``delivery``, ``None`` with ``--no-delivery``) supervised beside the workers."""

    holder: RulesHolder | None = None
    delivery: DeliveryProcess | None = None
    #: set by SIGQUIT (fast stop): the delivery process is killed at once, not waited for
    fast_stop = False

    def handle_hup(self) -> None:
        log.info("SIGHUP: reloading the rules")
        if self.holder is not None:
            self.holder.reload()

    def handle_quit(self) -> None:
        """SIGQUIT: gunicorn's fast stop, the delivery process killed at once."""
        self.fast_stop = True
        super().handle_quit()

    def spawn_worker(self) -> Any:
        """gunicorn's fork of a web worker, with the stop signals blocked across it (the
        worker unblocks them in :meth:`BridgeThreadWorker.init_signals`)."""
        with signals_blocked():
            return super().spawn_worker()

    def manage_workers(self) -> None:
        """Keep the web workers (gunicorn) and the delivery process running; runs on every
        pass of the master loop, so a death another ``waitpid`` collected is noticed too."""
        super().manage_workers()
        if self.delivery is not None:
            self.delivery.supervise(self.in_delivery_child)

    def reap_workers(self) -> None:
        """Collect the delivery process's exit with its own ``waitpid`` before gunicorn's
        ``waitpid(-1)``, which drops the pids it does not know."""
        if self.delivery is not None:
            self.delivery.reap()
        super().reap_workers()

    def stop(self, graceful: bool = True) -> None:
        """Stop the workers (gunicorn) and the delivery process together, both within
        ``graceful_timeout``; ``SIGTERM`` lets the delivery process finish the SMS in hand,
        a fast stop (``SIGQUIT``) kills it at once."""
        delivery = self.delivery
        if delivery is None or delivery.stopping and delivery.pid is None:
            super().stop(graceful)
            return
        deadline = time.monotonic() + self.cfg.graceful_timeout
        delivery.begin_stop(graceful=not self.fast_stop)
        super().stop(graceful)
        delivery.finish_stop(deadline)

    def in_delivery_child(self) -> None:
        """In the forked delivery process: drop what it inherited from the master, as
        gunicorn's workers do (signal handlers, the wake-up pipe of older gunicorn versions,
        the listening sockets, the workers' heartbeat files)."""
        for sig in [*self.SIGNALS, signal.SIGCHLD]:
            signal.signal(sig, signal.SIG_DFL)
        for fd in getattr(self, "PIPE", None) or ():
            os.close(fd)
        for listener in self.LISTENERS:
            listener.close()
        for worker in self.WORKERS.values():
            worker.tmp.close()


class BridgeApplication(BaseApplication):  # type: ignore[misc]
    """The gunicorn application: options from :class:`Settings`, the WSGI app per worker."""

    def __init__(self, settings: Settings, runtime: str, deliver: bool = True) -> None:
        self.settings = settings
        self.runtime = runtime
        #: whether the master runs the delivery process beside the web workers
        self.deliver = deliver
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options: dict[str, Any] = {
            "bind": f"{bind_host(s.bind)}:{s.port}",
            "workers": s.workers,
            # Threads, so that slow or idle clients hold a thread each rather than the whole
            # worker: 16 stalled connections must not delay a webhook past 1 s (docs/deployment.md,
            # Slow clients and malformed requests).
            "worker_class": "bridge.server.BridgeThreadWorker",
            "threads": s.threads,
            "worker_connections": max(1000, 4 * s.threads),
            "timeout": 30,
            "graceful_timeout": 20,
            "keepalive": 2,
            "logger_class": GunicornLogger,
            "loglevel": s.log_level,  # gunicorn's own lines follow BRIDGE_LOG_LEVEL too
            "post_worker_init": post_worker_init,
            "child_exit": child_exit,
            "forwarded_allow_ips": "*",
            "control_socket_disable": True,  # one per user by default: instances would clash
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from bridge.web.app import create_app

        return create_app(self.settings, state_dir=self.runtime)

    def run(self) -> None:
        holder = RulesHolder(self.settings.rules_path, self.settings.tz, self.runtime,
                             retention=self.settings.retention)
        holder.publish()
        BridgeArbiter.holder = holder
        BridgeArbiter.delivery = (DeliveryProcess(self.settings, self.runtime) if self.deliver
                                  else None)
        from bridge.intake.service import Bridge

        probe = Bridge(self.settings, state_dir=self.runtime)
        for line in probe.describe():
            log.warning("%s", line) if "DRY-RUN" in line or "OPEN" in line or line.startswith(
                "WARNING") else log.info(
                "%s", line)
        try:
            for warning in probe.store.config_warnings():
                log.warning("store: %s", warning)
        except StoreUnavailable as exc:
            log.error("store not reachable at start (webhooks get 503 until it is): %s", exc)
        probe.store.close()
        s = self.settings
        log.info("bind: %s:%d (%d workers x %d threads)", bind_host(s.bind), s.port, s.workers,
                 s.threads)
        BridgeArbiter(self).run()


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's answer to a request it cannot parse (414, 431, a bad Content-Length, ...)
    as JSON ``{"error": ...}`` instead of its HTML page, like every answer of the bridge."""
    body = json.dumps({"error": f"{reason}: {mesg}" if mesg else reason},
                      ensure_ascii=True).encode("ascii")
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


class BridgeThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's threaded worker, answering its own request errors in JSON: gunicorn has no
    setting for that page, so its ``util.write_error`` is replaced in the worker process."""

    def init_process(self) -> None:
        gunicorn_util.write_error = write_json_error
        super().init_process()

    def init_signals(self) -> None:
        """gunicorn's handlers, then the signals the master blocked across the fork
        (:meth:`BridgeArbiter.spawn_worker`) are let through: one sent meanwhile is handled
        now."""
        super().init_signals()
        unblock_signals()

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        """Close, rather than drain, a connection with more than 64 KiB of body the bridge left
        unread (a 413 on its Content-Length): as with the sync worker, the client has its answer
        at once instead of after a drain of up to 5 s. Smaller leftovers are drained, so the
        connection stays reusable as announced."""
        body = getattr(getattr(conn.parser, "mesg", None), "body", None)
        if keepalive and getattr(getattr(body, "reader", None), "length", 0) > 65536:
            return False
        return bool(super()._keepalive_after(conn, keepalive))


def bind_host(address: str) -> str:
    """The host part of gunicorn's ``bind``: an IPv6 address in brackets."""
    return f"[{address.strip('[]')}]" if ":" in address else address


def post_worker_init(worker: Any) -> None:
    """Log that this web worker has loaded the app and takes webhooks (it does not deliver)."""
    log.info("worker %d: taking webhooks", os.getpid())


def child_exit(server: Any, worker: Any) -> None:
    """Mark a dead worker's metrics files so gauges of live workers stay correct."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def run(settings: Settings, runtime: str, deliver: bool = True) -> None:
    """Run gunicorn in the foreground until it is stopped; ``deliver=False`` leaves delivery
    to ``bridge worker``."""
    if not deliver:
        log.info("delivery: off (--no-delivery): no delivery process; run `bridge worker`")
    BridgeApplication(settings, runtime, deliver).run()
