"""Waking the delivery process of one ``bridge serve`` when a webhook stored an SMS that is due
now, so it is sent within milliseconds instead of at the next poll (docs/operations.md, "Prompt
delivery").

The master makes one local datagram socket pair before it forks anything
(:meth:`LocalWake.create`) and names its pid and the two descriptors in ``BRIDGE_WAKE_FDS``;
every process it forks finds them there (:meth:`LocalWake.from_env`), and no other process
takes them (a descriptor number means nothing in a process the variable leaked to). A web
worker that stored a due SMS sends one one-byte datagram (:meth:`LocalWake.notify`: one
non-blocking write, never waiting); the delivery process waits for one with a timeout
(:meth:`LocalWake.wait`). Datagrams sent while nobody waits stay queued (a few; when the queue
is full a wake is pending anyway, and the write is dropped), so a wake sent during a pass starts
the next pass at once. The descriptors are
used raw (``os``/``select``), not through ``socket`` objects, whose garbage collection would
close them in the master before a later fork.

Redis stores wake the deliverers of every instance themselves (a ``PUBLISH`` in the record
script, :meth:`bridge.store.redis.store.RedisStore.work_listener`); this is for SQLite, whose
deliverers all run on one machine.
"""

from __future__ import annotations

import os
import select
import socket
import stat
from collections.abc import MutableMapping

#: The environment variable naming the pair, ``"MASTER_PID:READ_FD,WRITE_FD"``.
ENV = "BRIDGE_WAKE_FDS"


class LocalWake:
    """The two ends of the local wake socket pair: ``read_fd`` (the delivery process waits on
    it) and ``write_fd`` (web workers send to it); both non-blocking."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd

    @classmethod
    def create(cls, environ: MutableMapping[str, str] = os.environ) -> LocalWake:
        """Make the pair (in the master, before any fork) and name it in ``environ``. Raises
        ``OSError`` when the system refuses a socket."""
        read, write = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        fds = read.detach(), write.detach()  # kept open for the life of the process
        for fd in fds:
            os.set_blocking(fd, False)
        environ[ENV] = f"{os.getpid()}:{fds[0]},{fds[1]}"
        return cls(*fds)

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] = os.environ) -> LocalWake | None:
        """The pair :meth:`create` named in ``environ`` when this process made it or was
        forked by the process that did, and both are sockets; else ``None`` (no ``bridge
        serve`` delivery process to wake: ``bridge worker``, ``--no-delivery``, tests)."""
        master, _, fds = environ.get(ENV, "").partition(":")
        try:
            pid = int(master)
            read, write = (int(x) for x in fds.split(","))
            if pid not in (os.getpid(), os.getppid()) or not all(
                    stat.S_ISSOCK(os.fstat(fd).st_mode) for fd in (read, write)):
                return None
        except (ValueError, OSError):
            return None
        return cls(read, write)

    def notify(self) -> None:
        """Wake the delivery process (never blocks, never raises: a full queue already holds
        a wake, and without a reader the next poll finds the SMS)."""
        try:
            os.write(self.write_fd, b"w")
        except OSError:
            pass

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a wake; True when one came (every wake queued
        so far is consumed, so one pass answers them all)."""
        try:
            ready, _, _ = select.select([self.read_fd], [], [], max(timeout, 0.0))
        except (OSError, ValueError):
            return False
        if not ready:
            return False
        while True:
            try:
                os.read(self.read_fd, 64)
            except OSError:  # BlockingIOError: drained
                return True
