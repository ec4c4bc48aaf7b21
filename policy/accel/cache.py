"""Block-wise adaptive caching (BAC, REFERENCES.md §3) and two baselines.

A block is one residual branch of the transformer (``layer{i}.sa|ca|ffn``); its cached
value is the branch output (the residual delta). On an update step the branch runs and its
output is stored; otherwise the stored output is added again. The residual stream itself
always flows. The cache hooks in through ``Transformer.branch_hook`` (no patching), is
keyed by the network timestep of the call, and is reset for every prediction.

Schedules: ``{block: set of timesteps at which it is recomputed}``.
- ``acs_schedule``: the Adaptive Caching Scheduler, a dynamic program choosing M update
  steps (the first and the last always) that maximize total similarity, with the paper's
  objective (``adjacent``: sum of cos(b_k, b_{k-1}) inside each segment) or the published
  code's (``cached``: sum of S[a, t] of the cached step a against every step t reusing it);
- ``bubbling_union``: the top-n blocks by mean adjacent L1 change get the update steps of
  every FFN block at the same or a later layer added to theirs;
- ``uniform_schedule``: FORA-style, every N-th step (and the last);
- ``TeaCacheGate``: TeaCache-style adaptive threshold: all blocks recompute when the
  accumulated relative L1 change of the first block's input since the last update
  exceeds ``threshold``.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch

OBJECTIVES = ("adjacent", "cached", "weighted")


# ------------------------------------------------------------------ schedules
def _segment_value(S: np.ndarray, a: int, b: int, objective: str, weights: np.ndarray | None = None) -> float:
    if objective == "adjacent":
        return float(sum(S[k, k - 1] for k in range(a + 1, b + 1)))
    if objective == "weighted":
        return float((weights[a:b + 1] * S[a, a:b + 1]).sum())
    return float(S[a, a:b + 1].sum())


def output_sensitivity(sampler, pairs: Sequence[tuple]) -> np.ndarray:
    """How much an error in the network output at each step of ``pairs`` moves the final
    sample, for a sampler step that is affine in (sample, output): w_k = A_k * prod_{j>k} B_j
    with A = d x_next / d output and B = d x_next / d x (noise held at 0, measured on the
    sampler's own ``step``). Late steps weigh most: their errors are not denoised away."""
    A, B = [], []
    for t, t_next in pairs:
        z, h = torch.zeros(1, 1, 1, dtype=torch.float64), 0.1
        kw = {"noise": torch.zeros_like(z)} if sampler.name == "ddpm" else {}
        base = float(sampler.step(z, z, t, t_next, sampler.new_state(), **kw))
        A.append((float(sampler.step(z, z + h, t, t_next, sampler.new_state(), **kw)) - base) / h)
        B.append((float(sampler.step(z + h, z, t, t_next, sampler.new_state(), **kw)) - base) / h)
    w = np.empty(len(pairs))
    tail = 1.0
    for k in range(len(pairs) - 1, -1, -1):
        w[k] = abs(A[k]) * tail
        tail *= abs(B[k])
    return w


def acs_steps(S: np.ndarray, budget: int, objective: str = "adjacent", weights: np.ndarray | None = None) -> list[int]:
    """Update step indices (0 and K-1 always) for one block: DP over contiguous segments.
    ``weighted`` (an extension, not in the paper or its code) is the ``cached`` objective with
    every reusing step weighted by ``weights`` (``output_sensitivity``)."""
    K = S.shape[0]
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}")
    if objective == "weighted" and (weights is None or len(weights) != K):
        raise ValueError("the weighted objective needs one weight per step")
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
                v = best[m - 1][a] + _segment_value(S, a, j - 1, objective, weights)
                if v > best[m][j]:
                    best[m][j], back[m][j] = v, a
    starts, j = [], n
    for m in range(m_total, 0, -1):
        a = back[m][j]
        starts.append(a)
        j = a
    return sorted(starts) + [K - 1]


