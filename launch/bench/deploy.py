"""``dpctrl bench deploy``: eager vs the TorchScript-frozen denoiser (policy/accel/deploy.py)
at batch 1, per base sampler, in one run. Two copies of the policy (one per path, each with
its own warm-start memory and the same noise seed) predict the same demo-episode windows,
alternating call by call so that machine load hits both alike; reports p50/p99 chunk
latency, the speed-up and the largest action difference (robot units)."""
from __future__ import annotations


import numpy as np
import torch

from dpctrl.policy.diffusion_policy import DiffusionPolicy
from dpctrl.launch.bench.cache import BASES, episode_windows
from dpctrl.launch.bench.timing import stats, timed
from dpctrl.policy.accel.warmstart import rti_for


def bench_deploy(checkpoint_name: str, data_path, chunks: int = 12, episodes: int = 4,
                 bases: tuple[str, ...] = ("DDIM-10", "RTI")) -> dict:
    pols = {"eager": DiffusionPolicy.load(checkpoint_name), "torchscript": DiffusionPolicy.load(checkpoint_name)}
    batches = episode_windows(pols["eager"], data_path, episodes, chunks)
    rows = []
    for base in bases:
        sampler, steps, warm = BASES[base]
        for kind, pol in pols.items():
            pol.set_sampler(sampler, steps)
            pol.set_warm_start(rti_for(checkpoint_name, pol) if warm else None)
            pol.set_deploy(None if kind == "eager" else "torchscript")
        times = {k: [] for k in pols}
        diff = 0.0
        for e in range(episodes):
            for pol in pols.values():
                pol.reset()
                pol.generator.manual_seed(e)
            for c, batch in enumerate(batches):
                w = {k: v[e:e + 1] for k, v in batch.items()}
                order = list(pols) if (e + c) % 2 else list(pols)[::-1]
                out = {}
                for kind in order:
                    out[kind], ms = timed(pols[kind].predict_batch, w)
                    if c:  # the episode's first (cold) chunk is not timed
                        times[kind].append(ms)
                    pols[kind].note_executed(pols[kind].n_action_steps)
                diff = max(diff, float(np.abs(out["eager"] - out["torchscript"]).max()))
        e, t = stats(times["eager"]), stats(times["torchscript"])
        pol = pols["eager"]
        label = base if not warm else f"RTI (DDIM, K'={pol.warm.cfg.start_t}, {pol.warm.cfg.tail} tail)"
        rows.append({"base": label, "nfe": pol.nfe_last, "eager_p50_ms": e["p50_ms"], "eager_p99_ms": e["p99_ms"],
                     "traced_p50_ms": t["p50_ms"], "traced_p99_ms": t["p99_ms"],
                     "speedup": e["p50_ms"] / t["p50_ms"], "max_abs_action_diff": diff, "timed_chunks": e["n"]})
    return {"checkpoint": str(checkpoint_name), "threads": torch.get_num_threads(), "rows": rows}


def markdown(report: dict) -> str:
    from dpctrl.launch.results import markdown_table
    return markdown_table(
        ["base", "network calls", "eager p50 (ms)", "p99", "TorchScript p50 (ms)", "p99", "speed-up",
         "max action diff"],
        [[r["base"], r["nfe"], f"{r['eager_p50_ms']:.2f}", f"{r['eager_p99_ms']:.2f}", f"{r['traced_p50_ms']:.2f}",
          f"{r['traced_p99_ms']:.2f}", f"{r['speedup']:.2f}x", f"{r['max_abs_action_diff']:.1e}"]
         for r in report["rows"]])
