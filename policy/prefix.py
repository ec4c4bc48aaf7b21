"""A policy trained for real-time chunking: its chunks are conditioned on a clean committed prefix.

Training (``PolicyConfig.prefix_max = D_max > 0``, ``dpctrl train --prefix-max D``): every
sample gets a prefix length d drawn uniformly from 0..D_max; the d actions from the first
executable index (To - 1) enter the network clean instead of noised, a learned embedding
(``Transformer.prefix_emb``) is added to their tokens, and their loss is masked, so the network
learns to continue a given start rather than to denoise it.

Sampling (``--overlap prefix``): the D committed actions that run before the new chunk
arrives are placed clean, and flagged, at every denoising step (``PrefixCondition``); the
network output there is the one implying them, so the sampler's steps end on them. One network
call per step, as the plain sampler: conditioning costs nothing at inference.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def draw_flags(batch: int, horizon: int, start: int, d_max: int, generator: torch.Generator | None,
               device) -> torch.Tensor:
    """(B, T) boolean: True on positions start .. start + d - 1, d uniform in 0..d_max per row."""
    d = torch.randint(0, d_max + 1, (batch,), generator=generator).to(device)
    j = torch.arange(horizon, device=device)[None]
    return (j >= start) & (j < start + d[:, None])


def masked_mse(out: torch.Tensor, target: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the positions not flagged (the committed prefix is given, not learned)."""
    keep = (~flags)[..., None].to(out.dtype)
    return (((out - target) ** 2) * keep).sum() / (keep.sum() * out.shape[-1]).clamp_min(1.0)


@dataclass
class PrefixCondition:
    """Clean committed actions ``target`` (normalized, (B or 1, T, A)) where ``flags`` (T,) is
    True, placed and flagged before every network call; the output there implies them."""
    target: torch.Tensor
    flags: torch.Tensor
    in_step = True  # replaces the network call of each step
    noise_shape = None
    weights = None

    def output(self, model, sampler, x: torch.Tensor, i: int, t) -> torch.Tensor:
        m = self.flags.to(x.device)[None, :, None]
        target = self.target.to(x)
        xc = torch.where(m, target, x)
        out = model(xc, i, flags=self.flags.to(x.device)[None].expand(x.shape[0], -1))
        return torch.where(m, sampler.output_for_x0(x, target.expand_as(x), t), out)
