"""Simulated tasks with scripted experts: ``make(name, **kw)`` and ``expert(name)``.

Names: ``lift``, ``stack``, ``can`` and ``square`` (robosuite, Panda; also as ``robosuite:<task>``;
can and square are robomimic's PickPlaceCan and NutAssemblySquare) and
``metaworld:<task>`` (envs/metaworld_tasks.py: reach, push, drawer-open, pick-place).
Driving (envs/highway.py) and PointMaze (envs/maze.py) have their own entry points.
``register(name, make, expert)`` adds a task of your own: from then on ``make``, ``expert``,
collection and evaluation know it (docs/extending/task.md).
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless; must be set before mujoco is first imported

from dataclasses import dataclass  # noqa: E402
from typing import Any, Callable  # noqa: E402

import gymnasium as gym  # noqa: E402

ROBOSUITE_TASKS = ("lift", "stack", "can", "square")
DEFAULT_CAMERAS = ("agentview",)


def cameras_of(image_keys) -> tuple[str, ...]:
    """The cameras an image policy was trained on, from its ``<camera>_image`` keys
    (``DEFAULT_CAMERAS`` when it has none)."""
    bad = [k for k in image_keys if not k.endswith("_image")]
    if bad:
        raise ValueError(f"image keys must be named <camera>_image; got {bad}")
    return tuple(k[: -len("_image")] for k in image_keys) or DEFAULT_CAMERAS


def parse_cameras(text: str | None) -> tuple[str, ...]:
    """``"agentview,robot0_eye_in_hand"`` -> a camera tuple (None -> ``DEFAULT_CAMERAS``)."""
    if text is None:
        return DEFAULT_CAMERAS
    cams = tuple(c.strip() for c in text.split(",") if c.strip())
    if not cams or len(set(cams)) != len(cams):
        raise ValueError(f"--cameras takes distinct comma-separated robosuite camera names; got {text!r}")
    return cams


@dataclass(frozen=True)
class TaskEntry:
    """A registered task: ``make(**kw)`` builds its gymnasium env, ``expert()`` its scripted
    expert, ``discrete_action_dims`` the binary action dimensions (a gripper)."""
    make: Callable[..., gym.Env]
    expert: Callable[[], Any]
    discrete_action_dims: tuple[int, ...] = ()


_REGISTERED: dict[str, TaskEntry] = {}


def register(name: str, make: Callable[..., gym.Env], expert: Callable[[], Any],
             discrete_action_dims: tuple[int, ...] = ()) -> None:
    """Add a task under ``name``.

    ``make(**kw)`` returns a gymnasium env with ``Dict`` observations of numpy arrays, a ``Box``
    action space, ``reset(seed=...)`` that is reproducible, and ``info["success"]`` after every
    step; the evaluator and the collector pass ``images``, ``cameras``, ``max_steps`` and
    ``image_size`` keywords, which an env without cameras may ignore. ``expert()`` returns an
    object with ``reset(seed)`` and ``act(obs) -> action``."""
    if name in ROBOSUITE_TASKS or ":" in name or name in _REGISTERED:
        raise ValueError(f"task name {name!r} is taken or reserved (no ':'); registered: {sorted(_REGISTERED)}")
    if not (callable(make) and callable(expert)):
        raise TypeError("register(name, make, expert): make and expert must be callables")
    _REGISTERED[name] = TaskEntry(make, expert, tuple(int(d) for d in discrete_action_dims))


def _task(name: str) -> str:
    task = name.split(":", 1)[1] if name.startswith("robosuite:") else name
    if task not in ROBOSUITE_TASKS and not name.startswith("metaworld:"):
        raise ValueError(f"unknown env {name!r}; known: {names()}")
    return task


def _metaworld_task(name: str) -> str | None:
    """The MetaWorld task of a ``metaworld:<task>`` name (validated), else None."""
    if not name.startswith("metaworld:"):
        return None
    from dpctrl.envs.metaworld_tasks import TASKS
    task = name.split(":", 1)[1]
    if task not in TASKS:
        raise ValueError(f"unknown env {name!r}; known: {names()}")
    return task


def make(name: str, **kw: Any) -> gym.Env:
    """A gymnasium env for ``name`` (see envs/robosuite_tasks.py and envs/metaworld_tasks.py
    for keys and units, and ``register`` for tasks of your own)."""
    if name in _REGISTERED:
        return _REGISTERED[name].make(**kw)
    mw = _metaworld_task(name)
    if mw is not None:
        from dpctrl.envs.metaworld_tasks import MetaWorldEnv
        kw.pop("cameras", None)
        return MetaWorldEnv(mw, **kw)
    from dpctrl.envs.robosuite_tasks import RobosuiteEnv
    return RobosuiteEnv(_task(name), **kw)


def expert(name: str, **kw: Any):
    """A scripted expert for ``name``: ``reset(seed)``, then ``act(obs) -> action``."""
    if name in _REGISTERED:
        if kw:
            raise ValueError(f"the expert of the registered task {name!r} takes no options, got {sorted(kw)}")
        return _REGISTERED[name].expert()
    mw = _metaworld_task(name)
    if mw is not None:
        from dpctrl.envs.metaworld_tasks import MetaWorldExpert
        return MetaWorldExpert(mw)
    from dpctrl.envs.experts import EXPERTS
    return EXPERTS[_task(name)](**kw)


def recovery_tasks() -> tuple[str, ...]:
    """The tasks whose expert can miss its first grasp on purpose and regrasp: the ones with
    recovery episodes (``dpctrl collect --recoveries``, ``dpctrl train --recoveries N``)."""
    from dpctrl.envs.experts import MISSES
    return MISSES


def check_recoveries(name: str, count: int) -> None:
    """Refuse a negative count, or recovery episodes for a task whose expert cannot miss (naming
    those that can)."""
    if count < 0:
        raise ValueError(f"the recovery episode count must be >= 0, got {count}")
    if count and (name.startswith("metaworld:") or name in _REGISTERED or _task(name) not in recovery_tasks()):
        raise ValueError(f"recovery episodes exist for {', '.join(recovery_tasks())} only (their experts "
                         f"can miss and regrasp), not {name!r}")


def discrete_action_dims(name: str) -> list[int]:
    """Action dimensions that are binary in the demonstrations (the gripper, -1 / +1);
    MetaWorld's gripper effort is continuous in its scripted policies, so none there."""
    if name in _REGISTERED:
        return list(_REGISTERED[name].discrete_action_dims)
    if _metaworld_task(name) is not None:
        return []
    _task(name)
    return [6]


def names() -> list[str]:
    from dpctrl.envs.metaworld_tasks import TASKS
    return list(ROBOSUITE_TASKS) + [f"metaworld:{t}" for t in TASKS] + sorted(_REGISTERED)
