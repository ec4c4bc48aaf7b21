"""``dpctrl bench cache``: what block caching costs in accuracy and buys in speed, per base
sampler (DDPM-100, DDIM-10, RTI), in one run.

For every base, each cache variant (none, BAC, uniform at the same per-block budget,
uniform at BAC's total block executions, TeaCache) predicts the same chunk sequences:
``episodes`` recorded demonstration episodes replayed side by side as a batch, one chunk
every ``Ta`` steps, with the same noise (the generator is reseeded per variant; caching
never changes how much noise is drawn). RTI warm starts therefore see the variant's own
previous chunks, as in closed loop. Reported per variant:

- ``action_err``: mean |a - a_full| over all chunks, steps and continuous dims, in
  normalized action units ([-1, 1] per dim), against the same base without a cache;
  ``action_err_max``; ``gripper_flips``: the fraction of discrete (gripper) actions whose
  sign differs from the uncached one (a flip is a mode switch, not a small error, so it
  is counted apart instead of dominating the mean).
- ``block_exec``: block executions per steady-state prediction (the first chunk of a
  sequence, cold for RTI, excluded; 12 blocks x network calls when uncached).
- ``p50_ms``/``p99_ms``: batch-1 chunk latency over ``timing_chunks`` windows, and
  ``speedup`` against the same base uncached, the two timed in one interleaved loop (an
  uncached twin of the policy alternates calls with the variant), so load on the shared
  machine falls on both; the ``none`` row is the twin against itself (~1.00x).
"""
from __future__ import annotations


import numpy as np
import torch
from tqdm import tqdm

from dpctrl.policy.diffusion_policy import DiffusionPolicy
from dpctrl.launch.bench.timing import interleaved, stats, timed
from dpctrl.policy.accel.cache import cache_for
from dpctrl.policy.accel.warmstart import rti_for
from dpctrl.policy.accel.cache import BlockCache, uniform_schedule


def episode_windows(policy, data_path, episodes: int, chunks: int) -> list[dict]:
    """``chunks`` batches of observation windows: batch row e is demo episode e at step
    c * Ta (clamped to the episode's end, so short episodes repeat their last window)."""
    from dpctrl.data import ReplayBuffer
    rb = ReplayBuffer.open(data_path)
    To, Ta = policy.n_obs_steps, policy.n_action_steps
    keys = list(policy.expected_obs())
    eps = [rb.episode(i, keys=keys) for i in range(min(episodes, rb.n_episodes))]
    out = []
    for c in range(chunks):
        batch = {}
        for k in keys:
            rows = []
            for e in eps:
                n = len(e[k])
                idx = np.clip(np.arange(c * Ta - To + 1, c * Ta + 1), 0, n - 1)
                rows.append(e[k][idx])
            batch[k] = np.stack(rows)
        out.append(batch)
    return out


def _normalized(policy, actions: np.ndarray) -> np.ndarray:
    return policy.normalize_actions(torch.as_tensor(actions)).numpy()


def run_sequence(policy, windows: list[dict], seed: int = 0) -> tuple[np.ndarray, float]:
    """Predict every batch in order (warm starts carry over); returns normalized actions
    (chunks, B, T, A) and the block executions per steady-state prediction (the first,
    cold-started chunk excluded, as for ``nfe_per_chunk``; nan when uncached)."""
    policy.generator.manual_seed(seed)
    policy.reset()
    outs = []
    for i, batch in enumerate(windows):
        if i == 1 and policy.cache is not None:
            policy.cache.executed = policy.cache.reused = 0
        outs.append(_normalized(policy, policy.predict_batch(batch)))
        policy.note_executed(policy.n_action_steps)
    per_chunk = policy.cache.executed / max(1, len(windows) - 1) if policy.cache is not None else float("nan")
    return np.stack(outs), per_chunk


def time_chunks(policies: list, windows: list[dict], n: int) -> list[np.ndarray]:
    """Batch-1 latency (ms) of ``n`` chunks of episode 0 for each policy, in order (so RTI
    runs warm), the policies' calls interleaved chunk by chunk (the order alternating), so
    that a variant and its uncached base see the same machine load."""
    for p in policies:
        p.reset()
    single = [{k: v[:1] for k, v in w.items()} for w in windows]

    def step(j: int, i: int) -> float | None:
        _, ms = timed(policies[j].predict_batch, single[i % len(single)])
        policies[j].note_executed(policies[j].n_action_steps)
        return ms if i else None  # the first chunk is cold (and warms caches/allocators)
    times = interleaved(range(len(policies)), n + 1, step)
    return [times[j] for j in range(len(policies))]


BASES = {"DDPM-100": ("ddpm", 100, False), "DDIM-10": ("ddim", 10, False), "RTI": ("ddim", 10, True)}


