"""The robot interface the control loop drives, and a simulated robot behind it.

``Robot`` is a protocol: ``connect()``, ``observe() -> dict`` (with ``"timestamp"``, a
monotonic time in seconds of when the observation was read), ``act(action) -> sent``,
``disconnect()``, ``action_space``, ``observation_keys``; usable as a context manager.
``SimRobot`` puts any ``envs.make`` env behind it: the sim advances one control step when
the loop acts, so it runs in wall-clock time at the loop's rate.
"""
from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np


@runtime_checkable
class Robot(Protocol):
    action_space: gym.spaces.Box
    observation_keys: list[str]

    def connect(self) -> None: ...
    def observe(self) -> dict[str, Any]: ...
    def act(self, action: np.ndarray) -> np.ndarray: ...
    def disconnect(self) -> None: ...
    def __enter__(self): ...
    def __exit__(self, *exc) -> None: ...


def bounded_action(action, space: gym.spaces.Box) -> np.ndarray:
    """``action`` as float32 clipped to ``space``; a wrong shape or a non-finite value raises."""
    action = np.asarray(action, dtype=np.float32)
    if action.shape != space.shape or not np.isfinite(action).all():
        raise ValueError(f"refusing action {action!r}: expected finite values of shape {space.shape}")
    return np.clip(action, space.low, space.high)


class RobotBase:
    """Context-manager plumbing shared by robot implementations."""

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()


class SimRobot(RobotBase):
    """An ``envs.make`` env as a robot. ``reset(seed)`` starts an episode; ``done`` and
    ``success`` report the env's termination and task success after each ``act``."""

    def __init__(self, env: gym.Env, clock=time.monotonic):
        self.env = env
        self.clock = clock
        self.action_space = env.action_space
        self.observation_keys = list(env.observation_space.spaces)
        self._obs: dict | None = None
        self._connected = False
        self.done = False
        self.success = False
        self.steps = 0

    @property
    def control_rate_hz(self) -> float:
        return 1.0 / getattr(self.env.unwrapped, "dt", 0.05)

    def connect(self) -> None:
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    def reset(self, seed: int | None = None) -> dict:
        self._require()
        self._obs, _ = self.env.reset(seed=seed)
        self.done = self.success = False
        self.steps = 0
        return self.observe()

    def observe(self) -> dict[str, Any]:
        self._require()
        if self._obs is None:
            raise RuntimeError("SimRobot.reset(seed) must start an episode before observe()")
        return {**self._obs, "timestamp": self.clock()}

    def act(self, action: np.ndarray) -> np.ndarray:
        self._require()
        sent = bounded_action(action, self.action_space)
        self._obs, _, terminated, truncated, info = self.env.step(sent)
        self.steps += 1
        self.success = self.success or bool(info.get("success", False))
        self.done = bool(terminated or truncated)
        return sent

    def _require(self) -> None:
        if not self._connected:
            raise RuntimeError("robot is not connected (use `with robot:` or robot.connect())")


class MockArm(RobotBase):
    """Stands in for an absent physical arm behind the same interface: integrates the sent
    action into a joint state (no physics), observes it instantly. For loop benchmarks.
    ``obs_shapes`` {key: per-step shape} adds observations of a policy's shapes (the joint
    state tiled into vectors, black uint8 images for 3-D shapes), so a real policy can drive it."""

    def __init__(self, action_dim: int = 7, clock=time.monotonic, obs_shapes: dict | None = None):
        self.action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        self.obs_shapes = {k: tuple(v) for k, v in (obs_shapes or {}).items()}
        self.observation_keys = ["joint_pos", *self.obs_shapes]
        self.clock = clock
        self.state = np.zeros(action_dim, np.float32)
        self.done = self.success = False

    def connect(self) -> None:
        self.state[:] = 0

    def disconnect(self) -> None:
        pass

    def reset(self, seed: int | None = None) -> dict:
        self.state[:] = 0
        return self.observe()

    def observe(self) -> dict[str, Any]:
        obs = {"joint_pos": self.state.copy(), "timestamp": self.clock()}
        for k, shape in self.obs_shapes.items():
            if len(shape) == 3:
                obs[k] = np.zeros(shape, np.uint8)
            else:
                obs[k] = np.resize(self.state, shape).astype(np.float32)
        return obs

    def act(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action, dtype=np.float32)
        if not np.isfinite(action).all():
            raise ValueError("refusing a non-finite action")
        self.state += 0.01 * action
        return action
