"""Closed-loop episodes of trajectory planners on simulated time (``dpctrl plan eval``,
``dpctrl drive eval``): the fixed-rate loop (control/loop.py) on a fake clock that sleeping
advances, the planner's plans turned into commands by control/tracking.py, and the task's
metrics from its env module (envs/maze.py, envs/highway.py).

- maze: plan from the start state to the goal (once, or every ``replan_every`` steps), track
  the plan with a PD law, then hold the goal; the expert and a uniform-random policy run on
  the same seeds for the D4RL-style normalised score.
- drive: every ``replan_every`` control steps plan from the current observation and follow
  the best trajectory; on each episode's first scene all the planner's outputs are scored
  for mode diversity and, on the fork, the lanes among the top 3.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from dpctrl.control.clock import FakeClock
from dpctrl.control.loop import ControlLoop, LoopConfig
from dpctrl.control.robot import SimRobot
from dpctrl.control.safety import SafetyFilter
from dpctrl.control.tracking import PlanFollower, drive_predictor

BRAKE = np.array([-0.4, 0.0], np.float32)  # the driving hold: brake at 2 m/s^2, wheels straight


def _sim_loop(task, predict, action_steps: int, rate_hz: float, safe_action) -> tuple[ControlLoop, SimRobot]:
    clock = FakeClock()
    robot = SimRobot(task, clock=clock)
    safety = SafetyFilter(low=task.action_space.low, high=task.action_space.high, safe_action=safe_action)
    cfg = LoopConfig(rate_hz=rate_hz, async_inference=False, spin_s=0.0)
    return ControlLoop(robot, predict, 1, 0, action_steps, cfg, safety, clock=clock, sleep=clock.sleep), robot


def evaluate_maze(planner, maze: str, seeds: range, name: str, replan_every: int = 0, n_steps: int | None = None,
                  progress: bool = True) -> dict:
    """``planner`` (a TrajectoryPlanner, or None for ``name`` expert | random) on ``seeds``."""
    from dpctrl.envs.maze import DT, MazeTask, baselines, summarize_plans
    base = baselines(maze, seeds)
    if planner is None:
        rows, plans_in_wall, latencies = base[name], None, []
    else:
        task = MazeTask(maze)
        follower = PlanFollower(planner, replan_every, n_steps)
        loop, robot = _sim_loop(task, follower, 1, 1 / DT, np.zeros(2, np.float32))
        rows = []
        with robot:
            for seed in tqdm(seeds, desc=f"plan eval {maze} {name}", disable=not progress):
                follower.reset()
                loop.run_episode(seed)
                rows.append({"seed": seed, "success": task.reached, "score": task.score, "path_length": task.path_length})
        loop.close()
        latencies = follower.latencies
        plans_in_wall = float(task.grid.in_wall(np.concatenate([p[:, :2] for p in follower.plans])).mean())
    cfg = planner.cfg if planner is not None else None
    header = {"maze": maze, "planner": name, "seed_start": seeds.start, "replan_every_steps": replan_every,
              "n_steps": n_steps or (cfg.n_steps if cfg.method == "diffuser" else cfg.refine_steps) if cfg else None,
              "horizon_steps": cfg.horizon_steps if cfg else None, "torch_threads": torch.get_num_threads()}
    return summarize_plans(rows, base, header, latencies, plans_in_wall)


def first_scene_stats(planner, obs: dict, n_steps: int | None, scenario: str) -> dict:
    """All of a planner's trajectories for one scene: their mode diversity and, on the fork,
    whether both lanes are among the top 3."""
    from dpctrl.policy.trajectories import lateral_side, mode_diversity
    batch = {k: v[None] for k, v in obs.items()}
    n = planner.cfg.n_anchors
    plan = planner.plan(batch, n_steps=n_steps, n_samples=n if planner.cfg.method == "vanilla" else 1)
    out = {"diversity": mode_diversity(plan.trajs[0])}
    if scenario == "fork":
        out["top3_both_lanes"] = bool({-1, 1} <= set(lateral_side(plan.top(3)[0]).tolist()))
    return out


def evaluate_drive(planner, scenario: str, seeds: range, method: str, n_steps: int | None = None,
                   replan_every: int = 5, progress: bool = True) -> dict:
    """``planner`` (a DrivePlanner, or None for the IDM/MOBIL expert) on ``seeds``."""
    from dpctrl.envs.highway import SIM_HZ, DriveTask, summarize_drives
    task = DriveTask(scenario, expert=planner is None)
    latencies: list[float] = []
    rows = []
    loop = None
    if planner is not None:
        loop, robot = _sim_loop(task, drive_predictor(planner, n_steps, replan_every, latencies, SIM_HZ),
                                replan_every, SIM_HZ, BRAKE)
    else:
        robot = SimRobot(task, clock=FakeClock())
    with robot:
        for seed in tqdm(seeds, desc=f"drive eval {method}", disable=not progress):
            obs = robot.reset(seed)
            row: dict = {"seed": seed, "side": task.side}
            if planner is not None:
                row.update(first_scene_stats(planner, {k: obs[k] for k in ("ego", "agents")}, n_steps, scenario))
                loop.run_episode(seed)  # resets the robot again with the same seed: the same scene
            else:
                while not robot.done:
                    robot.act(np.zeros(2, np.float32))
            v = task.vehicle
            row.update({"crashed": bool(v.crashed), "offroad": not v.on_road,
                        "progress_m": float(v.position[0] - task.start_x), "final_lane": int(v.lane_index[2]),
                        "start_lane": task.start_lane, "steps": robot.steps})
            rows.append(row)
    if loop is not None:
        loop.close()
    header = {"method": method, "scenario": scenario,
              "prediction_type": planner.cfg.prediction_type if planner else None,
              "n_steps": n_steps if method != "anchored" else len(planner.cfg.infer_ts),
              "replan_every_steps": replan_every, "control_hz": SIM_HZ, "seed_start": seeds.start,
              "torch_threads": torch.get_num_threads()}
    return summarize_drives(rows, header, latencies)
