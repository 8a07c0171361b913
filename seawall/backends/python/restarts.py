"""How often a python-backend instance's stub may crash and be started again, as Triton starts a crashed stub
again: more than MAX_RESTARTS crashes within RESTART_WINDOW_S and the instance stays down (its model version goes
UNAVAILABLE), so a model that crashes on every request cannot keep the server spawning processes.

Imports only the standard library.
"""

from __future__ import annotations

import time

MAX_RESTARTS = 3
RESTART_WINDOW_S = 60.0


class RestartBudget:
    """The recent crashes of one instance."""

    def __init__(self) -> None:
        self._crashes: list[float] = []  # monotonic times of recent crashes

    def crashed(self, name: str) -> str | None:
        """Count a crash of instance `name` now: why it stays down, or None (its stub may start again)."""
        now = time.monotonic()
        self._crashes = [t for t in self._crashes if now - t < RESTART_WINDOW_S] + [now]
        if len(self._crashes) > MAX_RESTARTS:
            return f"model instance '{name}' crashed {len(self._crashes)} times in {RESTART_WINDOW_S:.0f} s"
        return None
