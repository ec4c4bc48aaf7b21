"""``dpctrl calibrate rti``: choose the warm-start level K' offline.

On recorded observation windows (consecutive windows of held-out-style dataset episodes):
1. the full (cold) solution A0 of each window, with the policy's sampler;
2. the RTI guess for the next window: A0 shifted by Ta, as the loop would build it;
3. for each candidate K': the contraction ratio ||f(g + d) - f(g)|| / ||d|| of the
   warm-started map f from level K' (d: a random perturbation of the guess), and the error
   of the warm result against the next window's own full solution.
The recommendation is the smallest K' whose contraction ratio is <= ``target`` (errors
shrink by that factor per cycle) and whose error is within ``tolerance`` of the best
candidate's. Saved as ``rti.json`` next to the checkpoint and used by ``--warm-start rti``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from dpctrl.policy.diffusion_policy import DiffusionPolicy
from dpctrl.policy import checkpoint
from dpctrl.policy.accel.warmstart import WarmStartConfig, shift_chunk

RTI_FILE = "rti.json"


def default_rti_config(checkpoint_name, policy, k: int | None = None, noise: bool | None = None,
                       reproduce: bool = False, tail: str | None = None) -> WarmStartConfig:
    """K' (and tail, noise) from the arguments, else the checkpoint's rti.json, else K'=2 on
    the fine tail with the clean guess."""
    path = checkpoint.resolve(checkpoint_name) / RTI_FILE
    saved = json.loads(path.read_text()) if path.exists() else {}
    if k is None:
        k = saved.get("recommended_k", 2)
    tail = tail or saved.get("tail", "fine")
    noise = saved.get("noise", False) if noise is None else noise
    # a policy trained with discrete_scale > 1 warm-starts in scale mode, else clip mode
    mode = "scale" if policy.cfg.discrete_scale > 1.0 else "clip"
    return WarmStartConfig(start_t=int(k), noise=noise, reproduce=reproduce, tail=tail, discrete_mode=mode,
                           clip_factor=10.0 if policy.cfg.image_keys else 1.0)


@torch.no_grad()
def calibrate_rti(policy, windows: list[dict], next_windows: list[dict], candidates=(0, 1, 2, 3, 5, 8, 12, 20),
                  target: float = 0.5, tolerance: float = 0.01, seed: int = 0, tail: str = "fine",
                  noise: bool = False, max_calls: int | None = None) -> dict:
    """Per candidate K' (under the given tail and noise mode): the contraction ratio of the
    warm map (output change / guess perturbation, same noise) and its error against the full
    solution of the next window. Recommends, with ``max_calls``, the lowest-error K' within
    that many network calls; otherwise the first K' that contracts below ``target`` within
    ``tolerance`` of the best error."""
    Ta = policy.n_action_steps
    policy.set_warm_start(None)
    gen = torch.Generator().manual_seed(seed)

    def batch(ws):
        return {k: torch.as_tensor(np.stack([w[k] for w in ws])) for k in policy.expected_obs()}

    cond, cond_next = policy.encode_obs(batch(windows)), policy.encode_obs(batch(next_windows))
    full = policy.sample(cond)
    full_next = policy.sample(cond_next)
    guess = shift_chunk(full, Ta)
    rows = []
    for k in candidates:
        policy.set_warm_start(WarmStartConfig(start_t=k, discrete_dims=[], tail=tail, noise=noise))
        state = policy.generator.get_state()  # the perturbed run sees the same noise
        x0, pairs, times = policy._rti_run(guess)
        warm = policy.sample(cond_next, x=x0, pairs=pairs, net_times=times)
        delta = 0.05 * torch.randn(guess.shape, generator=gen)
        policy.generator.set_state(state)
        x0p, _, _ = policy._rti_run(guess + delta)
        warm_p = policy.sample(cond_next, x=x0p, pairs=pairs, net_times=times)
        ratio = float((warm_p - warm).flatten(1).norm(dim=1).mean() / delta.flatten(1).norm(dim=1).mean())
        err = float((warm - full_next).abs().mean())
        rows.append({"k": k, "network_calls": len(pairs), "contraction": ratio, "error_vs_full": err})
    policy.set_warm_start(None)
    if max_calls is not None:  # a latency budget: the most accurate K' within it
        within = [r for r in rows if r["network_calls"] <= max_calls]
        if not within:
            raise ValueError(f"no candidate K' runs in <= {max_calls} network calls")
        pick = min(within, key=lambda r: r["error_vs_full"])
    else:
        best = min(r["error_vs_full"] for r in rows)
        ok = [r for r in rows if r["contraction"] <= target and r["error_vs_full"] <= best + tolerance]
        pick = ok[0] if ok else min(rows, key=lambda r: r["error_vs_full"])
    guess_gap = float((guess - full_next).abs().mean())
    return {"recommended_k": pick["k"], "network_calls": pick["network_calls"], "tail": tail, "noise": noise,
            "max_calls": max_calls,
            "sampler": policy.cfg.sampler, "steps": policy.cfg.num_inference_steps, "target_contraction": target,
            "tolerance": tolerance, "guess_error_vs_full": guess_gap, "candidates": rows,
            "windows": len(windows)}


def calibrate_from_dataset(checkpoint_name: str, data_path: str | Path, n_windows: int = 64,
                           sampler: str | None = None, steps: int | None = None, **kw) -> dict:
    """``calibrate_rti`` on dataset window pairs (i, i + Ta); the sampler defaults to the
    checkpoint's. Saves ``rti.json`` next to the checkpoint."""
    from dpctrl.data import ReplayBuffer
    from dpctrl.data.dataset import WindowDataset
    policy = DiffusionPolicy.load(checkpoint_name)
    if sampler is not None or steps is not None:
        policy.set_sampler(sampler or policy.cfg.sampler, steps or policy.cfg.num_inference_steps)
    ds = WindowDataset(ReplayBuffer.open(data_path), obs_keys=list(policy.cfg.obs_dims),
                       image_keys=policy.cfg.image_keys, n_obs_steps=policy.n_obs_steps, horizon=policy.horizon,
                       n_action_steps=policy.n_action_steps)
    Ta = policy.n_action_steps
    # pairs (window i, window i+Ta) from the same episode
    same = np.nonzero((ds.index[Ta:, 0] == ds.index[:-Ta, 0]))[0]
    pick = same[np.linspace(0, len(same) - 1, n_windows).astype(int)]
    cur = ds.get_batch(pick)["obs"]
    nxt = ds.get_batch(pick + Ta)["obs"]
    to_list = lambda b: [{k: v[i].numpy() for k, v in b.items()} for i in range(len(pick))]  # noqa: E731
    res = calibrate_rti(policy, to_list(cur), to_list(nxt), **kw)
    res["data"] = str(data_path)
    out = checkpoint.writable(checkpoint.resolve(checkpoint_name) / RTI_FILE)
    out.write_text(json.dumps(res, indent=2) + "\n")
    res["saved"] = str(out)
    return res


