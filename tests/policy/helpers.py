"""A tiny policy on synthetic data, for fast tests of the policy core."""
import numpy as np
import torch

from dpctrl.policy.diffusion_policy import DiffusionPolicy, PolicyConfig
from dpctrl.policy.normalizer import Normalizer

OBS_DIMS = {"pos": 3, "object": 4}


def tiny_policy(seed: int = 0, **kw) -> DiffusionPolicy:
    torch.manual_seed(seed)
    cfg = PolicyConfig(obs_dims=dict(OBS_DIMS), action_dim=2, n_layer=2, n_head=2, n_emb=32, horizon=8,
                       n_obs_steps=2, n_action_steps=4, **kw)
    stats = {k: {"min": -np.ones(d), "max": np.ones(d)} for k, d in OBS_DIMS.items()}
    stats["action"] = {"min": np.array([-2.0, 0.0]), "max": np.array([2.0, 1.0])}
    return DiffusionPolicy(cfg, Normalizer.from_stats(stats), seed=seed)


def obs_window(seed: int = 0, batch: int | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lead = (batch,) if batch else ()
    return {k: rng.uniform(-1, 1, lead + (2, d)).astype(np.float32) for k, d in OBS_DIMS.items()}


class ToyDataset:
    """Windows whose actions are a deterministic function of the observation."""

    def __init__(self, n: int = 64, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.obs = {k: rng.uniform(-1, 1, (n, 2, d)).astype(np.float32) for k, d in OBS_DIMS.items()}
        base = self.obs["pos"][:, -1, :2]
        self.action = np.repeat(base[:, None, :], 8, axis=1) * [2.0, 0.5] + [0.0, 0.5]
        self.action = self.action.astype(np.float32)

    def __len__(self):
        return len(self.action)

    def get_batch(self, idx):
        return {"obs": {k: torch.from_numpy(v[idx]) for k, v in self.obs.items()},
                "action": torch.from_numpy(self.action[idx])}
