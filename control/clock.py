"""Fixed-rate timing: absolute deadlines, sleep-then-spin, per-cycle statistics.

Cycle k is due at ``t0 + k * period`` (never ``sleep(period)``, which drifts by the compute
time of every cycle). ``wait()`` sleeps until ~``spin_s`` before the deadline, then spins.
A cycle that ends after its deadline is an overrun: the keeper skips ahead to the next
deadline still in the future (counting the skipped cycles) instead of firing a burst of
late cycles, and warns once per ``warn_every`` overruns.

The clock and sleep functions are injectable so tests can run on a fake clock.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class CycleStats:
    period_s: float
    starts: list[float] = field(default_factory=list)  # actual start time of each cycle
    compute_s: list[float] = field(default_factory=list)  # work time of each cycle
    overruns: int = 0
    skipped_cycles: int = 0

    def summary(self) -> dict:
        starts = np.asarray(self.starts)
        periods = np.diff(starts) if len(starts) > 1 else np.zeros(0)
        jitter = np.abs(periods - self.period_s) * 1000 if len(periods) else np.zeros(1)
        compute = np.asarray(self.compute_s) * 1000 if self.compute_s else np.zeros(1)
        return {
            "cycles": len(self.starts),
            "period_ms": self.period_s * 1000,
            "mean_period_ms": float(periods.mean() * 1000) if len(periods) else float("nan"),
            "period_jitter_ms": {"p50": float(np.percentile(jitter, 50)), "p99": float(np.percentile(jitter, 99)),
                                 "max": float(jitter.max())},
            "compute_ms": {"p50": float(np.percentile(compute, 50)), "p99": float(np.percentile(compute, 99)),
                           "max": float(compute.max())},
            "overruns": self.overruns,
            "skipped_cycles": self.skipped_cycles,
        }


class RateKeeper:
    def __init__(self, rate_hz: float, spin_s: float = 0.001, warn_every: int = 100,
                 clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep):
        if not rate_hz > 0 or not math.isfinite(rate_hz):
            raise ValueError(f"rate must be a positive number of Hz, got {rate_hz}")
        self.period_s = 1.0 / rate_hz
        self.spin_s, self.warn_every = spin_s, warn_every
        self.clock, self.sleep = clock, sleep
        self.stats = CycleStats(self.period_s)
        self.t0: float | None = None
        self.k = 0
        self._cycle_start = 0.0

    def start(self) -> float:
        """Begin cycle 0 now; returns its start time."""
        self.t0 = self.clock()
        self.k = 0
        self._cycle_start = self.t0
        self.stats.starts.append(self.t0)
        return self.t0

    def deadline(self, k: int | None = None) -> float:
        if self.t0 is None:
            raise RuntimeError("RateKeeper.start() was not called")
        return self.t0 + (self.k + 1 if k is None else k) * self.period_s

    def wait(self) -> float:
        """End the current cycle: wait for the next deadline, return its time (the new cycle's
        nominal start). On an overrun, skip to the next deadline still ahead."""
        now = self.clock()
        self.stats.compute_s.append(now - self._cycle_start)
        nxt = self.k + 1
        if now > self.deadline(nxt):
            missed = int((now - self.t0) // self.period_s) + 1 - nxt
            self.stats.overruns += 1
            self.stats.skipped_cycles += missed
            if self.stats.overruns % self.warn_every == 1 or self.warn_every == 1:
                log.warning("control cycle %d overran its deadline by %.2f ms (%d overruns so far)",
                            self.k, (now - self.deadline(nxt)) * 1000, self.stats.overruns)
            nxt += missed
        target = self.deadline(nxt)
        remaining = target - self.clock()
        if remaining > self.spin_s:
            self.sleep(remaining - self.spin_s)
        while target - self.clock() > 1e-9:
            self.sleep(0)  # spin, but let other threads (the inference worker) take the GIL
        self.k = nxt
        self._cycle_start = self.clock()
        self.stats.starts.append(self._cycle_start)
        return target


class FakeClock:
    """A clock for tests: ``sleep`` advances time; ``advance`` simulates work."""

    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += max(dt, 0.0)

    def advance(self, dt: float) -> None:
        self.t += dt
