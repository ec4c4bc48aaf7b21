"""Training windows over a replay buffer, as in Diffusion Policy (docs/references.md §1).

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

from dpctrl.data.replay_buffer import ReplayBuffer


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
                 image_keys: Sequence[str] = (), episodes: Sequence[int] | None = None,
                 extra: Sequence[tuple[ReplayBuffer, Sequence[int]]] = ()):
        """``episodes`` of ``buffer`` (default: all), then the episodes of each ``(buffer,
        episodes)`` in ``extra`` (e.g. recovery episodes kept in a store of their own)."""
        if not 1 <= n_obs_steps <= horizon:
            raise ValueError(f"need 1 <= n_obs_steps ({n_obs_steps}) <= horizon ({horizon})")
        if not 1 <= n_action_steps <= horizon - n_obs_steps + 1:
            raise ValueError(f"need 1 <= n_action_steps ({n_action_steps}) <= horizon - n_obs_steps + 1")
        sources = [(buffer, episodes), *extra]
        for buf, _ in sources:
            missing = [k for k in [*obs_keys, action_key, *image_keys] if k not in buf.keys()]
            if missing:
                raise ValueError(f"keys {missing} not in buffer {buf.path} (has {buf.keys()})")
        self.obs_keys, self.image_keys, self.action_key = list(obs_keys), list(image_keys), action_key
        self.n_obs_steps, self.horizon, self.n_action_steps = n_obs_steps, horizon, n_action_steps
        self.episodes = np.arange(buffer.n_episodes) if episodes is None else np.asarray(episodes, dtype=np.int64)
        # Episodes are loaded into memory once: low-dim data is small, and images of the
        # task sizes used here (a few hundred episodes of 84x84) fit as uint8.
        # Selected episodes are concatenated so that a batch is one fancy-indexing gather.
        keys = [*self.obs_keys, action_key, *self.image_keys]
        eps = [buffer.episode(int(i), keys=keys) for i in self.episodes]
        for buf, idx in extra:
            eps += [buf.episode(int(i), keys=keys) for i in idx]
        self._low = {k: np.concatenate([e[k] for e in eps]).astype(np.float32) for k in [*self.obs_keys, action_key]}
        self._img = {k: np.concatenate([e[k] for e in eps]) for k in self.image_keys}
        lengths = np.asarray([len(e[action_key]) for e in eps])
        self.index = window_starts(lengths, horizon, pad_before=n_obs_steps - 1, pad_after=n_action_steps - 1)
        self._lengths = lengths
        self._offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])

    def __len__(self) -> int:
        return len(self.index)

    def dims(self) -> dict[str, int]:
        """Size of every low-dim key (observations and the action)."""
        return {k: int(v.shape[1]) for k, v in self._low.items()}

    @property
    def n_steps(self) -> int:
        """Steps over the selected episodes."""
        return int(self._lengths.sum())

    def windows(self, indices) -> list[dict[str, np.ndarray]]:
        """Observation windows ``{key: (To, ...)}`` of ``indices``, one dict each."""
        obs = self.get_batch(np.asarray(indices))["obs"]
        return [{k: v[i].numpy() for k, v in obs.items()} for i in range(len(indices))]

    def spaced_windows(self, n: int) -> list[dict[str, np.ndarray]]:
        """``n`` observation windows spread evenly over the dataset."""
        return self.windows(np.linspace(0, len(self) - 1, n).astype(int))

    def window_pairs(self, n: int, gap: int) -> tuple[list[dict], list[dict]]:
        """``n`` pairs of observation windows ``gap`` steps apart within one episode (what a
        warm start sees: the window a chunk was predicted at, and the one ``gap`` actions later)."""
        same = np.nonzero(self.index[gap:, 0] == self.index[:-gap, 0])[0]
        pick = same[np.linspace(0, len(same) - 1, n).astype(int)]
        return self.windows(pick), self.windows(pick + gap)

    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """Per-dimension ``{"min", "max"}`` of every low-dim key over the selected episodes."""
        return {k: {"min": v.min(axis=0), "max": v.max(axis=0)} for k, v in self._low.items()}

    def steps(self, i) -> np.ndarray:
        """Within-episode step indices after edge padding: ``(horizon,)``, or ``(B, horizon)``
        for an array of window indices."""
        ep, start = self.index[i].T if np.ndim(i) else self.index[i]
        idx = np.asarray(start)[..., None] + np.arange(self.horizon)
        return np.clip(idx, 0, np.asarray(self._lengths[ep])[..., None] - 1)

    def get_batch(self, indices: np.ndarray) -> dict:
        """Windows ``indices`` stacked: {"obs": {key: (B, To, ...)}, "action": (B, T, A)}."""
        indices = np.asarray(indices)
        rows = self.steps(indices) + self._offsets[self.index[indices, 0]][:, None]  # (B, T)
        obs_rows = rows[:, : self.n_obs_steps]
        obs = {k: torch.from_numpy(self._low[k][obs_rows]) for k in self.obs_keys}
        obs.update({k: torch.from_numpy(self._img[k][obs_rows]) for k in self.image_keys})
        return {"obs": obs, "action": torch.from_numpy(self._low[self.action_key][rows])}

    def __getitem__(self, i: int) -> dict:
        batch = self.get_batch(np.array([i]))
        return {"obs": {k: v[0] for k, v in batch["obs"].items()}, "action": batch["action"][0]}