def variants(checkpoint_name, policy, budget: int, bac_exec: int | None) -> dict:
    """Cache objects for the policy's current step list (warm start already set)."""
    blocks = policy.net.branch_names()
    cold = list(policy.cold_plan().net_times)
    times = list(policy.warm_plan().net_times) if policy.warm is not None else cold
    K = len(times)

    def uniform(every: int) -> dict[str, set]:
        """Every N-th step of the (warm) step list; a warm-started run's cold first chunk
        (the full grid) gets every N-th step of its own grid, so it is cached alike."""
        sched = uniform_schedule(blocks, times, every)
        if policy.warm is not None:
            cold_sched = uniform_schedule(blocks, cold, every)
            sched = {b: sched[b] | cold_sched[b] for b in blocks}
        return sched

    out = {"none": None, "bac": cache_for("bac", checkpoint_name, policy)}
    out[f"uniform (M={budget})"] = BlockCache(uniform(max(1, K // budget)))
    if bac_exec is not None:
        # the sparsest uniform schedule with at least BAC's block executions (steady state)
        for every in range(K, 0, -1):
            if len(blocks) * len(uniform_schedule(blocks, times, every)[blocks[0]]) >= bac_exec:
                out[f"uniform (every {every}, >= BAC executions)"] = BlockCache(uniform(every))
                break
    out["teacache (0.3)"] = cache_for("teacache", checkpoint_name, policy)
    return out


def bench_cache(checkpoint_name: str, data_path, budget: int = 10, episodes: int = 8, chunks: int = 12,
                timing_chunks: int = 30, bases: tuple[str, ...] = tuple(BASES), progress: bool = True) -> dict:
    policy = DiffusionPolicy.load(checkpoint_name)
    twin = DiffusionPolicy.load(checkpoint_name)  # uncached twin, timed interleaved with each variant
    windows = episode_windows(policy, data_path, episodes, chunks)
    disc = list(policy.cfg.discrete_action_dims)
    cont = [d for d in range(policy.cfg.action_dim) if d not in disc]
    rows = []
    for base in bases:
        sampler, steps, warm = BASES[base]
        for p in (policy, twin):
            p.set_sampler(sampler, steps)
            p.set_warm_start(rti_for(checkpoint_name, p) if warm else None)
        label = base if not warm else f"RTI (DDIM, K'={policy.warm.cfg.start_t})"
        policy.set_cache(None)
        full, _ = run_sequence(policy, windows)
        # BAC's executions per prediction decide the matched uniform row
        policy.set_cache(cache_for("bac", checkpoint_name, policy))
        bac_exec = round(run_sequence(policy, windows)[1])
        for name, cache in tqdm(variants(checkpoint_name, policy, budget, bac_exec).items(), desc=label,
                                disable=not progress):
            policy.set_cache(cache)
            if cache is None:
                acts = full
                n_blocks = len(policy.net.branch_names()) * policy.nfe_last
            else:
                acts, n_blocks = run_sequence(policy, windows)
            base_ms, ms = time_chunks([twin, policy], windows, timing_chunks)
            err = np.abs(acts[..., cont] - full[..., cont])
            flips = float((np.sign(acts[..., disc]) != np.sign(full[..., disc])).mean()) if disc else 0.0
            rows.append({"base": label, "cache": name, "nfe": policy.nfe_last, "block_exec": float(n_blocks),
                         "action_err": float(err.mean()), "action_err_max": float(err.max()), "gripper_flips": flips,
                         **{k: v for k, v in stats(ms).items() if k in ("p50_ms", "p99_ms")},
                         "speedup": float(np.percentile(base_ms, 50) / np.percentile(ms, 50))})
    policy.set_cache(None)
    policy.set_warm_start(None)
    return {"checkpoint": str(checkpoint_name), "data": str(data_path), "budget": budget, "episodes": episodes,
            "chunks": chunks, "timing_chunks": timing_chunks, "threads": torch.get_num_threads(), "rows": rows}


def markdown(report: dict) -> str:
    from dpctrl.launch.results import markdown_table
    return markdown_table(
        ["base", "cache", "network calls", "block executions", "action error (mean)", "(max)", "gripper flips",
         "p50 (ms)", "p99 (ms)", "speed-up"],
        [[r["base"], r["cache"], r["nfe"], f"{r['block_exec']:.1f}", f"{r['action_err']:.4f}",
          f"{r['action_err_max']:.3f}", f"{r['gripper_flips']:.3f}", f"{r['p50_ms']:.1f}",
          f"{r['p99_ms']:.1f}", f"{r['speedup']:.2f}x"]
         for r in report["rows"]])
