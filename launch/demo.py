"""``dpctrl demo``: the main job. Run the shipped Lift policy closed loop and compare samplers
(DDPM-100, DDIM-10, and DDIM warm-started by RTI).

Loads the ``lift`` checkpoint that ships in policy/checkpoints/ (if it is missing, trains one
with the recipe of ``dpctrl train --task lift``), evaluates DDPM-100 and DDIM-10 on the same
held-out seeds, prints a table of success rate and per-chunk latency, and writes
``demo.json``, ``latency.png`` and a video to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from dpctrl.launch.options import write_json
from dpctrl.launch.results import add_update_docs, markdown_table

EVAL_SEED_START = 100_000  # policy.recipes.EVAL_SEED_START: demonstrations use seeds from 0

# (row name, sampler, steps, warm start, block cache): RTI warm-starts DDIM from the shifted
# previous chunk at the checkpoint's calibrated K' (rti.json; 2 if uncalibrated); BAC uses
# the checkpoint's cache_bac.json (rows skipped, with a note, when it is not calibrated).
VARIANTS = [("DDPM-100", "ddpm", 100, False, False), ("DDIM-10", "ddim", 10, False, False),
            ("RTI", "ddim", 10, True, False), ("BAC (DDPM-100)", "ddpm", 100, False, True),
            ("RTI+BAC", "ddim", 10, True, True)]
DEFAULT_TRAIN_STEPS = 6000


def _load_or_train(out: Path, progress: bool, name: str = "lift"):
    from dpctrl.launch.train import train_task
    from dpctrl.policy import checkpoint
    from dpctrl.policy.diffusion_policy import DiffusionPolicy
    try:
        return DiffusionPolicy.load(name), str(name) + (" (shipped)" if name in checkpoint.shipped() else "")
    except checkpoint.CheckpointError as e:
        print(f"no shipped lift checkpoint ({e}); training one with the default recipe "
              f"({DEFAULT_TRAIN_STEPS} steps, ~25 min on 2 cores)")
        train_task("lift", DEFAULT_TRAIN_STEPS, out / "train", progress=progress)
        return DiffusionPolicy.load(out / "train" / "checkpoint"), str(out / "train" / "checkpoint")


def latency_figure(rows: list[dict], threads: int):
    """Per-chunk latency of each row as horizontal box plots: one label per line on the y axis,
    so long variant names ("BAC (DDPM-100)") never run into each other."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.55 * len(rows)))
    ax.boxplot([r["chunk_latency_ms"]["samples"] for r in rows][::-1], vert=False, showfliers=True)
    ax.set_yticks(range(1, len(rows) + 1), [f"{r['name']} ({r['nfe_per_chunk']} calls)" for r in rows][::-1],
                  fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("per-chunk latency, batch 1 (ms)")
    ax.set_title(f"Lift, {threads} CPU threads")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def latency_plot(rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt
    import torch
    fig = latency_figure(rows, torch.get_num_threads())
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(rows: list[dict], source: str, episodes: int) -> str:
    import torch
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
    from dpctrl.envs.evaluate import evaluate, record_video
    from dpctrl.policy.accel.cache import cache_for
    from dpctrl.policy.accel.warmstart import rti_for
    out.mkdir(parents=True, exist_ok=True)
    policy, source = _load_or_train(out, progress, checkpoint_name)
    rows = []
    for name, sampler, steps, warm, cached in VARIANTS:
        policy.set_sampler(sampler, steps)
        policy.set_warm_start(rti_for(checkpoint_name, policy) if warm else None)
        policy.set_cache(None)
        if cached:
            try:
                cache = cache_for("bac", checkpoint_name, policy)
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


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from dpctrl.launch.results import check_block, machine, replace_block, results_page
    torch.set_num_threads(2)
    if args.update_docs:
        check_block(args.update_docs, "policy")
    rep = demo(Path(args.out), episodes=args.episodes, progress=not args.no_progress,
               checkpoint_name=args.checkpoint, max_steps=args.max_steps)
    write_json(args.json, rep)
    if args.update_docs:
        cmd = (f"dpctrl demo --episodes {args.episodes}" + (f" --checkpoint {args.checkpoint}" if args.checkpoint != "lift" else "")
               + (f" --max-steps {args.max_steps}" if args.max_steps else ""))
        replace_block(args.update_docs, "policy", f"Command: `{cmd}` — machine: {machine()}.\n\n"
                      + table(rep["rows"], rep["checkpoint"], args.episodes))
        # the plot on the docs' home page and the README, from this same run
        assets = Path(args.update_docs) / "assets"
        assets.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(rep["latency_plot"], assets / "latency.png")
        print(f"wrote {results_page(args.update_docs, 'policy')} and {assets / 'latency.png'}")
    return 0


def add_parser(sub) -> None:
    d = sub.add_parser("demo", help="the main job: the shipped Lift policy closed loop, DDPM-100 vs DDIM-10")
    d.add_argument("--out", default="runs/demo", help="output directory")
    d.add_argument("--episodes", type=int, default=20, help="held-out episodes per sampler")
    d.add_argument("--checkpoint", default="lift", help="checkpoint directory or shipped name")
    d.add_argument("--max-steps", type=int, help="cap episode length (default: the task's)")
    add_update_docs(d, "demo")
    d.add_argument("--json", help="write a machine-readable report here")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=cmd_demo)
