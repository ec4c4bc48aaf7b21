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


class StridedWindows:
    """Every window of ``n_points`` steps, ``stride`` apart, of one key inside one episode:
    ``get_batch(idx) -> {"traj": (B, n_points, D)}`` (a planner's training trajectories)."""

    def __init__(self, buffer: ReplayBuffer, key: str, n_points: int, stride: int,
                 episodes: Sequence[int] | None = None):
        if key not in buffer.keys():
            raise KeyError(f"{buffer!r} has no {key!r}; it has {buffer.keys()}")
        if n_points < 2 or stride < 1:
            raise ValueError(f"need n_points >= 2 and stride >= 1, got {n_points}, {stride}")
        episodes = range(buffer.n_episodes) if episodes is None else episodes
        parts = [buffer.episode(int(i), [key])[key].astype(np.float32) for i in episodes]
        span = (n_points - 1) * stride
        self.data = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])[:-1]]).astype(np.int64)
        self.starts = np.concatenate([o + np.arange(max(0, len(p) - span)) for o, p in zip(offsets, parts)]
                                     ).astype(np.int64) if parts else np.zeros(0, np.int64)
        self.steps = np.arange(n_points, dtype=np.int64) * stride

    def __len__(self) -> int:
        return len(self.starts)

    def get_batch(self, indices: np.ndarray) -> dict:
        rows = self.starts[np.asarray(indices)][:, None] + self.steps[None]
        return {"traj": torch.from_numpy(self.data[rows])}
