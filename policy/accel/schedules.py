"""Block-caching schedules (BAC, docs/references.md §3): which denoising steps recompute each
transformer branch. Pure functions of similarity matrices; the runtime hooks and the
calibration that feeds them live in policy/accel/cache.py.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

OBJECTIVES = ("adjacent", "cached", "action")


def _segment_value(S: np.ndarray, a: int, b: int, objective: str) -> float:
    if objective == "adjacent":
        return float(sum(S[k, k - 1] for k in range(a + 1, b + 1)))
    if objective == "action":  # S holds segment values (action_error_segments)
        return float(S[a, b])
    return float(S[a, a:b + 1].sum())


def acs_steps(S: np.ndarray, budget: int, objective: str = "adjacent") -> list[int]:
    """Update step indices (0 and K-1 always) for one block: DP over contiguous segments.
    ``S``: the similarity matrix, or for ``action`` the segment values V[a, b] of
    ``action_error_segments``."""
    K = S.shape[0]
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}")
    if not 2 <= budget <= K:
        if K == 1 and budget >= 1:
            return [0]
        raise ValueError(f"budget must be in [2, {K}] (first and last step always update), got {budget}")
    n = K - 1  # steps 0..K-2 are split into budget-1 segments; step K-1 is its own update
    m_total = budget - 1
    NEG = -np.inf
    best = np.full((m_total + 1, n + 1), NEG)  # best[m][j]: steps 0..j-1 covered by m segments
    back = np.zeros((m_total + 1, n + 1), dtype=int)
    best[0][0] = 0.0
    for m in range(1, m_total + 1):
        for j in range(1, n + 1):
            for a in range(m - 1, j):  # last segment = [a, j-1]
                if best[m - 1][a] == NEG:
                    continue
                v = best[m - 1][a] + _segment_value(S, a, j - 1, objective)
                if v > best[m][j]:
                    best[m][j], back[m][j] = v, a
    starts, j = [], n
    for m in range(m_total, 0, -1):
        a = back[m][j]
        starts.append(a)
        j = a
    return sorted(starts) + [K - 1]


def acs_steps_brute_force(S: np.ndarray, budget: int, objective: str = "adjacent") -> tuple[list[int], float]:
    """Reference for tests: best update set by enumeration (small K)."""
    K = S.shape[0]
    best, arg = -np.inf, None
    for mid in itertools.combinations(range(1, K - 1), budget - 2):
        starts = [0, *mid]
        bounds = starts + [K - 1]
        v = sum(_segment_value(S, bounds[i], bounds[i + 1] - 1, objective) for i in range(len(starts)))
        if v > best + 1e-12:
            best, arg = v, starts + [K - 1]
    return arg, best


def schedule_value(S: np.ndarray, steps: Sequence[int], objective: str) -> float:
    bounds = list(steps)
    return sum(_segment_value(S, bounds[i], bounds[i + 1] - 1, objective) for i in range(len(bounds) - 1))


def block_layer(name: str) -> int:
    return int(name.split(".")[0][len("layer"):])


def bubbling_union(schedules: dict[str, set], change: dict[str, float], top_n: int = 3) -> dict[str, set]:
    """Blocks with the largest mean output change get every downstream FFN's update steps."""
    out = {k: set(v) for k, v in schedules.items()}
    if top_n <= 0:
        return out
    chosen = sorted(change, key=lambda k: -change[k])[:top_n]
    for u in chosen:
        for name, steps in schedules.items():
            if name.endswith(".ffn") and block_layer(name) >= block_layer(u):
                out[u] |= steps
    return out


def uniform_schedule(blocks: Sequence[str], timesteps: Sequence, every: int) -> dict[str, set]:
    upd = {t for i, t in enumerate(timesteps) if i % every == 0} | {timesteps[-1]}
    return {b: set(upd) for b in blocks}


def rederive(schedule: dict[str, set], timesteps: Sequence[float]) -> dict[str, set]:
    """Map a schedule calibrated on one step list onto another (respaced or truncated):
    a step t covering levels (t_next, t] updates a block if the calibrated schedule has an
    update in that range; the first and last steps always update."""
    ts = list(timesteps)
    out = {}
    for name, upd in schedule.items():
        s = {ts[0], ts[-1]}
        for i, t in enumerate(ts):
            lo = ts[i + 1] if i + 1 < len(ts) else -np.inf
            if any(lo < u <= t for u in upd):
                s.add(t)
        out[name] = s
    return out


def similarity_and_change(outputs: list[torch.Tensor]) -> tuple[np.ndarray, float]:
    """Cosine similarity matrix (K, K) of one block's per-step outputs, and its mean
    adjacent L1 change (the Bubbling Union score)."""
    B = torch.stack(outputs).double().cpu()
    unit = B / (B.norm(dim=1, keepdim=True) + 1e-12)
    S = (unit @ unit.T).numpy()
    change = float((B[1:] - B[:-1]).abs().mean()) if len(B) > 1 else 0.0
    return S, change
