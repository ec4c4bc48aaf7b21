"""``dpctrl bench policy``: per-chunk latency and network calls of every inference variant,
for the shipped Lift policy and a 9M-parameter DP-T (docs/references.md §1 size: 8 layers, width
256; random weights, timing only), at batch 1 and batch 8, in one process and one run.

Variants: DDPM-100, DDIM-10, DPM-Solver++ (10 steps), RTI (the checkpoint's rti.json),
BAC (DDPM-100 with cache_bac.json; for the 9M model a schedule calibrated here on the same
windows, since it has no calibration of its own), RTI+BAC, and the floor: one network call
(DDIM-1). Ratios are p50 against DDPM-100, DDIM-10 and the floor of the same model and
batch. Observation windows come from demo episodes; warm-started variants run them in
episode order so every timed chunk after the first is warm.
"""
from __future__ import annotations


import numpy as np
import torch

from dpctrl.launch.bench.cache import episode_windows
from dpctrl.policy.diffusion_policy import DiffusionPolicy
from dpctrl.launch.calibrate import dataset
from dpctrl.launch.bench.timing import stats, timed
from dpctrl.policy.accel.cache import cache_for
from dpctrl.policy.accel.warmstart import rti_for
from dpctrl.policy.accel.cache import calibrate_cache

# name -> (sampler, steps, warm start, cache)
VARIANTS = {
    "DDPM-100": ("ddpm", 100, False, False),
    "DDIM-10": ("ddim", 10, False, False),
    "DPM-Solver++-10": ("dpmpp", 10, False, False),
    "RTI": ("ddim", 10, True, False),
    "BAC (DDPM-100)": ("ddpm", 100, False, True),
    "RTI+BAC": ("ddim", 10, True, True),
    "floor: 1 call": ("ddim", 1, False, False),
}


def big_policy(like):
    from dpctrl.policy.diffusion_policy import PolicyConfig
    cfg = PolicyConfig(**{**like.cfg.to_dict(), "n_layer": 8, "n_emb": 256, "n_head": 4})
    torch.manual_seed(0)
    return DiffusionPolicy(cfg, like.normalizer).eval()


def chunk_times(policy, batches: list[dict], reps: int, outputs: list | None = None) -> list[float]:
    """Per-chunk wall-clock ms of ``predict_batch`` over ``reps`` chunks in episode order
    (host arrays in, host arrays out: a GPU run is synchronized by the copy back). The
    chunks' actions are appended to ``outputs`` if given."""
    times = []
    policy.reset()
    for i in range(reps + 1):
        b = batches[i % len(batches)]
        if i % len(batches) == 0:
            policy.reset()  # a new episode: its first chunk is cold
        actions, dt = timed(policy.predict_batch, b)
        policy.note_executed(policy.n_action_steps)
        if outputs is not None:
            outputs.append(actions)
        if i and (policy.warm is None or i % len(batches)):
            times.append(dt)  # not the warm-up call, not a cold chunk of a warm-started run
    return times


def configure(policy, checkpoint_name, variant: str, calibration: dict | None) -> None:
    """Set ``policy`` up as ``variant`` of VARIANTS (cache schedules from ``calibration`` or
    the checkpoint's cache_bac.json)."""
    sampler, steps, warm, cached = VARIANTS[variant]
    policy.set_cache(None)
    policy.set_sampler(sampler, steps)
    policy.set_warm_start(rti_for(checkpoint_name, policy) if warm else None)
    if cached:
        policy.set_cache(cache_for("bac", checkpoint_name, policy, calibration=calibration))


def calibrate_big(policy, data_path) -> dict:
    """BAC schedules for the 9M model (it has no calibration of its own): DDPM-100, budget 10."""
    policy.set_sampler("ddpm", 100)
    return calibrate_cache(policy, dataset(policy, data_path).spaced_windows(16), budget=10, objective="cached")


def bench_policy(checkpoint_name: str, data_path, batches=(1, 8), models=("lift", "9M"), reps: int = 20,
                 device: str = "cpu", progress: bool = True) -> dict:
    from tqdm import tqdm

    lift = DiffusionPolicy.load(checkpoint_name).to(device).eval()
    rows = []
    for model in models:
        pol = lift if model == "lift" else big_policy(lift).to(device)
        n_params = sum(p.numel() for p in pol.parameters())
        # the lift checkpoint's cache_bac.json; the 9M model is calibrated here
        cal = None if model == "lift" else calibrate_big(pol, data_path)
        for B in batches:
            chunks = max(2, reps // 4 + 1)
            seqs = episode_windows(pol, data_path, B, chunks)
            for name in tqdm(VARIANTS, desc=f"{model} batch {B}", disable=not progress):
                configure(pol, checkpoint_name, name, cal)
                ms = chunk_times(pol, seqs, reps)
                rows.append({"model": model, "params": n_params, "batch": B, "name": name, "nfe": pol.nfe_last,
                             **{k: v for k, v in stats(ms).items() if k in ("p50_ms", "p99_ms")},
                             "timed_chunks": len(ms)})
        pol.set_cache(None)
        pol.set_warm_start(None)
    for r in rows:
        same = {x["name"]: x["p50_ms"] for x in rows if x["model"] == r["model"] and x["batch"] == r["batch"]}
        r["vs_ddpm100"] = same["DDPM-100"] / r["p50_ms"]
        r["vs_ddim10"] = same["DDIM-10"] / r["p50_ms"]
        r["vs_floor"] = r["p50_ms"] / same["floor: 1 call"]
    return {"checkpoint": str(checkpoint_name), "device": device, "threads": torch.get_num_threads(), "reps": reps,
            "rows": rows}


def markdown(report: dict) -> str:
    from dpctrl.launch.results import markdown_table
    return markdown_table(
        ["model", "batch", "variant", "network calls", "p50 (ms)", "p99 (ms)", "speed-up vs DDPM-100", "vs DDIM-10",
         "x floor"],
        [[f"{r['model']} ({r['params'] / 1e6:.1f}M)", r["batch"], r["name"], r["nfe"], f"{r['p50_ms']:.1f}",
          f"{r['p99_ms']:.1f}", f"{r['vs_ddpm100']:.1f}x", f"{r['vs_ddim10']:.2f}x", f"{r['vs_floor']:.1f}"]
         for r in report["rows"]])


def plot(report: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = sorted({(r["model"], r["batch"]) for r in report["rows"]})
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(groups)
    names = list(VARIANTS)
    for gi, (m, b) in enumerate(groups):
        vals = [next(r["p50_ms"] for r in report["rows"] if (r["model"], r["batch"], r["name"]) == (m, b, n))
                for n in names]
        ax.bar(np.arange(len(names)) + gi * width, vals, width, label=f"{m}, batch {b}")
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("chunk latency p50 (ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
