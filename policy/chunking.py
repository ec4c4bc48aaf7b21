"""Chunks -> executed actions: a queue of time-stamped actions, the delay schedule of
delay-injected evaluation, and the smoothness of what was executed. Pure numpy; the fixed-rate
loop (control/loop.py, wall-clock time) and the evaluator (envs/evaluate.py, simulated time
in control steps) both use it, so an overlap mode means the same thing in both.

The queue:

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
# how a new chunk meets the running one: the queue's two, plus four that take the running chunk's
# remaining actions (a ``Prefix``) while the new one is sampled (the policy's ``overlap_modes``):
# two guide the denoising, one samples candidates and keeps the most coherent, one conditions a
# network trained on committed prefixes (policy/prefix.py)
OVERLAPS = ("replace", "blend", "inpaint", "rtc", "bid", "prefix")
GUIDED = ("inpaint", "rtc")
COMMITTED = GUIDED + ("bid", "prefix")


@dataclass
class Prefix:
    """What a new chunk should agree with, passed as ``predict_batch(committed=...)``: the
    running chunk's ``actions`` not yet executed at the new observation, ``(B, r, A)`` or
    ``(r, A)`` in robot units, aligned with the new chunk's first executable step; ``delay`` of
    them will run before the new chunk arrives (frozen), ``execute`` is the execution horizon
    (None: the guidance mask decays to 0 at the end of ``actions``);
    ``mode`` "inpaint" (hard prefix replacement with decaying weights), "rtc" (soft-masked
    guidance, weight clipped at ``beta``) or "bid" (bidirectional decoding's backward half:
    ``samples`` candidate chunks in one batched pass, the one closest to ``actions`` under the
    rtc mask kept) or "prefix" (the ``delay`` frozen actions given clean to a network trained
    for it)."""
    actions: np.ndarray
    delay: int
    execute: int | None
    mode: str = "rtc"
    beta: float = 5.0
    samples: int = 8

    def __post_init__(self):
        if self.mode not in COMMITTED:
            raise ValueError(f"a prefix is taken by one of {COMMITTED}, not {self.mode!r}")
        if self.samples < 1:
            raise ValueError(f"bid needs at least 1 candidate, got {self.samples}")


def rtc_weights(usable: int, delay: int, execute: int | None, available: int) -> np.ndarray:
    """The soft mask of real-time chunking over a chunk's ``usable`` executable steps: 1 on the
    ``delay`` steps that run before the chunk arrives, then w (e^w - 1) / (e - 1) with w falling
    linearly to 0 at ``usable - execute`` (None: at ``available``), 0 after it and past the
    ``available`` committed actions."""
    j = np.arange(usable, dtype=np.float64)
    end = available if execute is None else usable - execute
    c = np.clip((end - j) / max(end - delay + 1, 1), 0.0, 1.0)
    w = np.where(j < delay, 1.0, c * np.expm1(c) / np.expm1(1.0))
    w[j >= min(available, max(end, delay))] = 0.0
    return w.astype(np.float32)


def most_coherent(candidates: np.ndarray, committed: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Bidirectional decoding's backward criterion: of ``candidates`` (B, N, r', A) executable
    actions per row, the index (B,) of the one with the least ``weights``-weighted squared
    distance to the ``committed`` actions (B or 1, r, A) over the first r steps."""
    c = np.asarray(candidates, dtype=np.float64)
    prev = np.asarray(committed, dtype=np.float64)
    r = min(prev.shape[1], c.shape[2], len(weights))
    w = np.asarray(weights[:r], dtype=np.float64)
    cost = (((c[:, :, :r] - prev[:, None, :r]) ** 2).sum(-1) * w).sum(-1)  # (B, N)
    return cost.argmin(axis=1)


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


# ---------------------------------------------------------------- delay schedule

def check_delay(delay: int, execute: int, horizon: int, n_obs_steps: int) -> None:
    """A chunk requested at step k arrives at step k + ``delay``; a request every ``execute``
    steps. Each chunk then runs its actions at offsets delay .. delay + execute - 1 from the
    first executable one (index n_obs_steps - 1), so it needs ``delay + execute`` of them."""
    usable = horizon - n_obs_steps + 1
    if not 1 <= execute <= usable:
        raise ValueError(f"--execute must be in 1..{usable} (actions per chunk from index {n_obs_steps - 1}), "
                         f"got {execute}")
    if not 0 <= delay <= execute:
        raise ValueError(f"--delay must be in 0..--execute ({execute}): one request in flight at a time; got {delay}")
    if delay + execute > usable:
        raise ValueError(f"--delay {delay} + --execute {execute} needs {delay + execute} actions per chunk, the policy "
                         f"has {usable} (horizon {horizon} from index {n_obs_steps - 1}); lower one of them")


# ---------------------------------------------------------------- smoothness

def boundary_jumps(actions: np.ndarray, switches: list[int], continuous: list[int]) -> list[float]:
    """For each chunk switch at step s (the first action of a new chunk executed at s), the
    largest change of the continuous action dims from step s - 1 to s."""
    a = np.asarray(actions, dtype=np.float64)[:, continuous]
    return [float(np.abs(a[s] - a[s - 1]).max()) for s in switches if 0 < s < len(a)]


def mean_squared_jerk(actions: np.ndarray, continuous: list[int]) -> float:
    """Mean over steps of the squared third difference of the continuous action dims (action
    units per step cubed, summed over dims); NaN for episodes under 4 steps."""
    a = np.asarray(actions, dtype=np.float64)[:, continuous]
    if len(a) < 4:
        return float("nan")
    jerk = a[3:] - 3 * a[2:-1] + 3 * a[1:-2] - a[:-3]
    return float((jerk ** 2).sum(axis=1).mean())


def smoothness(episodes: list[dict]) -> dict:
    """Report fields from per-episode ``boundary_jumps`` lists and ``jerk`` values."""
    jumps = [j for e in episodes for j in e["boundary_jumps"]]
    jerks = [e["jerk"] for e in episodes if np.isfinite(e["jerk"])]
    return {"boundary_jump": {"mean": float(np.mean(jumps)) if jumps else float("nan"),
                              "p95": float(np.percentile(jumps, 95)) if jumps else float("nan"),
                              "switches": len(jumps)},
            "jerk": float(np.mean(jerks)) if jerks else float("nan")}
