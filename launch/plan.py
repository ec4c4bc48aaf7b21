"""``dpctrl plan collect|train|eval|bench``: diffusion planning on PointMaze (issue 9).

collect: the BFS + PD expert with goal resampling (D4RL maze2d style) into a zarr store:
         ``--steps`` control steps in store episodes of 10 000 (resumable).
train:   a ``diffuser`` or ``trajdiff`` planner on goal-directed segments of the expert's states
         (``data.samples.GoalSegments``: from any step until the expert reaches its goal, then
         at rest on the goal; a plain window of a goal-resampling run also holds the expert's
         turn-arounds at earlier goals, and planners trained on those wandered: 1.39x the
         expert's path on UMaze after 5k steps).
eval:    closed loop in ``control.ControlLoop`` on simulated time (100 Hz): plan from the
         start state to the goal (once, or every ``--replan-every`` steps), track the plan with
         a PD law on the interpolated plan (position + velocity feed-forward), then hold the
         goal. Every call also runs the expert and a uniform-random policy on the same seeds,
         for the D4RL-style normalised score 100 (R - R_random) / (R_expert - R_random), where
         R = steps within 0.45 m of the goal (the sparse maze2d return).
bench:   planning time of several checkpoints on the same scenes, interleaved (one run).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dpctrl.control.clock import FakeClock
from dpctrl.control.loop import ControlLoop, LoopConfig
from dpctrl.control.robot import SimRobot
from dpctrl.control.safety import SafetyFilter
from dpctrl.data.samples import GoalSegments
from dpctrl.envs.maze import DT, MazeExpert, MazeTask, maze_name, record_expert
from dpctrl.launch.collect import open_store
from dpctrl.policy.planner import PlannerConfig, TrajectoryPlanner
from dpctrl.policy.train import train_config_model

EVAL_SEED_START = 100000
STRIDE = {"umaze": 4, "medium": 8, "large": 12}  # 32 plan points: Diffuser's 128 / 256 / 384-step horizons
EPISODE_STEPS = 10_000
KP, KD = 10.0, 1.0  # the tracker's gains (the expert's)


def default_data(maze: str) -> Path:
    return Path(f"runs/data/maze_{maze_name(maze)}.zarr")


def collect(maze: str, steps: int = 1_000_000, out: str | Path | None = None, progress: bool = True) -> dict:
    maze = maze_name(maze)
    if steps < EPISODE_STEPS:
        raise ValueError(f"--steps must be >= {EPISODE_STEPS}")
    out = Path(out or default_data(maze))
    task = MazeTask(maze)
    rb = open_store(out, {"env": f"maze:{maze}", "images": False})
    n_eps = steps // EPISODE_STEPS
    t0, added, goals = time.perf_counter(), 0, 0
    for i in tqdm(range(rb.n_episodes, n_eps), desc=f"collect maze:{maze}", unit="ep", disable=not progress,
                  initial=rb.n_episodes, total=n_eps):
        d = record_expert(task, seed=i, steps=EPISODE_STEPS)
        goals += d.pop("goals_reached")
        rb.add_episode(d, meta={"seed": i})
        added += 1
    secs = time.perf_counter() - t0
    return {"maze": maze, "out": str(out), "episodes": rb.n_episodes, "steps": rb.n_steps, "added_steps": added * EPISODE_STEPS,
            "goals_reached": goals, "seconds": secs, "steps_per_s": added * EPISODE_STEPS / secs if added else None}


def train(maze: str, method: str, steps: int, out: str | Path, data: str | Path | None = None,
          data_steps: int = 1_000_000, batch_size: int = 64, lr: float = 2e-4, seed: int = 0,
          progress: bool = True) -> dict:
    maze = maze_name(maze)
    torch.manual_seed(seed)
    data = Path(data or default_data(maze))
    report = collect(maze, data_steps, data, progress=progress)
    rb = open_store(data, {"env": f"maze:{maze}", "images": False})
    cfg = PlannerConfig(method=method, stride=STRIDE[maze])
    ds = GoalSegments(rb, cfg.n_points, cfg.stride)
    planner = TrajectoryPlanner(cfg, seed=seed)
    planner.fit_states(ds.data)
    recipe = {"maze": maze, "data": str(data), "windows": len(ds),
              "command": f"dpctrl plan train --maze {maze} --planner {method} --steps {steps} --lr {lr:g} "
                         f"--batch-size {batch_size} --seed {seed} --out {out}"}
    return {"collect": report, **recipe,
            "train": train_config_model(planner, ds, out, recipe, steps, batch_size, lr, seed, progress=progress)}


# ---------------------------------------------------------------------------------- closed loop
def reference(plan: np.ndarray, stride: int, k: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Plan position and velocity ``k`` control steps after planning (linear interpolation);
    None past the plan's end."""
    f = k / stride
    if f >= len(plan) - 1:
        return None
    i = int(f)
    w = f - i
    p = (1 - w) * plan[i] + w * plan[i + 1]
    return p[:2], p[2:]


