"""What each phase of a step cost, in seconds (the ``seconds`` of a step's result)."""
from __future__ import annotations

import time


class Stopwatch:
    """Named laps in seconds (what each phase of a step cost)."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 1)
        self._t = now
