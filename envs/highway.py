"""Driving on highway-env with continuous (acceleration, steering) and IDM/MOBIL experts.

Scenarios (3 lanes, lane centres at y = 0, 4, 8 m; +y is to the right of travel):
- ``fork``: the ego drives in the middle lane towards a slow leader 25-40 m ahead; both side
  lanes are free. The expert changes lane left or right at random (seeded), so the futures
  seen from the first frames are bimodal. 20 s.
- ``traffic``: highway-env's random traffic, reduced to 12 IDM vehicles; the expert is IDM
  for speed and MOBIL for lane changes (highway-env's own models). 30 s.

Frame: ego-centred and road-aligned (x along the road, y to its right, origin at the ego):
on a straight highway the lanes stay at fixed lateral offsets whatever the ego's heading,
which keeps the targets simple; the heading is part of the observation, and the follower
is told it (``control.follower.follow(..., heading=)``).

Observation (a dict, in that frame):
- ``ego`` (4,): lateral position on the road [m], velocity along / across the road [m/s], heading [rad]
- ``agents`` (N_AGENTS, 5): presence, dx, dy, dvx, dvy of the nearest vehicles within 80 m
  (nearest first, zero rows absent).
Action: Box(-1, 1, (2,)) = (acceleration, steering) mapped to +-5 m/s^2 and +-pi/4 rad.
``info``: ``crashed``, ``progress_m`` (distance along the road since reset), ``lane``
(current lane index), ``success`` (= ended without a crash; set on the last step only).

With ``expert=True`` the ego is an IDM/MOBIL vehicle that ignores the action (it drives
itself); ``record_expert`` turns such episodes into training samples with targets
``future`` (8 waypoints at 0.5 s over 4 s, in the frame above at the sample's time).
"""
from __future__ import annotations

import numpy as np
import gymnasium as gym
from gymnasium import spaces

SCENARIOS = ("fork", "traffic")
N_AGENTS = 8
SIM_HZ = 10  # one simulation frame per control step
N_WAYPOINTS, WAYPOINT_DT_S = 8, 0.5
STEPS_PER_WAYPOINT = int(round(WAYPOINT_DT_S * SIM_HZ))
ACCEL_RANGE, STEER_RANGE = 5.0, np.pi / 4
LANE_WIDTH = 4.0
SENSE_RANGE_M = 80.0


def _highway():
    try:
        import highway_env  # noqa: F401  (registers the envs)
        from highway_env.envs.highway_env import HighwayEnv
        from highway_env.vehicle.behavior import IDMVehicle
    except ImportError as e:  # pragma: no cover - depends on the extra
        raise ImportError("the driving tasks need highway-env: pip install 'dpctrl[highway]'") from e
    return HighwayEnv, IDMVehicle