def track(state: np.ndarray, goal: np.ndarray, plan: np.ndarray | None, stride: int, k: int) -> np.ndarray:
    """PD on the plan's next reference (velocity feed-forward); the goal once the plan is done."""
    ref = reference(plan, stride, k + 1) if plan is not None else None
    p, v = (np.asarray(goal, np.float64), np.zeros(2)) if ref is None else ref
    return np.clip(KP * (p - state[:2]) + KD * (v - state[2:]), -1.0, 1.0).astype(np.float32)


class PlanFollower:
    """The loop's policy: plans on the first call (and every ``replan_every`` calls when > 0),
    tracks the plan in between; records plan latency and the plans themselves."""

    def __init__(self, planner: TrajectoryPlanner, replan_every: int = 0, n_steps: int | None = None):
        self.planner, self.replan_every, self.n_steps = planner, replan_every, n_steps
        self.latencies: list[float] = []
        self.plans: list[np.ndarray] = []
        self.reset()

    def reset(self) -> None:
        self.plan, self.k = None, 0

    def __call__(self, window: dict) -> np.ndarray:
        state, goal = np.asarray(window["state"][-1], np.float64), np.asarray(window["goal"][-1], np.float64)
        if self.plan is None or (self.replan_every and self.k >= self.replan_every):
            t0 = time.perf_counter()
            self.plan = self.planner.plan(state[None], goal[None], n_steps=self.n_steps)[0]
            self.latencies.append((time.perf_counter() - t0) * 1000)
            self.plans.append(self.plan)
            self.k = 0
        action = track(state, goal, self.plan, self.planner.cfg.stride, self.k)
        self.k += 1
        return action[None]


def _run_simple(task: MazeTask, seed: int, act) -> dict:
    obs, _ = task.reset(seed=seed)
    for _ in range(task.max_steps):
        obs, *_ = task.step(act(obs))
    return {"seed": seed, "success": task.reached, "score": task.score, "path_length": task.path_length}


def baselines(maze: str, seeds: range) -> dict[str, list[dict]]:
    """The expert and a uniform-random policy on ``seeds`` (the normalised score's ends)."""
    task = MazeTask(maze)
    expert = MazeExpert(task.grid)
    rng = np.random.default_rng(0)
    return {"expert": [_run_simple(task, s, expert.act) for s in seeds],
            "random": [_run_simple(task, s, lambda o: rng.uniform(-1, 1, 2).astype(np.float32)) for s in seeds]}


