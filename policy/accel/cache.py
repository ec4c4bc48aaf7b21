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
  code's (``cached``: sum of S[a, t] of the cached step a against every step t reusing it),
  or, an extension, the first-order action error of each stale segment (``action``,
  ``action_error_segments``: how far reusing a block's output moves the sampled chunk);
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

from dpctrl.policy.denoise import RunNoise

OBJECTIVES = ("adjacent", "cached", "action")


# ------------------------------------------------------------------ schedules
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


class GradRecorder:
    """Calibration hook for ``action_error_segments``: runs every block and keeps its output
    (B, T, d) in the autograd graph, with its gradient retained."""

    def __init__(self):
        self.outputs: dict[str, list[torch.Tensor]] = {}
        self.timesteps: list[float] = []

    def begin_step(self, t: float) -> None:
        self.timesteps.append(float(t))

    def reset(self) -> None:
        pass

    def __call__(self, name: str, fn: Callable, args: tuple) -> torch.Tensor:
        out = fn(*args)
        out.retain_grad()
        self.outputs.setdefault(name, []).append(out)
        return out


def action_error_segments(policy, cond: torch.Tensor, n_probes: int = 8, seed: int = 0,
                          probes: torch.Tensor | None = None) -> tuple[dict, list]:
    """Per-block segment values V[a, b] = -E ||sum_{t=a..b} J_t (o_a - o_t)||^2 for the
    ``action`` ACS objective (an extension, in neither the paper nor its code): the
    first-order change of the sampled chunk's continuous dims when steps a+1..b reuse the
    block output o_a of step a, J_t being the Jacobian of the final sample with respect to
    the block's output at step t through the rest of the denoising run. The errors of one
    stale segment are summed before the norm: they are alike step to step and add up, so a
    long segment costs more than the sum of its steps' squared errors. Cosine similarity,
    the paper's measure, says how alike two outputs are, not how much their difference
    moves the action.

    One full run of the policy's sampler on ``cond`` (B windows) with autograd, then
    ``n_probes`` backward passes of random projections v (E (v.y)^2 = ||y||^2 for
    v ~ N(0, I)); summed over the windows. ``probes`` (R, B, T, A), an orthonormal basis,
    replaces the random ones: the sum of its squared projections is the exact norm (tests).
    The starting sample and the DDPM noise are drawn from ``seed``. Returns ({block: V (K, K), upper triangle used},
    network timesteps)."""
    g = torch.Generator().manual_seed(seed)
    shape = (cond.shape[0], policy.cfg.horizon, policy.cfg.action_dim)
    plan = policy.cold_plan()
    K = len(plan)
    if probes is not None:
        n_probes = len(probes)
    weight = 1.0 / n_probes if probes is None else 1.0  # a mean over random v; a sum over a basis
    x = torch.randn(shape, generator=g).to(cond)
    noise = RunNoise(steps=(torch.randn((K, *shape), generator=g).to(cond),)) if policy.sampler.name == "ddpm" \
        else RunNoise()
    rec = GradRecorder()
    params = [p for p in policy.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    policy.set_cache(rec)
    try:
        with torch.enable_grad():  # the weights are frozen: the graph hangs on the starting sample
            final = policy.denoise_tensors(x.requires_grad_(True), cond.detach(), plan, noise)
        cont = torch.ones(policy.cfg.action_dim).to(cond)
        cont[list(policy.cfg.discrete_action_dims)] = 0.0
        names = policy.net.branch_names()
        outs = {b: torch.stack([o.detach().flatten(1) for o in rec.outputs[b]]).double() for b in names}
        later = torch.ones(K, K, dtype=torch.bool, device=cond.device).tril()[:, :, None]  # [t, a]: t >= a
        cost = {b: torch.zeros(K, K, dtype=torch.float64) for b in names}
        for r in range(n_probes):
            for b in names:
                for o in rec.outputs[b]:
                    o.grad = None
            v = (torch.randn(shape, generator=g) if probes is None else probes[r]).to(cond) * cont
            final.backward(v, retain_graph=r < n_probes - 1)
            for b in names:
                G = torch.stack([o.grad.flatten(1) for o in rec.outputs[b]]).double()  # (K, B, N)
                P = torch.einsum("twn,awn->taw", G, outs[b])  # P[t, a] = g_t . o_a
                err = (P - torch.diagonal(P, dim1=0, dim2=1).T[:, None, :]) * later  # g_t . (o_a - o_t), t >= a
                seg = err.cumsum(0)  # seg[b, a] = sum_{t=a..b} g_t . (o_a - o_t)
                cost[b] += weight * (seg ** 2).sum(-1).T.cpu()  # [a, b]
    finally:
        policy.set_cache(None)
        for p in params:
            p.requires_grad_(True)
    return {b: -c.numpy() for b, c in cost.items()}, rec.timesteps


def similarity_and_change(outputs: list[torch.Tensor]) -> tuple[np.ndarray, float]:
    """Cosine similarity matrix (K, K) of one block's per-step outputs, and its mean
    adjacent L1 change (the Bubbling Union score)."""
    B = torch.stack(outputs).double().cpu()
    unit = B / (B.norm(dim=1, keepdim=True) + 1e-12)
    S = (unit @ unit.T).numpy()
    change = float((B[1:] - B[:-1]).abs().mean()) if len(B) > 1 else 0.0
    return S, change
