"""The safety filter between the policy and the robot.

Per cycle, ``filter(candidate)`` returns the action to send:
- no candidate (the queue ran dry by the deadline) -> hold the last safe action, or the
  configured safe action before any was sent; counted as a watchdog hold;
- a non-finite candidate -> the same hold, counted as rejected;
- otherwise clip to the bounds, then limit the change from the last sent action to
  ``max_delta`` per step.
A hold longer than ``max_hold_cycles`` raises ``WatchdogTimeout`` so the loop stops the
robot rather than hold forever. Nothing non-finite can leave ``filter``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class WatchdogTimeout(RuntimeError):
    pass


@dataclass
class SafetyStats:
    holds: int = 0
    rejected_non_finite: int = 0
    clipped: int = 0
    rate_limited: int = 0
    longest_hold: int = 0


@dataclass
class SafetyFilter:
    low: np.ndarray
    high: np.ndarray
    safe_action: np.ndarray
    max_delta: np.ndarray | float | None = None
    max_hold_cycles: int = 50
    stats: SafetyStats = field(default_factory=SafetyStats)

    def __post_init__(self):
        self.low = np.asarray(self.low, np.float32)
        self.high = np.asarray(self.high, np.float32)
        self.safe_action = np.asarray(self.safe_action, np.float32)
        if not (np.isfinite(self.safe_action).all() and np.all(self.low <= self.safe_action)
                and np.all(self.safe_action <= self.high)):
            raise ValueError(f"safe action {self.safe_action} must be finite and within bounds")
        self.last: np.ndarray | None = None
        self._hold = 0

    def reset(self) -> None:
        """A new episode: no last action, and fresh per-episode counts."""
        self.last = None
        self._hold = 0
        self.stats = SafetyStats()

    def _hold_action(self) -> np.ndarray:
        self.stats.holds += 1
        self._hold += 1
        self.stats.longest_hold = max(self.stats.longest_hold, self._hold)
        if self._hold > self.max_hold_cycles:
            raise WatchdogTimeout(f"no valid action for {self._hold} cycles (limit {self.max_hold_cycles})")
        return (self.last if self.last is not None else self.safe_action).copy()

    def filter(self, candidate: np.ndarray | None) -> np.ndarray:
        if candidate is None:
            return self._hold_action()
        a = np.asarray(candidate, dtype=np.float32)
        if a.shape != self.safe_action.shape or not np.isfinite(a).all():
            self.stats.rejected_non_finite += 1
            return self._hold_action()
        self._hold = 0
        clipped = np.clip(a, self.low, self.high)
        self.stats.clipped += int(not np.array_equal(clipped, a))
        if self.max_delta is not None and self.last is not None:
            limited = np.clip(clipped, self.last - self.max_delta, self.last + self.max_delta)
            self.stats.rate_limited += int(not np.array_equal(limited, clipped))
            clipped = limited
        self.last = clipped.astype(np.float32)
        return self.last.copy()
