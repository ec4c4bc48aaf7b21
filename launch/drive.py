"""``dpctrl drive collect|train|eval``: trajectory planning on highway-env (issue 7).

collect: IDM/MOBIL expert episodes -> ``future`` waypoint targets in a zarr store
(resumable; crashed expert episodes are counted, not stored).
train:   one planner (anchored | vanilla | regression) on a store; collects first if missing.
eval:    closed loop in ``control.ControlLoop`` on simulated time: every ``replan_every``
         control steps the planner plans from the current observation and the follower turns
         the plan into that many (acceleration, steering) commands. Also, on each episode's
         first scene: all planner outputs for the mode-diversity score and, for the fork, the
         lanes among the top 3. ``--method expert`` runs the IDM/MOBIL expert instead.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dpctrl.control.clock import FakeClock
from dpctrl.control.follower import follow
from dpctrl.control.loop import ControlLoop, LoopConfig
from dpctrl.control.robot import SimRobot
from dpctrl.control.safety import SafetyFilter
from dpctrl.data.samples import StepDataset
from dpctrl.envs.highway import SIM_HZ, DriveTask, record_expert
from dpctrl.launch.collect import open_store
from dpctrl.launch.drive_cli import EVAL_SEED_START
from dpctrl.policy.drive import DriveConfig, DrivePlanner
from dpctrl.policy.train import train_config_model
from dpctrl.policy.trajectories import lateral_side, mode_diversity

BRAKE = np.array([-0.4, 0.0], np.float32)  # the safety filter's hold: brake at 2 m/s^2, wheels straight


def collect(scenario: str, episodes: int, out: str | Path, progress: bool = True) -> dict:
    rb = open_store(Path(out), {"env": f"highway:{scenario}", "images": False})
    tried = [int(s) for s in rb.attrs.get("tried_seeds", [])]
    seed, crashed, t0 = (max(tried) + 1 if tried else 0), 0, time.perf_counter()
    bar = tqdm(total=episodes, initial=rb.n_episodes, desc=f"collect {scenario}", disable=not progress)
    while rb.n_episodes < episodes:
        data, meta = record_expert(scenario, seed)
        tried.append(seed)
        if len(data["future"]):
            rb.add_episode(data, meta)
            bar.update(1)
        else:
            crashed += 1
        seed += 1
    rb.set_attrs({"tried_seeds": tried})
    bar.close()
    return {"out": str(out), "episodes": rb.n_episodes, "samples": rb.n_steps, "expert_crashes_this_call": crashed,
            "seconds": time.perf_counter() - t0}


def train(scenario: str, method: str, steps: int, out: str | Path, data: str | Path | None = None,
          demos: int = 300, batch_size: int = 128, lr: float = 3e-4, seed: int = 0, progress: bool = True) -> dict:
    torch.manual_seed(seed)
    data = Path(data or f"runs/data/drive_{scenario}.zarr")
    report = collect(scenario, demos, data, progress=progress)
    rb = open_store(data, {"env": f"highway:{scenario}", "images": False})
    ds = StepDataset(rb, ["ego", "agents"], "future", episodes=range(min(demos, rb.n_episodes)))
    planner = DrivePlanner(DriveConfig(method=method), seed=seed)
    planner.fit_trajectories(ds.targets, seed=seed)
    recipe = {"scenario": scenario, "data": str(data), "demos": min(demos, rb.n_episodes), "samples": len(ds),
              "command": f"dpctrl drive train --scenario {scenario} --method {method} --demos {demos} --steps {steps} "
                         f"--lr {lr:g} --batch-size {batch_size} --seed {seed} --out {out}"}
    result = train_config_model(planner, ds, out, recipe, steps, batch_size, lr, seed, warmup_steps=200,
                                save_every=500, progress=progress)
    return {"collect": report, **recipe, "train": result}


def _planner_predict(planner: DrivePlanner, n_steps: int | None, replan_every: int, latencies: list[float]):
    dt = 1.0 / SIM_HZ

    def predict(window: dict) -> np.ndarray:
        obs = {k: window[k][-1:] for k in ("ego", "agents")}  # the newest observation, batch of 1
        t0 = time.perf_counter()
        plan = planner.plan(obs, n_steps=n_steps).best[0]
        latencies.append((time.perf_counter() - t0) * 1000)
        ego = obs["ego"][0]  # lateral position, road-frame velocity (vx, vy), heading
        return follow(plan, speed=float(np.hypot(ego[1], ego[2])), n_steps=replan_every, dt=dt, heading=float(ego[3]))

    return predict


def _first_scene_stats(planner: DrivePlanner, obs: dict, n_steps: int | None, scenario: str) -> dict:
    batch = {k: v[None] for k, v in obs.items()}
    n = planner.cfg.n_anchors
    plan = planner.plan(batch, n_steps=n_steps, n_samples=n if planner.cfg.method == "vanilla" else 1)
    out = {"diversity": mode_diversity(plan.trajs[0])}
    if scenario == "fork":
        sides = set(lateral_side(plan.top(3)[0]).tolist())
        out["top3_both_lanes"] = bool({-1, 1} <= sides)
    return out


def evaluate(method: str, scenario: str, episodes: int, checkpoint: str | None = None, n_steps: int | None = None,
             replan_every: int = 5, seed_start: int = EVAL_SEED_START, progress: bool = True) -> dict:
    if episodes < 1:
        raise ValueError("--episodes must be >= 1")
    planner = None
    if method != "expert":
        if checkpoint is None:
            raise ValueError("--checkpoint is required unless --method expert")
        planner = DrivePlanner.load(checkpoint, seed=seed_start)
        if planner.cfg.method != method:
            raise ValueError(f"{checkpoint} holds a {planner.cfg.method!r} planner, not {method!r}")
    task = DriveTask(scenario, expert=method == "expert")
    latencies: list[float] = []
    episodes_out = []
    clock = FakeClock()
    robot = SimRobot(task, clock=clock)
    loop = None
    if planner is not None:
        safety = SafetyFilter(low=task.action_space.low, high=task.action_space.high, safe_action=BRAKE)
        # simulated time: a fake clock that sleeping advances (no spinning on it)
        cfg = LoopConfig(rate_hz=SIM_HZ, async_inference=False, spin_s=0.0)
        loop = ControlLoop(robot, _planner_predict(planner, n_steps, replan_every, latencies), 1, 0, replan_every,
                           cfg, safety, clock=clock, sleep=clock.sleep)
    with robot:
        for seed in tqdm(range(seed_start, seed_start + episodes), desc=f"drive eval {method}", disable=not progress):
            obs = robot.reset(seed)
            row: dict = {"seed": seed, "side": task.side}
            if planner is not None:
                row.update(_first_scene_stats(planner, {k: obs[k] for k in ("ego", "agents")}, n_steps, scenario))
                loop.run_episode(seed)  # resets the robot again with the same seed: the same scene
            else:
                while not robot.done:
                    robot.act(np.zeros(2, np.float32))
            v = task.vehicle
            row.update({"crashed": bool(v.crashed), "offroad": not v.on_road,
                        "progress_m": float(v.position[0] - task.start_x), "final_lane": int(v.lane_index[2]),
                        "start_lane": task.start_lane, "steps": robot.steps})
            episodes_out.append(row)
    if loop is not None:
        loop.close()
    return summarize(episodes_out, {"method": method, "scenario": scenario, "checkpoint": checkpoint,
                                    "prediction_type": planner.cfg.prediction_type if planner else None,
                                    "n_steps": n_steps if method != "anchored" else len(planner.cfg.infer_ts),
                                    "replan_every_steps": replan_every, "control_hz": SIM_HZ,
                                    "seed_start": seed_start, "torch_threads": torch.get_num_threads()}, latencies)


def summarize(rows: list[dict], header: dict, latencies: list[float]) -> dict:
    crashed = np.array([r["crashed"] for r in rows])
    change = np.array([np.sign(r["final_lane"] - r["start_lane"]) for r in rows])
    out = {**header, "episodes": len(rows), "collision_rate": float(crashed.mean()),
           "offroad_rate": float(np.mean([r["offroad"] for r in rows])),
           "progress_m": float(np.mean([r["progress_m"] for r in rows])),
           "lane_change": {"left": int((change < 0).sum()), "right": int((change > 0).sum()),
                           "keep": int((change == 0).sum())}}
    if latencies:
        lat = np.asarray(latencies)
        out["plan_latency_ms"] = {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                                  "mean": float(lat.mean()), "plans": len(lat)}
    if rows and "diversity" in rows[0]:
        out["diversity"] = float(np.mean([r["diversity"] for r in rows]))
    if rows and "top3_both_lanes" in rows[0]:
        out["top3_both_lanes"] = float(np.mean([r["top3_both_lanes"] for r in rows]))
    out["per_episode"] = rows
    return out


def bench_latency(checkpoints: dict[str, str], scenario: str = "fork", scenes: int = 50, reps: int = 3,
                  seed_start: int = EVAL_SEED_START) -> dict:
    """Plan latency (batch 1, as in the loop) of several planners on the same scenes, timed
    interleaved in one process so that machine load hits them alike. ``checkpoints`` maps a
    label (``anchored``, ``vanilla-20``, ``vanilla-2``, ``regression``) to a checkpoint."""
    planners = {}
    for label, ckpt in checkpoints.items():
        method, _, steps = label.partition("-")
        planner = DrivePlanner.load(ckpt)
        if planner.cfg.method != method:
            raise ValueError(f"{ckpt} holds a {planner.cfg.method!r} planner, not {method!r}")
        planners[label] = (planner, int(steps) if steps else None)
    task = DriveTask(scenario)
    obs_list = [task.reset(seed=s)[0] for s in range(seed_start, seed_start + scenes)]
    times: dict[str, list[float]] = {k: [] for k in planners}
    for planner, steps in planners.values():  # warm-up: first calls pay for lazy initialisation
        planner.plan({k: v[None] for k, v in obs_list[0].items()}, n_steps=steps)
    for obs in obs_list:
        batch = {k: v[None] for k, v in obs.items()}
        for _ in range(reps):
            for label, (planner, steps) in planners.items():
                t0 = time.perf_counter()
                planner.plan(batch, n_steps=steps)
                times[label].append((time.perf_counter() - t0) * 1000)
    p50 = {k: float(np.percentile(v, 50)) for k, v in times.items()}
    base = p50.get("vanilla-20")
    return {"scenario": scenario, "scenes": scenes, "reps": reps, "torch_threads": torch.get_num_threads(),
            "latency_ms": {k: {"p50": p50[k], "p99": float(np.percentile(v, 99))} for k, v in times.items()},
            "vs_vanilla20": {k: v / base for k, v in p50.items()} if base else None}
