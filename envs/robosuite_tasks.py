"""robosuite manipulation tasks (Panda, OSC_POSE deltas) as gymnasium environments.

Observation dict (robomimic's low-dim keys, so the layout matches the real datasets):
    robot0_eef_pos (3,)  robot0_eef_quat (4,) xyzw  robot0_gripper_qpos (2,)
    object (D,)          the task's object-state vector (lift: 10, stack: 23, can: 14, square: 14)
    <camera>_image (H, W, 3) uint8, right way up   only with ``images=True``
Action (7,) in [-1, 1]: end-effector position delta (x 0.05 m), axis-angle rotation delta
(x 0.5 rad) in the base frame, gripper (-1 open, +1 close).
Can and square (robomimic's PickPlaceCan and NutAssemblySquare) lay their 14 numbers out as
robosuite does: the object's position and quaternion relative to the end effector (3 + 4), then
its position (3) and quaternion (4) in the world; ``OBJECT_POSE`` says where the world pose is.
Reward is robosuite's sparse task reward; ``terminated`` on success, ``truncated`` at
``max_steps``; ``info["success"]``.

Seeding: robosuite samples object placements and joint noise from numpy's global RNG, so
``reset(seed=...)`` seeds it for the duration of the reset and restores it afterwards. It also
draws parts of the model when it builds it (Lift's cube size, 20-22 mm), so construction runs
under ``MODEL_SEED``: every env of a task is the same model, in any process, in any order.
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco loads

import logging
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

MODEL_SEED = 0
LOW_DIM_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")


@dataclass(frozen=True)
class TaskSpec:
    robosuite_name: str
    max_steps: int
    object_dim: int


TASKS = {
    "lift": TaskSpec("Lift", max_steps=200, object_dim=10),
    "stack": TaskSpec("Stack", max_steps=400, object_dim=23),
    "can": TaskSpec("PickPlaceCan", max_steps=400, object_dim=14),
    "square": TaskSpec("NutAssemblySquare", max_steps=400, object_dim=14),
}
# where the object's world position (3) and quaternion (4) start in ``object``
OBJECT_POSE = {"lift": 0, "stack": 0, "can": 7, "square": 7}


def _quiet_robosuite() -> None:
    # robosuite logs a screen of warnings per env (missing private macros, unused
    # controller parts of other robots); keep errors only.
    logger = logging.getLogger("robosuite_logs")
    if not logger.filters:
        logger.addFilter(lambda record: record.levelno >= logging.ERROR)


class RobosuiteEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, task: str, images: bool = False, cameras: tuple[str, ...] = ("agentview",),
                 image_size: int = 84, max_steps: int | None = None, control_freq: int = 20):
        if task not in TASKS:
            raise ValueError(f"unknown robosuite task {task!r}; known: {sorted(TASKS)}")
        _quiet_robosuite()
        import robosuite
        from robosuite.controllers import load_composite_controller_config

        self.task = task
        self.spec_ = TASKS[task]
        self.max_steps = max_steps or self.spec_.max_steps
        self.images = images
        self.cameras = tuple(cameras)
        self.image_size = image_size
        self.control_freq = control_freq
        self.render_mode = "rgb_array"
        controller = load_composite_controller_config(controller="BASIC", robot="Panda")
        state = np.random.get_state()  # the model itself is drawn (Lift's cube size): the same in every env
        np.random.seed(MODEL_SEED)
        try:
            self._env = robosuite.make(
                self.spec_.robosuite_name, robots="Panda", controller_configs=controller,
                has_renderer=False, has_offscreen_renderer=images, use_camera_obs=images,
                camera_names=list(self.cameras), camera_heights=image_size, camera_widths=image_size,
                control_freq=control_freq, horizon=self.max_steps + 1, ignore_done=True,
                hard_reset=False, reward_shaping=False,
            )
        finally:
            np.random.set_state(state)
        self._render_setup_done = False
        spaces = {
            "robot0_eef_pos": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64),
            "robot0_eef_quat": gym.spaces.Box(-1.0, 1.0, (4,), np.float64),
            "robot0_gripper_qpos": gym.spaces.Box(-np.inf, np.inf, (2,), np.float64),
            "object": gym.spaces.Box(-np.inf, np.inf, (self.spec_.object_dim,), np.float64),
        }
        for cam in self.cameras if images else ():
            spaces[f"{cam}_image"] = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        self._t = 0
        self._raw: dict[str, np.ndarray] = {}

    @property
    def dt(self) -> float:
        return 1.0 / self.control_freq

    @property
    def raw_obs(self) -> dict[str, np.ndarray]:
        """robosuite's full observation dict of the last step (named object poses etc.)."""
        return self._raw

    def _setup_fast_rendering(self) -> None:
        """Shadows, reflections and multisampling off: 20-50x cheaper software rendering."""
        import mujoco
        ctx = self._env.sim._render_context_offscreen
        self._env.sim.model._model.vis.quality.offsamples = 0
        ctx._set_mujoco_context_and_buffers()  # rebuild the GL buffers without multisampling
        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        self._render_setup_done = True

    def _obs(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._raw = raw
        obs = {k: np.asarray(raw[k], dtype=np.float64) for k in LOW_DIM_KEYS[:3]}
        obs["object"] = np.asarray(raw["object-state"], dtype=np.float64)
        for cam in self.cameras if self.images else ():
            obs[f"{cam}_image"] = np.ascontiguousarray(raw[f"{cam}_image"][::-1])  # OpenGL is bottom-up
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        state = np.random.get_state()
        try:
            if seed is not None:
                np.random.seed(seed)
            raw = self._env.reset()
        finally:
            np.random.set_state(state)
        if self.images and not self._render_setup_done:
            self._setup_fast_rendering()
            raw = self._env._get_observations(force_update=True)
        self._t = 0
        return self._obs(raw), {"success": False}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,):
            raise ValueError(f"action must have shape (7,), got {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError(f"non-finite action {action}")
        raw, reward, _, info = self._env.step(np.clip(action, -1.0, 1.0))
        self._t += 1
        success = bool(self._env._check_success())
        return self._obs(raw), float(reward), success, self._t >= self.max_steps, {"success": success}

    def render(self) -> np.ndarray:
        cam = self.cameras[0]
        if not self.images:
            raise RuntimeError("render() needs images=True")
        return self._obs(self._raw)[f"{cam}_image"] if f"{cam}_image" in self._raw else None

    def close(self) -> None:
        self._env.close()
