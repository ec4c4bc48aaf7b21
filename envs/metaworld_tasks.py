"""MetaWorld v3 tasks (Sawyer arm) as gymnasium envs, with MetaWorld's scripted policies as experts.

Names: ``metaworld:reach``, ``metaworld:push``, ``metaworld:drawer-open``, ``metaworld:pick-place``
(MetaWorld's ``<task>-v3-goal-observable`` envs).

Observation dict:
    state (39,)                MetaWorld's goal-observable vector: hand xyz, gripper opening,
                               object 1 and 2 (xyz + quaternion each), the previous frame of
                               those 18 numbers, goal xyz
    corner_image (S, S, 3)     uint8, right way up; only with ``images=True``. MetaWorld's
                               ``corner`` camera renders upside down, so frames are flipped
                               vertically. Rendered by our own ``mujoco.Renderer`` at S x S
                               (default 64) with shadows and anti-aliasing off (they cost
                               20-50x in software rendering and add nothing at this size).
Action (4,) in [-1, 1]: MetaWorld's own action, an end-effector position delta (x 0.01 m
per step, applied to the mocap body the hand is welded to: the mocap weld is the low-level
controller) and the gripper effort. A policy that predicts these predicts the next
end-effector targets relative to the current pose; we keep MetaWorld's actions rather than
absolute targets so that the experts' demonstrations are stored exactly as executed.
``terminated`` on ``info["success"]`` (MetaWorld's success test), ``truncated`` at ``max_steps``.
Seeding: ``reset(seed=s)`` draws the task's object and goal placement from ``s`` (the
placement vector is unfrozen for that reset), so seeds name episodes as for the other tasks.
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class MetaWorldSpec:
    env_id: str  # MetaWorld's goal-observable env name
    policy: str  # the class name of its scripted policy in metaworld.policies
    max_steps: int


TASKS = {
    "reach": MetaWorldSpec("reach-v3-goal-observable", "SawyerReachV3Policy", 150),
    "push": MetaWorldSpec("push-v3-goal-observable", "SawyerPushV3Policy", 200),
    "drawer-open": MetaWorldSpec("drawer-open-v3-goal-observable", "SawyerDrawerOpenV3Policy", 200),
    "pick-place": MetaWorldSpec("pick-place-v3-goal-observable", "SawyerPickPlaceV3Policy", 250),
}
CAMERA = "corner"
# Named views of the 39-number state (columns), for policies that must not see everything:
# "proprio+goal" keeps the hand, the gripper and the goal (the task's target, as an instruction
# would give it) and withholds the objects' poses, which must then be seen in the frames.
STATE_VIEWS = {
    "all": None,
    "proprio+goal": [0, 1, 2, 3, 36, 37, 38],
}


def _metaworld():
    try:
        import metaworld  # noqa: F401
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE
    except ImportError as e:  # pragma: no cover - depends on the extra
        raise ImportError("the MetaWorld tasks need metaworld: pip install 'dpctrl[metaworld]'") from e
    return ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE


class MetaWorldEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(self, task: str, images: bool = False, image_size: int = 64, max_steps: int | None = None):
        if task not in TASKS:
            raise ValueError(f"unknown MetaWorld task {task!r}; known: {sorted(TASKS)}")
        self.task, self.spec_ = task, TASKS[task]
        self.env = _metaworld()[self.spec_.env_id](seed=0)
        self.env.max_path_length = 10 ** 6  # truncation is ours (max_steps), not MetaWorld's 500
        self.images, self.image_size = images, image_size
        self.max_steps = max_steps or self.spec_.max_steps
        spaces = {"state": gym.spaces.Box(-np.inf, np.inf, (39,), np.float32)}
        if images:
            spaces[f"{CAMERA}_image"] = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._renderer = None
        self._t = 0

    def _render(self) -> np.ndarray:
        import mujoco
        if self._renderer is None:
            self.env.model.vis.quality.offsamples = 0  # no anti-aliasing
            self._renderer = mujoco.Renderer(self.env.model, self.image_size, self.image_size)
        self._renderer.update_scene(self.env.data, camera=CAMERA)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        return np.ascontiguousarray(self._renderer.render()[::-1])  # right way up

    def _obs(self, state: np.ndarray) -> dict[str, np.ndarray]:
        obs = {"state": np.asarray(state, dtype=np.float32)}
        if self.images:
            obs[f"{CAMERA}_image"] = self._render()
        return obs

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        # MetaWorld's reset ignores its seed argument: seed its generator, and draw a new
        # placement from it for this reset only
        self.env.seed(int(seed) if seed is not None else int(self.np_random.integers(2 ** 31)))
        self.env.seeded_rand_vec = True
        self.env._freeze_rand_vec = False
        state, info = self.env.reset()
        self.env._freeze_rand_vec = True
        self._t = 0
        return self._obs(state), dict(info)

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (4,) or not np.isfinite(action).all():
            raise ValueError(f"action must be 4 finite numbers, got {action!r}")
        state, reward, _, _, info = self.env.step(np.clip(action, -1.0, 1.0))
        self._t += 1
        success = bool(info.get("success", 0.0))
        info = {**info, "success": success}
        return self._obs(state), float(reward), success, self._t >= self.max_steps, info

    def render(self) -> np.ndarray:
        return self._render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.env.close()


class MetaWorldExpert:
    """MetaWorld's scripted policy for the task, on our observation dict."""

    def __init__(self, task: str):
        if task not in TASKS:
            raise ValueError(f"unknown MetaWorld task {task!r}; known: {sorted(TASKS)}")
        _metaworld()
        import metaworld.policies as policies
        self.policy = getattr(policies, TASKS[task].policy)()

    def reset(self, seed: int | None = None) -> None:
        pass  # the scripted policies are stateless

    def act(self, obs: dict) -> np.ndarray:
        return np.clip(self.policy.get_action(np.asarray(obs["state"], dtype=np.float64)), -1.0, 1.0).astype(np.float32)