def acs_steps_brute_force(S: np.ndarray, budget: int, objective: str = "adjacent",
                          weights: np.ndarray | None = None) -> tuple[list[int], float]:
    """Reference for tests: best update set by enumeration (small K)."""
    K = S.shape[0]
    best, arg = -np.inf, None
    for mid in itertools.combinations(range(1, K - 1), budget - 2):
        starts = [0, *mid]
        bounds = starts + [K - 1]
        v = sum(_segment_value(S, bounds[i], bounds[i + 1] - 1, objective, weights) for i in range(len(starts)))
        if v > best + 1e-12:
            best, arg = v, starts + [K - 1]
    return arg, best


def schedule_value(S: np.ndarray, steps: Sequence[int], objective: str, weights: np.ndarray | None = None) -> float:
    bounds = list(steps)
    return sum(_segment_value(S, bounds[i], bounds[i + 1] - 1, objective, weights) for i in range(len(bounds) - 1))


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


# ------------------------------------------------------------------ runtime
class TeaCacheGate:
    def __init__(self, threshold: float):
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        self.ref: torch.Tensor | None = None
        self.acc = 0.0

    def update_now(self, x: torch.Tensor) -> bool:
        if self.ref is None:
            self.ref = x.detach().clone()
            return True
        self.acc += float((x - self.ref).abs().mean() / (self.ref.abs().mean() + 1e-8))
        self.ref = x.detach().clone()
        if self.acc >= self.threshold:
            self.acc = 0.0
            return True
        return False


class BlockCache:
    """Runtime cache. ``schedules`` maps block -> update timesteps (None: every step);
    ``gate`` (TeaCache) overrides it. ``executed``/``reused`` count block calls."""

    def __init__(self, schedules: dict[str, set] | None = None, gate: TeaCacheGate | None = None):
        self.schedules, self.gate = schedules, gate
        self.executed = self.reused = 0
        self.reset()

    def reset(self) -> None:
        self.store: dict[str, torch.Tensor] = {}
        self.t: float | None = None
        self._gate_update = True
        if self.gate is not None:
            self.gate.reset()

    def begin_step(self, t: float) -> None:
        self.t = float(t)
        self._gate_decided = False

    def _update(self, name: str, args: tuple) -> bool:
        if name not in self.store:
            return True
        if self.gate is not None:
            if not self._gate_decided:
                self._gate_update = self.gate.update_now(args[0])
                self._gate_decided = True
            return self._gate_update
        if self.schedules is None or name not in self.schedules:
            return True
        return self.t in self.schedules[name]

    def __call__(self, name: str, fn: Callable, args: tuple) -> torch.Tensor:
        if self._update(name, args):
            out = fn(*args)
            self.store[name] = out
            self.executed += 1
            return out
        self.reused += 1
        return self.store[name]


class BlockRecorder:
    """Calibration hook: runs every block and records its output per timestep."""

    def __init__(self):
        self.outputs: dict[str, list[torch.Tensor]] = {}
        self.timesteps: list[float] = []
        self.t: float | None = None

    def begin_step(self, t: float) -> None:
        self.t = float(t)
        self.timesteps.append(self.t)

    def reset(self) -> None:
        pass

    def __call__(self, name: str, fn: Callable, args: tuple) -> torch.Tensor:
        out = fn(*args)
        self.outputs.setdefault(name, []).append(out.detach().flatten().clone())
        return out


def similarity_and_change(outputs: list[torch.Tensor]) -> tuple[np.ndarray, float]:
    """Cosine similarity matrix (K, K) of one block's per-step outputs, and its mean
    adjacent L1 change (the Bubbling Union score)."""
    B = torch.stack(outputs).double().cpu()
    unit = B / (B.norm(dim=1, keepdim=True) + 1e-12)
    S = (unit @ unit.T).numpy()
    change = float((B[1:] - B[:-1]).abs().mean()) if len(B) > 1 else 0.0
    return S, change
