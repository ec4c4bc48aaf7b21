"""Run a scripted expert (or any ``obs -> action`` callable) for one seeded episode."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np


@dataclass
class Episode:
    seed: int
    success: bool
    length: int
    steps: dict[str, np.ndarray]  # {obs key: (L, ...), "action": (L, A)}


def run_episode(env: gym.Env, act: Callable[[dict], np.ndarray], seed: int,
                reset_policy: Callable[[int], None] | None = None) -> Episode:
    """Roll out until success or truncation. Step ``t`` stores the observation the action
    ``t`` was chosen from, so the arrays pair (obs_t, action_t) as a policy sees them."""
    obs, _ = env.reset(seed=seed)
    if reset_policy is not None:
        reset_policy(seed)
    record: dict[str, list] = {k: [] for k in obs}
    record["action"] = []
    success = False
    while True:
        action = np.asarray(act(obs), dtype=np.float32)
        for k, v in obs.items():
            record[k].append(v)
        record["action"].append(action)
        obs, _, terminated, truncated, info = env.step(action)
        success = success or bool(info.get("success", False))
        if terminated or truncated:
            break
    steps = {k: np.stack(v) for k, v in record.items()}
    return Episode(seed=seed, success=success, length=len(steps["action"]), steps=steps)


def expert_episode(env: gym.Env, expert, seed: int) -> Episode:
    return run_episode(env, expert.act, seed, reset_policy=expert.reset)
