"""User-space link emulator: two TUN fds joined by two :class:`DelayLine` s.

The kernel here has no ``netem``, so delay and jitter are added in user space.
:class:`TunBridge` runs one thread that reads IP packets from either TUN fd, pushes
them into the :class:`DelayLine` of that direction and writes them to the other fd
when they become ready.  The bridge runs in whatever namespace created it (normally
the root namespace); the two TUN devices usually sit in two host namespaces.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from types import TracebackType

from accessfabric.sim.delay_line import DelayLine, DelayLineStats

__all__ = ["DelayLine", "DelayLineStats", "TunBridge"]

_MAX_PACKET = 65535
_MAX_READS_PER_WAKE = 64
_IDLE_WAIT_S = 0.5


class TunBridge:
    """Forward packets ``fd_a -> a_to_b -> fd_b`` and ``fd_b -> b_to_a -> fd_a``.

    Both fds must be non-blocking.  The bridge owns them once started: :meth:`stop`
    closes them (pass ``close_fds=False`` to keep them).  Packets the kernel refuses on
    write are counted in :attr:`write_errors` and otherwise ignored, like a lossy wire.
    """

    def __init__(
        self,
        fd_a: int,
        fd_b: int,
        a_to_b: DelayLine,
        b_to_a: DelayLine,
        *,
        clock: Callable[[], float] = time.monotonic,
        close_fds: bool = True,
        name: str = "tun-bridge",
    ) -> None:
        self.a_to_b = a_to_b
        self.b_to_a = b_to_a
        self.write_errors = 0
        self.error: BaseException | None = None
        self._fd_a = fd_a
        self._fd_b = fd_b
        self._clock = clock
        self._close_fds = close_fds
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False

    def start(self) -> TunBridge:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop forwarding, join the thread, close the fds; raise if the thread failed."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        os.write(self._wake_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout)
        fds = [self._wake_r, self._wake_w]
        if self._close_fds:
            fds += [self._fd_a, self._fd_b]
        for fd in fds:
            os.close(fd)
        if self._thread.is_alive():
            raise RuntimeError(f"{self._thread.name} did not stop within {timeout}s")
        if self.error is not None:
            raise RuntimeError(f"{self._thread.name} failed: {self.error!r}") from self.error

    def __enter__(self) -> TunBridge:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                readable, _, _ = select.select(
                    [self._fd_a, self._fd_b, self._wake_r], [], [], self._wait_time()
                )
                for fd in readable:
                    if fd == self._fd_a:
                        self._drain(fd, self.a_to_b)
                    elif fd == self._fd_b:
                        self._drain(fd, self.b_to_a)
                self._deliver(self.a_to_b, self._fd_b)
                self._deliver(self.b_to_a, self._fd_a)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def _wait_time(self) -> float:
        pending = (self.a_to_b.next_deadline(), self.b_to_a.next_deadline())
        deadlines = [d for d in pending if d is not None]
        if not deadlines:
            return _IDLE_WAIT_S
        return min(_IDLE_WAIT_S, max(0.0, min(deadlines) - self._clock()))

    def _drain(self, fd: int, line: DelayLine) -> None:
        for _ in range(_MAX_READS_PER_WAKE):
            try:
                packet = os.read(fd, _MAX_PACKET)
            except BlockingIOError:
                return
            line.push(packet, self._clock())

    def _deliver(self, line: DelayLine, fd: int) -> None:
        for packet in line.pop_ready(self._clock()):
            try:
                os.write(fd, packet)
            except OSError:
                self.write_errors += 1
