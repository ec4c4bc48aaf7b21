"""dpctrl: diffusion policies as fixed-rate robot controllers.

The first things a user does, without learning the sub-packages::

    import dpctrl
    policy = dpctrl.load_policy("lift")          # a shipped name, a user one, or a directory
    env = dpctrl.make_env("lift")                # a gymnasium env (robosuite, Panda)
    report = dpctrl.evaluate(policy, "lift", episodes=10)
    store = dpctrl.ReplayBuffer.open("runs/data/lift.zarr")   # an episode store (zarr)

Names resolve lazily: ``import dpctrl`` imports neither torch nor a simulator; the first use of
a name imports the sub-package behind it. Sub-packages: ``dpctrl.policy`` (networks, samplers,
acceleration, checkpoints), ``dpctrl.envs`` (tasks and scripted experts), ``dpctrl.data``
(episode stores, LeRobot datasets), ``dpctrl.control`` (the fixed-rate loop, safety, policy
server), ``dpctrl.launch`` (the ``dpctrl`` command line).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# public name -> (module, attribute): imported on first use
_API = {
    "load_policy": ("dpctrl.policy.registry", "load_policy"),
    "list_checkpoints": ("dpctrl.policy.checkpoint", "list_checkpoints"),
    "checkpoint_home": ("dpctrl.policy.checkpoint", "user_dir"),
    "ChunkStepper": ("dpctrl.policy.stepper", "ChunkStepper"),
    "make_env": ("dpctrl.envs", "make"),
    "make_expert": ("dpctrl.envs", "expert"),
    "env_names": ("dpctrl.envs", "names"),
    "evaluate": ("dpctrl.envs.evaluate", "evaluate"),
    "run_loop": ("dpctrl.control.session", "run_loop"),
    "ControlLoop": ("dpctrl.control.loop", "ControlLoop"),
    "LoopConfig": ("dpctrl.control.loop", "LoopConfig"),
    "SafetyFilter": ("dpctrl.control.safety", "SafetyFilter"),
    "Robot": ("dpctrl.control.robot", "Robot"),
    "SimRobot": ("dpctrl.control.robot", "SimRobot"),
    "MockArm": ("dpctrl.control.robot", "MockArm"),
    "ReplayBuffer": ("dpctrl.data.replay_buffer", "ReplayBuffer"),
}

__all__ = ["__version__", *_API]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from .control.loop import ControlLoop, LoopConfig
    from .control.robot import MockArm, Robot, SimRobot
    from .control.safety import SafetyFilter
    from .data.replay_buffer import ReplayBuffer
    from .envs import expert as make_expert, make as make_env, names as env_names
    from .envs.evaluate import evaluate
    from .control.session import run_loop
    from .policy.checkpoint import list_checkpoints, user_dir as checkpoint_home
    from .policy.registry import load_policy
    from .policy.stepper import ChunkStepper


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'dpctrl' has no attribute {name!r}; the public API is {__all__}")
    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
