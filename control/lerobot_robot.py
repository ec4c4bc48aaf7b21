"""A lerobot ``Robot`` (SO-100/101, Koch, LeKiwi, ...) behind this package's ``Robot`` protocol.

lerobot's interface: ``observation_features`` / ``action_features`` (name -> ``float`` for a
motor value, name -> ``(h, w, 3)`` for a camera), ``connect(calibrate=True)``,
``get_observation() -> {name: value}``, ``send_action({name: float}) -> {name: float}`` (what
was actually sent, after lerobot's own relative-target clipping), ``disconnect()``.

Mapping: every ``float`` observation feature, in lerobot's order, goes into one ``state``
vector; each camera becomes its own key with a uint8 (h, w, 3) image; the action vector
follows ``action_features``' order. Action bounds are required: lerobot does not publish
joint limits, and the safety filter and this adapter clip to them.

lerobot itself (Python >= 3.12) is imported only by ``make_lerobot_robot``; the adapter works
with any object of that interface (this module needs only numpy and gymnasium, so the
lerobot side venv can import it: ``control/lerobot_side.py robot``).
"""
from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np

from dpctrl.control.robot import RobotBase, bounded_action

STATE_KEY = "state"


class LeRobotRobot(RobotBase):
    def __init__(self, robot: Any, action_low, action_high, calibrate: bool = True, clock=time.monotonic):
        self.robot = robot
        self.calibrate = calibrate
        self.clock = clock
        obs_ft, act_ft = dict(robot.observation_features), dict(robot.action_features)
        self.state_names = [k for k, v in obs_ft.items() if v is float]
        self.camera_shapes = {k: tuple(v) for k, v in obs_ft.items() if isinstance(v, tuple)}
        other = [k for k in obs_ft if k not in self.state_names and k not in self.camera_shapes]
        if other:
            raise ValueError(f"observation features {other} are neither float nor (h, w, c) images")
        bad = [k for k, v in act_ft.items() if v is not float]
        if bad or not act_ft:
            raise ValueError(f"action features must all be float motor values; got {act_ft}")
        self.action_names = list(act_ft)
        n = len(self.action_names)
        low = np.broadcast_to(np.asarray(action_low, np.float32), (n,)).copy()
        high = np.broadcast_to(np.asarray(action_high, np.float32), (n,)).copy()
        if not (np.isfinite(low).all() and np.isfinite(high).all() and (low < high).all()):
            raise ValueError(f"action bounds must be finite with low < high; got {low} .. {high}")
        self.action_space = gym.spaces.Box(low, high, (n,), np.float32)
        self.observation_keys = ([STATE_KEY] if self.state_names else []) + list(self.camera_shapes)

    def connect(self) -> None:
        if not self.robot.is_connected:
            self.robot.connect(calibrate=self.calibrate)

    def disconnect(self) -> None:
        if self.robot.is_connected:
            self.robot.disconnect()

    def observe(self) -> dict[str, Any]:
        self._require()
        t = self.clock()
        raw = self.robot.get_observation()
        missing = [k for k in (*self.state_names, *self.camera_shapes) if k not in raw]
        if missing:
            raise RuntimeError(f"{self.robot}: observation lacks {missing}")
        obs: dict[str, Any] = {"timestamp": t}
        if self.state_names:
            state = np.array([float(raw[k]) for k in self.state_names], np.float32)
            if not np.isfinite(state).all():
                raise RuntimeError(f"{self.robot}: non-finite motor readings {dict(zip(self.state_names, state))}")
            obs[STATE_KEY] = state
        for k, shape in self.camera_shapes.items():
            img = np.asarray(raw[k])
            if img.shape != shape:
                raise RuntimeError(f"{self.robot}: camera {k!r} gave shape {img.shape}, features say {shape}")
            obs[k] = img.astype(np.uint8, copy=False)
        return obs

    def act(self, action: np.ndarray) -> np.ndarray:
        self._require()
        clipped = bounded_action(action, self.action_space)
        sent = self.robot.send_action({k: float(v) for k, v in zip(self.action_names, clipped)})
        return np.array([float(sent.get(k, v)) for k, v in zip(self.action_names, clipped)], np.float32)

    def _require(self) -> None:
        if not self.robot.is_connected:
            raise RuntimeError(f"{self.robot} is not connected (use `with robot:` or robot.connect())")


def make_lerobot_robot(config: Any, action_low, action_high, calibrate: bool = True) -> LeRobotRobot:
    """A ``LeRobotRobot`` around ``lerobot.robots.make_robot_from_config(config)``."""
    try:
        from lerobot.robots import make_robot_from_config
    except ImportError as e:
        raise ImportError("lerobot robots need the `lerobot` package (Python >= 3.12); see "
                          "data/lerobot_roundtrip.py for a side venv") from e
    return LeRobotRobot(make_robot_from_config(config), action_low, action_high, calibrate=calibrate)
