"""``dpctrl demo``: the main job. Run the shipped Lift policy closed loop and compare samplers
(DDPM-100, DDIM-10, and DDIM warm-started by RTI).

Loads the ``lift`` checkpoint that ships in policy/checkpoints/ (if it is missing, trains one
with the recipe of ``dpctrl train --task lift``), evaluates DDPM-100 and DDIM-10 on the same
held-out seeds, prints a table of success rate and per-chunk latency, and writes
``demo.json``, ``latency.png`` and a video to ``--out``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from dpctrl.policy.diffusion_policy import DiffusionPolicy
from dpctrl.launch.calibrate import default_rti_config, make_cache
from dpctrl.launch.evaluate import evaluate, record_video
from dpctrl.launch.results import markdown_table
from dpctrl.launch.train import EVAL_SEED_START, train_task
from dpctrl.policy import checkpoint

# (row name, sampler, steps, warm start, block cache): RTI warm-starts DDIM from the shifted
# previous chunk at the checkpoint's calibrated K' (rti.json; 2 if uncalibrated); BAC uses
# the checkpoint's cache_bac.json (rows skipped, with a note, when it is not calibrated).
VARIANTS = [("DDPM-100", "ddpm", 100, False, False), ("DDIM-10", "ddim", 10, False, False),
            ("RTI", "ddim", 10, True, False), ("BAC (DDPM-100)", "ddpm", 100, False, True),
            ("RTI+BAC", "ddim", 10, True, True)]
DEFAULT_TRAIN_STEPS = 6000


def _load_or_train(out: Path, progress: bool, name: str = "lift"):
    try:
        return DiffusionPolicy.load(name), str(name) + (" (shipped)" if name in checkpoint.shipped() else "")
    except checkpoint.CheckpointError as e:
        print(f"no shipped lift checkpoint ({e}); training one with the default recipe "
              f"({DEFAULT_TRAIN_STEPS} steps, ~25 min on 2 cores)")
        train_task("lift", DEFAULT_TRAIN_STEPS, out / "train", progress=progress)
        return DiffusionPolicy.load(out / "train" / "checkpoint"), str(out / "train" / "checkpoint")


def latency_plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.boxplot([r["chunk_latency_ms"]["samples"] for r in rows], showfliers=True)
    ax.set_xticks(range(1, len(rows) + 1), [f"{r['name']}\n({r['nfe_per_chunk']} calls)" for r in rows], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("per-chunk latency, batch 1 (ms)")
    ax.set_title(f"Lift, {torch.get_num_threads()} CPU threads")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(rows: list[dict], source: str, episodes: int) -> str:
    base = rows[0]["chunk_latency_ms"]["p50"]
    ddim = rows[1]["chunk_latency_ms"]["p50"]
    body = markdown_table(
        ["sampler", "success", "network calls/chunk", "latency p50 (ms)", "p99 (ms)", "speed-up vs DDPM-100",
         "vs DDIM-10"],
        [[r["name"], f"{r['success_rate']:.3f}", r["nfe_per_chunk"], f"{r['chunk_latency_ms']['p50']:.1f}",
          f"{r['chunk_latency_ms']['p99']:.1f}", f"{base / r['chunk_latency_ms']['p50']:.1f}x",
          f"{ddim / r['chunk_latency_ms']['p50']:.1f}x"] for r in rows])
    return (f"Lift closed loop, checkpoint {source}, {episodes} held-out seeds from {EVAL_SEED_START}, "
            f"{torch.get_num_threads()} CPU threads, batch-1 latency.\n\n{body}")


def demo(out: Path, episodes: int = 20, progress: bool = True, checkpoint_name: str = "lift",
         max_steps: int | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    policy, source = _load_or_train(out, progress, checkpoint_name)
    rows = []
    for name, sampler, steps, warm, cached in VARIANTS:
        policy.set_sampler(sampler, steps)
        policy.set_warm_start(default_rti_config(checkpoint_name, policy) if warm else None)
        policy.set_cache(None)
        if cached:
            try:
                cache = make_cache("bac", checkpoint_name, policy)
            except ValueError as e:
                print(f"skipping the {name} row: {e}")
                continue
            policy.set_cache(cache)
        res = evaluate(policy, "lift", episodes, EVAL_SEED_START, max_steps=max_steps, progress=progress)
        if warm:
            name = name.replace("RTI", f"RTI (DDIM, K'={policy.warm.cfg.start_t})")
        if cached:
            res["block_executions"], res["block_reuses"] = cache.executed, cache.reused
        rows.append({"name": name, **res})
    policy.set_warm_start(None)
    policy.set_cache(None)
    print()
    print(table(rows, source, episodes))
    latency_plot(rows, out / "latency.png")
    policy.set_sampler("ddim", 10)
    video = record_video(policy, "lift", EVAL_SEED_START, out / "lift_ddim10.mp4", max_steps=max_steps)
    report = {"checkpoint": source, "rows": rows, "video": video, "latency_plot": str(out / "latency.png")}
    (out / "demo.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'demo.json'}, {out / 'latency.png'}, {video['video']} "
          f"(seed {video['seed']}, success {video['success']})")
    return report
