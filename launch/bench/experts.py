"""``dpctrl bench experts``: scripted-expert success over seeded episodes and collect speed."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dpctrl import envs
from dpctrl.envs.rollout import expert_episode
from dpctrl.data.collect import collect
from dpctrl.launch.results import markdown_table


def expert_success(task: str, episodes: int, seed_start: int = 0, progress: bool = True) -> dict:
    env, expert = envs.make(task), envs.expert(task)
    try:
        start, succ, steps = time.perf_counter(), [], 0
        for seed in tqdm(range(seed_start, seed_start + episodes), desc=f"expert {task}", disable=not progress):
            ep = expert_episode(env, expert, seed)
            succ.append(ep.success)
            steps += ep.length
        seconds = time.perf_counter() - start
    finally:
        env.close()
    failed = [seed_start + i for i, s in enumerate(succ) if not s]
    return {"task": task, "episodes": episodes, "success_rate": float(np.mean(succ)), "failed_seeds": failed,
            "mean_length": steps / episodes, "rollout_steps_per_s": steps / seconds}


def bench_experts(tasks: list[str], episodes: int, collect_episodes: int, progress: bool = True) -> list[dict]:
    rows = []
    for task in tasks:
        row = expert_success(task, episodes, progress=progress)
        for images in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                rep = collect(task, collect_episodes, Path(tmp) / "c.zarr", images=images, progress=progress)
            row["collect_images_steps_per_s" if images else "collect_steps_per_s"] = rep.steps_per_s
        rows.append(row)
    return rows


def markdown(rows: list[dict], command: str, machine: str) -> str:
    body = markdown_table(
        ["task", "expert success", "episodes", "mean length", "collect steps/s (low-dim)",
         "collect steps/s (+84x84 images)"],
        [[r["task"], f"{r['success_rate']:.2f}", r["episodes"], f"{r['mean_length']:.1f}",
          f"{r['collect_steps_per_s']:.0f}", f"{r['collect_images_steps_per_s']:.0f}"] for r in rows])
    return f"Command: `{command}` — machine: {machine}.\n\n{body}"
