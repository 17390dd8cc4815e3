"""Simulated time: tests never sleep for real.

Every wait in the simulated cloud — a long-running operation's duration, a poller's sleep, a
retry's back-off — reads or advances this clock.  ``realtime=True`` makes ``sleep`` really sleep
(benchmarks measuring how apply behaves against a slow cloud).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator


class VirtualClock:
    def __init__(self, start: float = 1_700_000_000.0, *, realtime: bool = False) -> None:
        self._now = start
        self.realtime = realtime
        self._lock = threading.Lock()
        self.slept = 0.0  # total simulated seconds slept, for assertions
        self._held = 0

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Freeze simulated time: sleeps (a poller's, in its background thread) only yield briefly
        in real time, so a test can act while an operation is still running."""
        with self._lock:
            self._held += 1
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1

    def sleep(self, seconds: float) -> None:
        if self._held:
            time.sleep(0.02)
            return
        if self.realtime:
            time.sleep(seconds)
        with self._lock:
            self.slept += max(0.0, seconds)
        self.advance(seconds)
