"""The one timing harness of every benchmark: wall-clock milliseconds of single calls, calls of
several variants interleaved so that the machine's load hits them alike (this machine is
shared and noisy: benchmarks report ratios against a baseline timed in the same run), and
the percentiles reports print."""
from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence

import numpy as np


def timed(fn: Callable, *args, **kw) -> tuple[object, float]:
    """``fn(*args, **kw)`` and its wall time in ms (host arrays back: a GPU call is synchronized
    by its copy to the host)."""
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, (time.perf_counter() - t0) * 1e3


def interleaved(labels: Sequence[Hashable], rounds: int,
                step: Callable[[Hashable, int], float | None]) -> dict[Hashable, np.ndarray]:
    """Call ``step(label, round)`` for every label in every round, the order reversed every other
    round; a step returns its ms, or None when that call is not timed (a warm-up, a cold
    chunk). Returns the timed ms per label."""
    times: dict = {label: [] for label in labels}
    for r in range(rounds):
        for label in (labels if r % 2 == 0 else list(labels)[::-1]):
            ms = step(label, r)
            if ms is not None:
                times[label].append(ms)
    return {k: np.asarray(v) for k, v in times.items()}


def stats(ms) -> dict:
    """p50, p99 and mean of a sample of ms, and its size."""
    ms = np.asarray(ms, dtype=np.float64)
    if not len(ms):
        raise ValueError("no timed calls")
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n": int(len(ms))}