def evaluate(maze: str, planner_name: str, episodes: int, checkpoint: str | None = None, seed_start: int = EVAL_SEED_START,
             replan_every: int = 0, n_steps: int | None = None, progress: bool = True) -> dict:
    maze = maze_name(maze)
    if episodes < 1:
        raise ValueError("--episodes must be >= 1")
    seeds = range(seed_start, seed_start + episodes)
    planner = None
    if planner_name not in ("expert", "random"):  # load and check before any episode runs
        if checkpoint is None:
            raise ValueError("--checkpoint is required for a diffusion planner")
        planner = TrajectoryPlanner.load(checkpoint, seed=seed_start)
        if planner.cfg.method != planner_name:
            raise ValueError(f"{checkpoint} holds a {planner.cfg.method!r} planner, not {planner_name!r}")
        trained_on = planner.checkpoint_config.get("maze")
        if trained_on is not None and trained_on != maze:
            raise ValueError(f"{checkpoint} was trained on maze {trained_on!r}, not {maze!r}; pass --checkpoint")
    base = baselines(maze, seeds)
    if planner is None:
        rows = base[planner_name]
        plans_in_wall, latencies = None, []
    else:
        task = MazeTask(maze)
        follower = PlanFollower(planner, replan_every, n_steps)
        clock = FakeClock()
        robot = SimRobot(task, clock=clock)
        safety = SafetyFilter(low=task.action_space.low, high=task.action_space.high, safe_action=np.zeros(2, np.float32))
        loop = ControlLoop(robot, follower, 1, 0, 1, LoopConfig(rate_hz=1 / DT, async_inference=False, spin_s=0.0),
                           safety, clock=clock, sleep=clock.sleep)
        rows = []
        with robot:
            for seed in tqdm(seeds, desc=f"plan eval {maze} {planner_name}", disable=not progress):
                follower.reset()
                loop.run_episode(seed)
                rows.append({"seed": seed, "success": task.reached, "score": task.score, "path_length": task.path_length})
        loop.close()
        latencies = follower.latencies
        pts = np.concatenate([p[:, :2] for p in follower.plans])
        plans_in_wall = float(task.grid.in_wall(pts).mean())
    return summarize(rows, base, {"maze": maze, "planner": planner_name, "checkpoint": checkpoint,
                                  "seed_start": seed_start, "replan_every_steps": replan_every,
                                  "n_steps": n_steps or (planner.cfg.n_steps if planner and planner.cfg.method == "diffuser"
                                                         else planner.cfg.refine_steps if planner else None),
                                  "horizon_steps": planner.cfg.horizon_steps if planner else None,
                                  "torch_threads": torch.get_num_threads()}, latencies, plans_in_wall)


def summarize(rows: list[dict], base: dict, header: dict, latencies: list[float], in_wall: float | None) -> dict:
    score = np.mean([r["score"] for r in rows])
    r_exp, r_rand = (np.mean([r["score"] for r in base[k]]) for k in ("expert", "random"))
    both = [(r["path_length"], e["path_length"]) for r, e in zip(rows, base["expert"]) if r["success"] and e["success"]]
    out = {**header, "episodes": len(rows), "success_rate": float(np.mean([r["success"] for r in rows])),
           "score": float(score), "expert_score": float(r_exp), "random_score": float(r_rand),
           "normalized_score": float(100 * (score - r_rand) / max(r_exp - r_rand, 1e-9)),
           "expert_success_rate": float(np.mean([e["success"] for e in base["expert"]])),
           "path_length": float(np.mean([a for a, _ in both])) if both else None,
           "expert_path_length": float(np.mean([b for _, b in both])) if both else None,
           "path_length_ratio": float(np.mean([a for a, _ in both]) / np.mean([b for _, b in both])) if both else None,
           "plan_waypoints_in_walls": in_wall}
    if latencies:
        lat = np.asarray(latencies)
        out["plan_time_ms"] = {"p50": float(np.median(lat)), "mean": float(lat.mean()),
                               "p99": float(np.percentile(lat, 99)), "plans": len(lat)}
    out["per_episode"] = rows
    return out


def bench(maze: str, checkpoints: dict[str, str], scenes: int = 50, reps: int = 3,
          seed_start: int = EVAL_SEED_START) -> dict:
    """Planning time per checkpoint on the same start states, calls interleaved."""
    task = MazeTask(maze_name(maze))
    starts = []
    for s in range(seed_start, seed_start + scenes):
        obs, _ = task.reset(seed=s)
        starts.append((obs["state"][None], obs["goal"][None]))
    planners = {name: TrajectoryPlanner.load(path, seed=seed_start) for name, path in checkpoints.items()}
    times: dict[str, list[float]] = {n: [] for n in planners}
    for name, p in planners.items():  # warm-up
        p.plan(*starts[0])
    for _ in range(reps):
        for state, goal in starts:
            for name, p in planners.items():
                t0 = time.perf_counter()
                p.plan(state, goal)
                times[name].append((time.perf_counter() - t0) * 1000)
    out = {"maze": maze, "scenes": scenes, "reps": reps, "torch_threads": torch.get_num_threads(),
           "checkpoints": checkpoints,
           "plan_time_ms": {n: {"p50": float(np.median(v)), "mean": float(np.mean(v))} for n, v in times.items()}}
    first = next(iter(times))
    out["ratio_vs_" + first] = {n: float(np.median(v) / np.median(times[first])) for n, v in times.items()}
    return out
