"""Which per-block schedule keeps the action closest to the uncached one? A study script
(not a command): one recording of every block's output on calibration windows, then
ACS schedules from different similarity matrices (cosine, as BAC's paper; negative L2 distance,
an extension) and from the first-order action error of each stale segment (the ``action``
objective, ``action_error_segments``), with and without Bubbling Union, and uniform schedules,
each scored like ``dpctrl bench cache``: mean |a - a_full| over continuous action dims on the
demo episodes' chunk sequences, same noise, and block executions per chunk.

``python3 launch/bench/cache_objectives.py [--checkpoint lift] [--data runs/data/lift.zarr] [--budget 10]``
(DDPM-100, 1 torch thread; a few minutes here).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dpctrl.policy.diffusion_policy import DiffusionPolicy
from dpctrl.launch.bench.cache import episode_windows, run_sequence
from dpctrl.launch.calibrate import dataset
from dpctrl.policy.accel.cache import (BlockCache, BlockRecorder, acs_steps, action_error_segments, bubbling_union,
                                similarity_and_change, uniform_schedule)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default="lift")
    ap.add_argument("--data", default="runs/data/lift.zarr")
    ap.add_argument("--budget", type=int, default=10)
    ap.add_argument("--windows", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    pol = DiffusionPolicy.load(args.checkpoint)
    pol.set_sampler("ddpm", 100)
    rec = BlockRecorder()
    pol.set_cache(rec)
    cal = dataset(pol, args.data).spaced_windows(args.windows)
    pol.sample(pol.encode_obs({k: torch.as_tensor(np.stack([w[k] for w in cal])) for k in pol.expected_obs()}))
    pol.set_cache(None)
    t0 = time.perf_counter()
    cond = pol.encode_obs({k: torch.as_tensor(np.stack([w[k] for w in cal])) for k in pol.expected_obs()})
    act_sims, _ = action_error_segments(pol, cond)
    print(f"action-error matrices in {time.perf_counter() - t0:.1f} s", flush=True)
    ts, blocks = rec.timesteps, pol.net.branch_names()
    windows = episode_windows(pol, args.data, 8, 12)
    cont = [d for d in range(pol.cfg.action_dim) if d not in pol.cfg.discrete_action_dims]
    full, _ = run_sequence(pol, windows)

    def score(name: str, schedules: dict[str, set]) -> None:
        pol.set_cache(BlockCache(schedules))
        acts, executions = run_sequence(pol, windows)
        pol.set_cache(None)
        err = np.abs(acts[..., cont] - full[..., cont]).mean()
        print(f"{name:36s} block executions {executions:6.1f}  action error {err:.4f}", flush=True)

    sims, change = {}, {}
    for b in blocks:
        S, change[b] = similarity_and_change(rec.outputs[b])
        D = torch.cdist(*(2 * [torch.stack(rec.outputs[b]).double()])).numpy()
        sims[b] = {"cosine": S, "-L2": -D, "action": act_sims[b]}
    for kind in ("action", "cosine", "-L2"):
        obj = "action" if kind == "action" else "cached"
        sched = {b: {ts[i] for i in acs_steps(sims[b][kind], args.budget, obj)} for b in blocks}
        first = [int(i) for i in acs_steps(sims[blocks[0]][kind], args.budget, obj)]
        print(f"ACS ({kind}) update steps of {blocks[0]}: {first}")
        for top_n in (0, 3):
            score(f"ACS {kind}, BU top-{top_n}", bubbling_union(sched, change, top_n))
    for every in (12, 10, 8):
        score(f"uniform every {every}", uniform_schedule(blocks, ts, every))


if __name__ == "__main__":
    main()
