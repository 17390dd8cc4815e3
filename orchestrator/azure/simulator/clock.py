"""Simulated time: tests never sleep for real.

Every wait in the simulated cloud — a long-running operation's duration, a poller's sleep, a
retry's back-off — reads or advances this clock.  ``realtime=True`` makes ``sleep`` really sleep
(benchmarks measuring how apply behaves against a slow cloud).
"""

from __future__ import annotations

import threading
import time


class VirtualClock:
    def __init__(self, start: float = 1_700_000_000.0, *, realtime: bool = False) -> None:
        self._now = start
        self.realtime = realtime
        self._lock = threading.Lock()
        self.slept = 0.0  # total simulated seconds slept, for assertions

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)

    def sleep(self, seconds: float) -> None:
        if self.realtime:
            time.sleep(seconds)
        with self._lock:
            self.slept += max(0.0, seconds)
        self.advance(seconds)
