"""Simulated time: tests never sleep for real.

Every wait in the simulated cloud — a long-running operation's duration, a poller's sleep, a
retry's back-off — reads or advances this clock.  ``realtime=True`` makes it a wall clock
(benchmarks measuring how apply behaves against a slow cloud): ``sleep`` really sleeps and time
passes by itself, so threads sleeping side by side share the same seconds, as they do against
Azure.  (On the virtual clock every thread's sleep advances the one clock: concurrent waits add up.)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator


class VirtualClock:
    def __init__(self, start: float = 1_700_000_000.0, *, realtime: bool = False) -> None:
        self._now = start  # realtime: the time at _t0
        self._t0 = time.monotonic()
        self.realtime = realtime
        self._lock = threading.Lock()
        self.slept = 0.0  # total simulated seconds slept, for assertions
        self._held = 0

    def now(self) -> float:
        with self._lock:
            return self._now + (time.monotonic() - self._t0 if self.realtime else 0.0)

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
        with self._lock:
            self.slept += max(0.0, seconds)
        if self.realtime:
            time.sleep(max(0.0, seconds))  # the wall clock moved by itself
        else:
            self.advance(seconds)