def _scene_env_class():
    HighwayEnv, IDMVehicle = _highway()

    class SceneEnv(HighwayEnv):
        """HighwayEnv whose vehicles are placed by ``scenario``; the ego is an IDM/MOBIL
        vehicle when ``expert`` is set (then ``expert_side`` in {-1, +1} fixes the fork)."""

        @classmethod
        def default_config(cls) -> dict:
            cfg = super().default_config()
            cfg.update({
                "scenario": "traffic", "expert": False, "expert_side": 1,
                "action": {"type": "ContinuousAction"},
                "observation": {"type": "Kinematics"},  # unused: DriveTask builds its own
                "lanes_count": 3, "vehicles_count": 12, "duration": 30,
                "simulation_frequency": SIM_HZ, "policy_frequency": SIM_HZ,
                "offroad_terminal": True,
            })
            return cfg

        def define_spaces(self) -> None:
            super().define_spaces()
            # DriveTask builds its own observation; highway-env's (pandas-based) one costs ~95%
            # of a step, so it is not computed
            self.observation_type.observe = lambda: None

        def _ego(self, position, speed, enable_lane_change=True, target_lane=None):
            if not self.config["expert"]:
                return self.action_type.vehicle_class(self.road, position, 0.0, speed)
            lane_index = self.road.network.get_closest_lane_index(position)
            v = IDMVehicle(self.road, position, 0.0, speed, target_speed=speed,
                           enable_lane_change=enable_lane_change,
                           target_lane_index=target_lane or lane_index)
            return v

        def _create_vehicles(self) -> None:
            rng = self.np_random
            if self.config["scenario"] == "fork":
                lane = self.road.network.get_lane(("0", "1", 1))
                speed = rng.uniform(22.0, 27.0)
                side = int(self.config["expert_side"])
                ego = self._ego(lane.position(50.0, 0.0), speed, enable_lane_change=False,
                                target_lane=("0", "1", 1 + side))
                gap, lead_speed = rng.uniform(25.0, 40.0), rng.uniform(5.0, 12.0)
                leader = IDMVehicle(self.road, lane.position(50.0 + gap, 0.0), 0.0, lead_speed,
                                    target_speed=lead_speed, enable_lane_change=False)
                self.road.vehicles += [ego, leader]
            else:
                super()._create_vehicles()
                ego = self.controlled_vehicles[0]
                self.road.vehicles.remove(ego)
                ego = self._ego(ego.position, ego.speed)
                if self.config["expert"]:
                    ego.target_speed = 30.0
                self.road.vehicles.insert(0, ego)
            self.controlled_vehicles = [ego]

    return SceneEnv


class DriveTask(gym.Env):
    """A highway-env scenario as a gymnasium env with this package's observation dict."""

    metadata = {"render_modes": []}

    def __init__(self, scenario: str = "fork", expert: bool = False, duration_s: float | None = None):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown driving scenario {scenario!r}; known: {SCENARIOS}")
        self.scenario, self.expert = scenario, expert
        duration = duration_s if duration_s is not None else (20 if scenario == "fork" else 30)
        self._env = _scene_env_class()(config={"scenario": scenario, "expert": expert, "duration": duration})
        self.dt = 1.0 / SIM_HZ
        self.observation_space = spaces.Dict({
            "ego": spaces.Box(-np.inf, np.inf, (4,), np.float32),
            "agents": spaces.Box(-np.inf, np.inf, (N_AGENTS, 5), np.float32),
        })
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.side = 0
        self.start_x, self.start_lane = 0.0, -1

    @property
    def vehicle(self):
        return self._env.unwrapped.vehicle

    def reset(self, seed: int | None = None, options=None):
        super().reset(seed=seed)
        # the fork side is drawn from the episode seed, independent of highway-env's own rng
        self.side = int(np.random.default_rng(seed).choice([-1, 1]))
        self._env.unwrapped.config["expert_side"] = self.side
        self._env.reset(seed=seed)
        self.start_x, self.start_lane = float(self.vehicle.position[0]), int(self.vehicle.lane_index[2])
        return self.observe(), self._info(False)

    def step(self, action):
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (2,) or not np.isfinite(action).all():
            raise ValueError(f"action must be 2 finite numbers (acceleration, steering), got {action!r}")
        _, _, terminated, truncated, info = self._env.step(np.clip(action, -1, 1))
        return self.observe(), 0.0, terminated, truncated, self._info(terminated or truncated)

    def _info(self, done: bool) -> dict:
        v = self.vehicle
        info = {"crashed": bool(v.crashed), "progress_m": float(v.position[0] - self.start_x),
                "lane": int(v.lane_index[2]) if v.lane_index else -1, "side": self.side}
        if done:
            info["success"] = not v.crashed and v.on_road
        return info

    def observe(self) -> dict:
        ego = self.vehicle
        vel = ego.speed * np.array([np.cos(ego.heading), np.sin(ego.heading)])
        rows = []
        for v in self._env.unwrapped.road.vehicles:
            if v is ego:
                continue
            d = np.asarray(v.position) - ego.position
            if np.hypot(*d) > SENSE_RANGE_M:
                continue
            dv = v.velocity - vel
            rows.append([1.0, d[0], d[1], dv[0], dv[1]])
        rows.sort(key=lambda r: r[1] ** 2 + r[2] ** 2)
        agents = np.zeros((N_AGENTS, 5), np.float32)
        if rows:
            agents[:min(N_AGENTS, len(rows))] = np.asarray(rows[:N_AGENTS], np.float32)
        ego_vec = np.array([ego.position[1], vel[0], vel[1], ego.heading], np.float32)
        return {"ego": ego_vec, "agents": agents}

    def pose(self) -> np.ndarray:
        """World pose (x, y, heading) of the ego."""
        v = self.vehicle
        return np.array([v.position[0], v.position[1], v.heading], np.float64)


