"""Simulated tasks with scripted experts: ``make(name, **kw)`` and ``expert(name)``.

Names: ``lift`` and ``stack`` (robosuite, Panda). Later issues add MetaWorld, highway-env
and PointMaze tasks to the same registry.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym

ROBOSUITE_TASKS = ("lift", "stack")


def _task(name: str) -> str:
    task = name.split(":", 1)[1] if name.startswith("robosuite:") else name
    if task not in ROBOSUITE_TASKS:
        raise ValueError(f"unknown env {name!r}; known: {list(ROBOSUITE_TASKS)}")
    return task


def make(name: str, **kw: Any) -> gym.Env:
    """A gymnasium env for ``name`` (see envs/robosuite_tasks.py for keys and units)."""
    from envs.robosuite_tasks import RobosuiteEnv
    return RobosuiteEnv(_task(name), **kw)


def expert(name: str, **kw: Any):
    """A scripted expert for ``name``: ``reset(seed)``, then ``act(obs) -> action``."""
    from envs.experts import EXPERTS
    return EXPERTS[_task(name)](**kw)


def discrete_action_dims(name: str) -> list[int]:
    """Action dimensions that are binary in the demonstrations (the gripper, -1 / +1)."""
    _task(name)
    return [6]


def names() -> list[str]:
    return list(ROBOSUITE_TASKS)
