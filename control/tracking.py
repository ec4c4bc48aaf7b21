"""Plans -> commands: a PD tracker for maze plans and the driving follower's predictor, each
as the loop's policy (``predict(window) -> actions``) with plan latencies recorded."""
from __future__ import annotations

import time

import numpy as np

from dpctrl.control.follower import follow

KP, KD = 10.0, 1.0  # the maze tracker's gains (the expert's)


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

    def __init__(self, planner, replan_every: int = 0, n_steps: int | None = None):
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


def drive_predictor(planner, n_steps: int | None, replan_every: int, latencies: list[float], sim_hz: float):
    """Plan from the newest observation every call (``replan_every`` control steps) and follow
    the best trajectory with that many (acceleration, steering) commands."""
    dt = 1.0 / sim_hz

    def predict(window: dict) -> np.ndarray:
        obs = {k: window[k][-1:] for k in ("ego", "agents")}  # the newest observation, batch of 1
        t0 = time.perf_counter()
        plan = planner.plan(obs, n_steps=n_steps).best[0]
        latencies.append((time.perf_counter() - t0) * 1000)
        ego = obs["ego"][0]  # lateral position, road-frame velocity (vx, vy), heading
        return follow(plan, speed=float(np.hypot(ego[1], ego[2])), n_steps=replan_every, dt=dt, heading=float(ego[3]))

    return predict
