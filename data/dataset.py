"""Training windows over a replay buffer, as in Diffusion Policy (REFERENCES.md §1).

A window is ``horizon`` consecutive steps of one episode. Its first ``n_obs_steps``
observations condition the policy and all ``horizon`` actions are the target. Episodes are
edge-padded (first/last step repeated) by ``n_obs_steps - 1`` before the start and
``n_action_steps - 1`` after the end, so the first and last actions of every episode are
the target of some window.

The dataset returns raw (unnormalized) float32 arrays; ``stats()`` gives per-dimension
min/max for ``policy.normalizer.Normalizer`` (which lives in policy/, as inference needs it
and data/ must not be imported by policy/). Images are returned as uint8 ``(To, H, W, C)``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from data.replay_buffer import ReplayBuffer


def window_starts(episode_lengths: Sequence[int], horizon: int, pad_before: int, pad_after: int) -> np.ndarray:
    """``(N, 2)`` rows of (episode index, start step, possibly negative) for every window."""
    rows = []
    for ep, length in enumerate(episode_lengths):
        last = int(length) - horizon + pad_after
        rows.extend((ep, s) for s in range(-pad_before, last + 1))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def split_episodes(n_episodes: int, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of episode indices into (train, val); val gets at least one when asked."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_episodes)
    n_val = int(round(val_fraction * n_episodes))
    if val_fraction > 0 and n_episodes > 1:
        n_val = max(n_val, 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class WindowDataset(Dataset):
    """Windows of ``obs_keys`` (first ``n_obs_steps``) and ``action_key`` (all ``horizon``)."""

    def __init__(self, buffer: ReplayBuffer, obs_keys: Sequence[str], action_key: str = "action",
                 n_obs_steps: int = 2, horizon: int = 16, n_action_steps: int = 8,
                 image_keys: Sequence[str] = (), episodes: Sequence[int] | None = None):
        if not 1 <= n_obs_steps <= horizon:
            raise ValueError(f"need 1 <= n_obs_steps ({n_obs_steps}) <= horizon ({horizon})")
        if not 1 <= n_action_steps <= horizon - n_obs_steps + 1:
            raise ValueError(f"need 1 <= n_action_steps ({n_action_steps}) <= horizon - n_obs_steps + 1")
        missing = [k for k in [*obs_keys, action_key, *image_keys] if k not in buffer.keys()]
        if missing:
            raise ValueError(f"keys {missing} not in buffer (has {buffer.keys()})")
        self.obs_keys, self.image_keys, self.action_key = list(obs_keys), list(image_keys), action_key
        self.n_obs_steps, self.horizon, self.n_action_steps = n_obs_steps, horizon, n_action_steps
        self.episodes = np.arange(buffer.n_episodes) if episodes is None else np.asarray(episodes, dtype=np.int64)
        # Episodes are loaded into memory once: low-dim data is small, and images of the
        # task sizes used here (a few hundred episodes of 84x84) fit as uint8.
        eps = [buffer.episode(int(i), keys=[*self.obs_keys, action_key, *self.image_keys]) for i in self.episodes]
        self._low = {k: [e[k].astype(np.float32) for e in eps] for k in [*self.obs_keys, action_key]}
        self._img = {k: [e[k] for e in eps] for k in self.image_keys}
        lengths = [len(e[action_key]) for e in eps]
        self.index = window_starts(lengths, horizon, pad_before=n_obs_steps - 1, pad_after=n_action_steps - 1)
        self._lengths = np.asarray(lengths)

    def __len__(self) -> int:
        return len(self.index)

    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """Per-dimension ``{"min", "max"}`` of every low-dim key over the selected episodes."""
        out = {}
        for k, chunks in self._low.items():
            flat = np.concatenate(chunks, axis=0).reshape(sum(len(c) for c in chunks), -1)
            out[k] = {"min": flat.min(axis=0), "max": flat.max(axis=0)}
        return out

    def steps(self, i: int) -> np.ndarray:
        """Within-episode step indices of window ``i`` after edge padding: ``(horizon,)``."""
        ep, start = self.index[i]
        return np.clip(np.arange(start, start + self.horizon), 0, self._lengths[ep] - 1)

    def __getitem__(self, i: int) -> dict:
        ep = int(self.index[i][0])
        idx = self.steps(i)
        obs_idx = idx[: self.n_obs_steps]
        obs = {k: torch.from_numpy(self._low[k][ep][obs_idx]) for k in self.obs_keys}
        obs.update({k: torch.from_numpy(np.ascontiguousarray(self._img[k][ep][obs_idx])) for k in self.image_keys})
        return {"obs": obs, "action": torch.from_numpy(self._low[self.action_key][ep][idx])}
