"""A queue of time-stamped actions fed by action chunks.

Action i of a chunk is due at ``t_first + i * period`` where ``t_first`` is the timestamp of
the observation the chunk was computed from (the chunk's first executed action belongs to
that observation). ``pop(now)`` drops actions whose time has passed and returns the one due
now. When a new chunk arrives, its actions already in the past are dropped (a late chunk),
and where it overlaps the queue:
- ``replace``: the new chunk wins;
- ``blend``: per overlapping step j (0 = earliest), ``w = exp(-j / tau)`` weighs the queued
  action and ``1 - w`` the new one, so the switch is smooth and ends on the new chunk.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MODES = ("replace", "blend")


@dataclass
class QueueStats:
    pushed: int = 0
    dropped_late: int = 0  # actions of an arriving chunk already past due
    expired: int = 0  # queued actions never sent because their time passed
    blended: int = 0


class ActionQueue:
    def __init__(self, period_s: float, mode: str = "replace", blend_tau: float = 2.0):
        if mode not in MODES:
            raise ValueError(f"unknown overlap mode {mode!r}; known: {MODES}")
        self.period_s, self.mode, self.blend_tau = period_s, mode, blend_tau
        self._times: list[float] = []
        self._actions: list[np.ndarray] = []
        self.stats = QueueStats()

    def __len__(self) -> int:
        return len(self._times)

    def clear(self) -> None:
        self._times.clear()
        self._actions.clear()

    def _slot(self, t: float) -> int:
        return int(round(t / self.period_s))

    def push(self, actions: np.ndarray, t_first: float, now: float) -> None:
        """Add a chunk ``(n, A)`` whose first action is due at ``t_first``."""
        actions = np.asarray(actions, dtype=np.float32)
        half = 0.5 * self.period_s
        queued = {self._slot(t): (t, a) for t, a in zip(self._times, self._actions)}
        j = 0
        for i, a in enumerate(actions):
            t = t_first + i * self.period_s
            if t < now - half:
                self.stats.dropped_late += 1
                continue
            slot = self._slot(t)
            if slot in queued and self.mode == "blend":
                w = math.exp(-j / self.blend_tau)
                a = w * queued[slot][1] + (1 - w) * a
                self.stats.blended += 1
                j += 1
            queued[slot] = (t, a)
            self.stats.pushed += 1
        items = sorted(queued.values(), key=lambda ta: ta[0])
        self._times = [t for t, _ in items]
        self._actions = [a for _, a in items]

    def pop(self, now: float) -> np.ndarray | None:
        """The action due at ``now`` (within half a period), dropping expired ones."""
        half = 0.5 * self.period_s
        while self._times and self._times[0] < now - half:
            self._times.pop(0)
            self._actions.pop(0)
            self.stats.expired += 1
        if self._times and self._times[0] <= now + half:
            self._times.pop(0)
            return self._actions.pop(0)
        return None

    def remaining(self, now: float) -> np.ndarray:
        """Queued actions not yet due, ``(n, A)`` (what a warm start or inpainting can use)."""
        keep = [a for t, a in zip(self._times, self._actions) if t >= now - 0.5 * self.period_s]
        return np.stack(keep) if keep else np.zeros((0, 0), np.float32)
