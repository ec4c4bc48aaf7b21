"""Single-step samples over a replay buffer: observation keys -> one target key.

For planners whose target is stored per step (a driving expert's future waypoints), unlike
``WindowDataset``'s windows of actions. Loads the chosen episodes into memory.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from data.replay_buffer import ReplayBuffer


class StepDataset:
    def __init__(self, buffer: ReplayBuffer, obs_keys: Sequence[str], target_key: str,
                 episodes: Sequence[int] | None = None):
        missing = [k for k in [*obs_keys, target_key] if k not in buffer.keys()]
        if missing:
            raise KeyError(f"{buffer!r} has no {missing}; it has {buffer.keys()}")
        episodes = range(buffer.n_episodes) if episodes is None else episodes
        parts = [buffer.episode(int(i), [*obs_keys, target_key]) for i in episodes]
        if not parts:
            raise ValueError("no episodes selected")
        self.obs_keys, self.target_key = list(obs_keys), target_key
        self.arrays = {k: np.concatenate([p[k] for p in parts]).astype(np.float32) for k in [*obs_keys, target_key]}

    def __len__(self) -> int:
        return len(self.arrays[self.target_key])

    @property
    def targets(self) -> np.ndarray:
        return self.arrays[self.target_key]

    def get_batch(self, indices: np.ndarray) -> dict:
        """{"obs": {key: (B, ...)}, target_key: (B, ...)} as float32 tensors."""
        idx = np.asarray(indices)
        return {"obs": {k: torch.from_numpy(self.arrays[k][idx]) for k in self.obs_keys},
                self.target_key: torch.from_numpy(self.arrays[self.target_key][idx])}
