"""Block-wise adaptive caching (BAC, docs/references.md §3) and two baselines.

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

from collections.abc import Callable

import numpy as np
import torch

from dpctrl.policy.denoise import RunNoise


from dpctrl.policy.accel.schedules import (OBJECTIVES, acs_steps, acs_steps_brute_force, block_layer,  # noqa: F401
                                           bubbling_union, rederive, schedule_value, similarity_and_change,
                                           uniform_schedule)

CACHE_FILE = "cache_bac.json"  # a checkpoint's BAC calibration (``calibrate_cache``), next to its weights


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


@torch.no_grad()
def calibrate_cache(policy, windows: list[dict], budget: int, objective: str = "adjacent", bu_top_n: int = 3) -> dict:
    """A BAC calibration: record every block at every step of full runs on ``windows``
    (batched), build the per-block similarity matrices, schedule each block by ACS, apply
    Bubbling Union. The ``action`` objective schedules on first-order action errors instead
    (``action_error_segments``: one more run with autograd on the same windows). The result
    is what ``make_cache("bac", ...)`` reads back (saved as the checkpoint's cache_bac.json)."""
    rec = BlockRecorder()
    policy.set_cache(rec)
    try:
        device = next(policy.parameters()).device
        batch = {k: torch.as_tensor(np.stack([w[k] for w in windows])).to(device) for k in policy.expected_obs()}
        cond = policy.encode_obs(batch)
        policy.sample(cond)
    finally:
        policy.set_cache(None)
    timesteps = rec.timesteps
    segments = action_error_segments(policy, cond)[0] if objective == "action" else None
    schedules, change = {}, {}
    for name in policy.net.branch_names():
        S, change[name] = similarity_and_change(rec.outputs[name])
        S = segments[name] if segments is not None else S
        schedules[name] = {timesteps[i] for i in acs_steps(S, budget, objective)}
    final = bubbling_union(schedules, change, top_n=bu_top_n)
    return {"sampler": policy.cfg.sampler, "steps": policy.cfg.num_inference_steps, "timesteps": timesteps,
            "budget": budget, "objective": objective, "bu_top_n": bu_top_n,
            "bu_blocks": sorted(change, key=lambda k: -change[k])[:bu_top_n],
            "block_updates_before_bu": sum(len(v) for v in schedules.values()),
            "block_updates": sum(len(v) for v in final.values()),
            "schedules": {k: sorted(v, reverse=True) for k, v in final.items()}}


CACHES = ("bac", "uniform", "teacache")


def make_cache(kind: str, policy, calibration: dict | None = None, budget: int | None = None,
               teacache_threshold: float = 0.3) -> BlockCache:
    """A BlockCache for ``kind`` bac | uniform | teacache on the policy's current step list.
    BAC schedules come from ``calibration`` (a ``calibrate_cache`` result), re-derived onto
    this list; uniform needs ``budget`` (update steps per run). The cache's ``kind`` names it
    in reports (``bac (<objective>)`` for BAC)."""
    steps = list(policy.cold_plan().net_times)
    if kind == "teacache":
        cache = BlockCache(gate=TeaCacheGate(teacache_threshold))
    elif kind == "uniform":
        if not budget:
            raise ValueError("a uniform cache needs a budget (update steps per run: --cache-budget)")
        cache = BlockCache(uniform_schedule(policy.net.branch_names(), steps, max(1, len(steps) // budget)))
    elif kind == "bac":
        if calibration is None:
            raise ValueError(f"BAC needs a calibration: no {CACHE_FILE} next to the checkpoint; "
                             "run `dpctrl calibrate cache` first")
        if budget is not None and budget != calibration["budget"]:
            raise ValueError(f"the BAC calibration is for budget {calibration['budget']}, not {budget}; recalibrate")
        sched = {k: set(map(float, v)) for k, v in calibration["schedules"].items()}
        if [float(t) for t in calibration["timesteps"]] != steps:
            # keep the calibrated keys too: warm-started (RTI) runs use the fine-grid tail
            derived = rederive(sched, steps)
            sched = {k: sched[k] | derived[k] for k in sched}
        cache, kind = BlockCache(sched), f"bac ({calibration.get('objective', '?')})"
    else:
        raise ValueError(f"unknown cache {kind!r}; known: {CACHES}")
    cache.kind = kind
    return cache


def cache_for(kind: str, checkpoint_name, policy, calibration: dict | None = None, **kw) -> BlockCache:
    """``make_cache`` with BAC's schedule from ``calibration`` or else the checkpoint's cache_bac.json."""
    from dpctrl.policy.checkpoint import read_sidecar
    if kind == "bac" and calibration is None:
        calibration = read_sidecar(checkpoint_name, CACHE_FILE)
    return make_cache(kind, policy, calibration, **kw)
