"""``dpctrl plan bench`` and ``dpctrl drive bench``: planning time (batch 1, as in the loop) of
several planner checkpoints on the same scenes, timed interleaved in one process."""
from __future__ import annotations

import numpy as np
import torch

from dpctrl.launch.bench.timing import interleaved, timed

EVAL_SEED_START = 100_000


def _scene_times(planners: dict, scenes: list, reps: int, call) -> dict[str, np.ndarray]:
    """Every planner on every scene ``reps`` times (after one warm-up call each)."""
    for label in planners:  # warm-up: first calls pay for lazy initialisation
        call(label, scenes[0])
    return interleaved(list(planners), len(scenes) * reps,
                       lambda label, r: timed(call, label, scenes[r // reps])[1])


def bench_maze(maze: str, checkpoints: dict[str, str], scenes: int = 50, reps: int = 3,
               seed_start: int = EVAL_SEED_START) -> dict:
    """Planning time per checkpoint on the same start states; ratios against the first."""
    from dpctrl.envs.maze import MazeTask, maze_name
    from dpctrl.policy.planner import TrajectoryPlanner
    task = MazeTask(maze_name(maze))
    starts = []
    for s in range(seed_start, seed_start + scenes):
        obs, _ = task.reset(seed=s)
        starts.append((obs["state"][None], obs["goal"][None]))
    planners = {name: TrajectoryPlanner.load(path, seed=seed_start) for name, path in checkpoints.items()}
    times = _scene_times(planners, starts, reps, lambda label, scene: planners[label].plan(*scene))
    out = {"maze": maze, "scenes": scenes, "reps": reps, "torch_threads": torch.get_num_threads(),
           "checkpoints": checkpoints,
           "plan_time_ms": {n: {"p50": float(np.median(v)), "mean": float(np.mean(v))} for n, v in times.items()}}
    first = next(iter(times))
    out["ratio_vs_" + first] = {n: float(np.median(v) / np.median(times[first])) for n, v in times.items()}
    return out


def bench_drive(checkpoints: dict[str, str], scenario: str = "fork", scenes: int = 50, reps: int = 3,
                seed_start: int = EVAL_SEED_START) -> dict:
    """Plan latency of driving planners on the same scenes. ``checkpoints`` maps a label
    (``anchored``, ``vanilla-20``, ``vanilla-2``, ``regression``) to a checkpoint."""
    from dpctrl.envs.highway import DriveTask
    from dpctrl.policy.drive import DrivePlanner
    from dpctrl.policy.registry import load_method
    planners = {}
    for label, ckpt in checkpoints.items():
        method, _, steps = label.partition("-")
        planners[label] = (load_method(DrivePlanner, ckpt, method), int(steps) if steps else None)
    task = DriveTask(scenario)
    batches = [{k: v[None] for k, v in task.reset(seed=s)[0].items()} for s in range(seed_start, seed_start + scenes)]
    times = _scene_times(planners, batches, reps,
                         lambda label, batch: planners[label][0].plan(batch, n_steps=planners[label][1]))
    p50 = {k: float(np.percentile(v, 50)) for k, v in times.items()}
    base = p50.get("vanilla-20")
    return {"scenario": scenario, "scenes": scenes, "reps": reps, "torch_threads": torch.get_num_threads(),
            "latency_ms": {k: {"p50": p50[k], "p99": float(np.percentile(v, 99))} for k, v in times.items()},
            "vs_vanilla20": {k: v / base for k, v in p50.items()} if base else None}
