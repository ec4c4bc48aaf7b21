"""Trajectory follower: a planned path -> a chunk of (acceleration, steering) commands.

Pure pursuit on a time-indexed lookahead point of the plan, plus proportional speed control
towards the plan's own speed, rolled out on the kinematic bicycle model highway-env uses
(slip angle beta = atan(tan(delta) / 2), heading rate = v sin(beta) / (L / 2)). The rollout
gives the commands for the next ``n_steps`` control periods; the loop replans after them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FollowerConfig:
    waypoint_dt_s: float = 0.5
    lookahead_s: float = 0.6
    speed_gain: float = 2.0  # (m/s^2) per (m/s) of speed error
    length_m: float = 5.0
    accel_max: float = 5.0  # the action's full scale, m/s^2
    steer_max: float = np.pi / 4  # the action's full scale, rad


def follow(plan: np.ndarray, speed: float, n_steps: int, dt: float, heading: float = 0.0,
           cfg: FollowerConfig | None = None) -> np.ndarray:
    """Commands (n_steps, 2) in [-1, 1] (acceleration, steering as fractions of full scale)
    that track ``plan`` (W, 2) waypoints at ``cfg.waypoint_dt_s`` spacing, given relative to
    the vehicle in a frame where the vehicle's heading is ``heading`` rad (0: x forward,
    y right), starting at ``speed`` m/s."""
    cfg = cfg or FollowerConfig()
    plan = np.asarray(plan, np.float64)
    if plan.ndim != 2 or plan.shape[1] != 2 or not np.isfinite(plan).all():
        raise ValueError(f"plan must be finite (W, 2) waypoints, got shape {plan.shape}")
    path = np.concatenate([np.zeros((1, 2)), plan])
    times = cfg.waypoint_dt_s * np.arange(len(path))
    seg_speed = np.linalg.norm(np.diff(path, axis=0), axis=1) / cfg.waypoint_dt_s
    seg_mid = times[1:] - cfg.waypoint_dt_s / 2
    x = y = 0.0
    h, v = float(heading), float(speed)
    out = np.zeros((n_steps, 2))
    for i in range(n_steps):
        t = i * dt
        v_ref = np.interp(t + dt, seg_mid, seg_speed)
        acc = np.clip(cfg.speed_gain * (v_ref - v), -cfg.accel_max, cfg.accel_max)
        tl = t + cfg.lookahead_s
        target = np.array([np.interp(tl, times, path[:, 0]), np.interp(tl, times, path[:, 1])])
        d = target - np.array([x, y])
        c, s = np.cos(h), np.sin(h)
        dx, dy = c * d[0] + s * d[1], -s * d[0] + c * d[1]
        dist = max(np.hypot(dx, dy), 1e-3)
        kappa = 2.0 * dy / dist ** 2  # pure pursuit curvature (2 sin(alpha) / L)
        sin_beta = np.clip(kappa * cfg.length_m / 2, -0.999, 0.999)
        steer = np.clip(np.arctan(2 * np.tan(np.arcsin(sin_beta))), -cfg.steer_max, cfg.steer_max)
        out[i] = acc / cfg.accel_max, steer / cfg.steer_max
        beta = np.arctan(0.5 * np.tan(steer))
        x += v * np.cos(h + beta) * dt
        y += v * np.sin(h + beta) * dt
        h += v * np.sin(beta) / (cfg.length_m / 2) * dt
        v += acc * dt
    return out.astype(np.float32)