def future_in_frame(poses: np.ndarray, i: int) -> np.ndarray:
    """Waypoints (N_WAYPOINTS, 2) of the poses (x, y, heading) after step ``i``, relative to
    the position at ``i`` (road-aligned, see the module docstring)."""
    idx = i + STEPS_PER_WAYPOINT * np.arange(1, N_WAYPOINTS + 1)
    return (poses[idx, :2] - poses[i, :2]).astype(np.float32)


def kick_steps(scenario: str, rng: np.random.Generator) -> dict[int, tuple[float, float]]:
    """Disturbances {step: (lateral shift m, heading change rad)} of an expert episode (see
    ``record_expert``): after the fork's lane change, at least 5 s apart."""
    times = [7.0, 12.0] if scenario == "fork" else [8.0, 15.0, 22.0]
    return {int((t + rng.uniform(-0.5, 0.5)) * SIM_HZ): (float(rng.choice([-1, 1]) * rng.uniform(0.3, 1.5)),
                                                          float(rng.normal(0.0, 0.05))) for t in times}


def record_expert(scenario: str, seed: int, kicks: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """One expert episode as training samples: every step that has a full 4 s future.

    With ``kicks``, the ego is shifted sideways and turned a little a few times (after the
    fork's lane change) and the expert steers back: the samples from the kick on show recoveries to the
    lane centre, which a planner cloned from clean driving never sees (it then drifts off
    the road on its own small errors). Samples whose future holds a kick are dropped (their
    future is not the expert's doing). Returns (data, meta); no rows if the expert crashed."""
    env = DriveTask(scenario, expert=True)
    obs, info = env.reset(seed=seed)
    kick = kick_steps(scenario, np.random.default_rng([seed, 1])) if kicks else {}
    obs_list, poses = [obs], [env.pose()]
    done = False
    while not done:
        obs, _, term, trunc, info = env.step(np.zeros(2, np.float32))
        if len(poses) in kick and not (term or trunc):
            shift, turn = kick[len(poses)]
            env.vehicle.position = env.vehicle.position + np.array([0.0, shift])
            env.vehicle.heading += turn
            obs = env.observe()
        obs_list.append(obs)
        poses.append(env.pose())
        done = term or trunc
    poses_arr = np.asarray(poses)
    horizon = STEPS_PER_WAYPOINT * N_WAYPOINTS
    n = len(poses) - horizon
    meta = {"seed": seed, "crashed": info["crashed"], "side": env.side, "progress_m": info["progress_m"],
            "steps": len(poses) - 1, "kicks": len(kick)}
    keep = [i for i in range(max(0, n)) if not any(i < k <= i + horizon for k in kick)]
    if info["crashed"]:
        keep = []
    m = len(keep)
    data = {
        "ego": np.asarray([obs_list[i]["ego"] for i in keep], np.float32).reshape(m, 4),
        "agents": np.asarray([obs_list[i]["agents"] for i in keep], np.float32).reshape(m, N_AGENTS, 5),
        "future": np.asarray([future_in_frame(poses_arr, i) for i in keep], np.float32).reshape(m, N_WAYPOINTS, 2),
    }
    return data, meta


# ------------------------------------------------------------------ metrics
def summarize_drives(rows: list[dict], header: dict, latencies: list[float]) -> dict:
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