# ---------------------------------------------------------------------------- BAC
CACHE_FILE = "cache_bac.json"


@torch.no_grad()
def calibrate_cache(policy, windows: list[dict], budget: int, objective: str = "adjacent", bu_top_n: int = 3) -> dict:
    """Record every block at every step of full runs on ``windows`` (batched), build the
    per-block similarity matrices, schedule each block by ACS, apply Bubbling Union. The
    ``action`` objective schedules on first-order action errors instead of similarities
    (``action_error_segments``: one more run with autograd on the same windows)."""
    from dpctrl.policy.accel.cache import (BlockRecorder, acs_steps, action_error_segments, bubbling_union,
                                    similarity_and_change)
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


def dataset_windows(policy, data_path, n_windows: int) -> list[dict]:
    from dpctrl.data import ReplayBuffer
    from dpctrl.data.dataset import WindowDataset
    ds = WindowDataset(ReplayBuffer.open(data_path), obs_keys=list(policy.cfg.obs_dims),
                       image_keys=policy.cfg.image_keys, n_obs_steps=policy.n_obs_steps, horizon=policy.horizon,
                       n_action_steps=policy.n_action_steps)
    idx = np.linspace(0, len(ds) - 1, n_windows).astype(int)
    obs = ds.get_batch(idx)["obs"]
    return [{k: v[i].numpy() for k, v in obs.items()} for i in range(len(idx))]


def calibrate_cache_from_dataset(checkpoint_name: str, data_path, budget: int, objective: str = "adjacent",
                                 bu_top_n: int = 3, sampler: str = "ddpm", steps: int = 100,
                                 n_windows: int = 16) -> dict:
    policy = DiffusionPolicy.load(checkpoint_name)
    policy.set_sampler(sampler, steps)
    res = calibrate_cache(policy, dataset_windows(policy, data_path, n_windows), budget, objective, bu_top_n)
    res["data"], res["windows"] = str(data_path), n_windows
    out = checkpoint.writable(checkpoint.resolve(checkpoint_name) / CACHE_FILE)
    out.write_text(json.dumps(res, indent=2) + "\n")
    res["saved"] = str(out)
    return res


def make_cache(kind: str, checkpoint_name, policy, budget: int | None = None, teacache_threshold: float = 0.3,
               calibration: dict | None = None):
    """A BlockCache for ``--cache bac|uniform|teacache`` on the policy's current step list.
    BAC schedules come from ``calibration`` (a ``calibrate_cache`` result) or else the
    checkpoint's cache_bac.json, re-derived onto this list. The cache's ``kind`` names it in
    reports (``bac (<objective>)`` for BAC)."""
    from dpctrl.policy.accel.cache import BlockCache, TeaCacheGate, rederive, uniform_schedule
    steps = [policy.sampler.model_time(t) for t, _ in policy.sampler.steps(policy.cfg.num_inference_steps)]
    if kind == "teacache":
        return _named(BlockCache(gate=TeaCacheGate(teacache_threshold)), kind)
    if kind == "uniform":
        if not budget:
            raise ValueError("--cache uniform needs --cache-budget (update steps per run)")
        return _named(BlockCache(uniform_schedule(policy.net.branch_names(), steps, max(1, len(steps) // budget))),
                      kind)
    if kind != "bac":
        raise ValueError(f"unknown cache {kind!r}")
    path = checkpoint.resolve(checkpoint_name) / CACHE_FILE if calibration is None else "the given calibration"
    if calibration is None and not path.exists():
        raise ValueError(f"no {CACHE_FILE} next to the checkpoint; run `dpctrl calibrate cache` first")
    cal = calibration if calibration is not None else json.loads(path.read_text())
    if budget is not None and budget != cal["budget"]:
        raise ValueError(f"{path} was calibrated for budget {cal['budget']}, not {budget}; recalibrate")
    sched = {k: set(map(float, v)) for k, v in cal["schedules"].items()}
    if [float(t) for t in cal["timesteps"]] != steps:
        # keep the calibrated keys too: warm-started (RTI) runs use the fine-grid tail
        derived = rederive(sched, steps)
        sched = {k: sched[k] | derived[k] for k in sched}
    return _named(BlockCache(sched), f"bac ({cal.get('objective', '?')})")


def _named(cache, kind: str):
    cache.kind = kind
    return cache
