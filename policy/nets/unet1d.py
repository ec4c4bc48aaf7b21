"""Diffuser's temporal U-Net: 1-D convolutions over the planning horizon (channels = state
dims), residual blocks with GroupNorm + Mish and a time embedding added per block, two
resolutions down and up with skip connections. Horizon must be divisible by 2**(levels-1).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / max(half - 1, 1))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], -1)


class Conv1dBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 5, groups: int = 8):
        super().__init__(nn.Conv1d(cin, cout, k, padding=k // 2), nn.GroupNorm(groups, cout), nn.Mish())


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int):
        super().__init__()
        self.b1, self.b2 = Conv1dBlock(cin, cout), Conv1dBlock(cout, cout)
        self.time = nn.Sequential(nn.Mish(), nn.Linear(tdim, cout))
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.b1(x) + self.time(temb)[:, :, None]
        return self.b2(h) + self.skip(x)


class TemporalUNet(nn.Module):
    """``forward(x (B, H, C), t (B,)) -> (B, H, C)``."""

    def __init__(self, channels: int, dim: int = 32, mults: tuple[int, ...] = (1, 2, 4)):
        super().__init__()
        dims = [channels] + [dim * m for m in mults]
        tdim = dim * 4
        self.tdim = dim
        self.time_mlp = nn.Sequential(nn.Linear(dim, tdim), nn.Mish(), nn.Linear(tdim, tdim))
        self.down = nn.ModuleList()
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == len(dims) - 2
            self.down.append(nn.ModuleList([ResBlock(a, b, tdim), ResBlock(b, b, tdim),
                                            nn.Identity() if last else nn.Conv1d(b, b, 3, 2, 1)]))
        mid = dims[-1]
        self.mid1, self.mid2 = ResBlock(mid, mid, tdim), ResBlock(mid, mid, tdim)
        self.up = nn.ModuleList()
        for i, (a, b) in enumerate(reversed(list(zip(dims[1:-1], dims[2:])))):
            self.up.append(nn.ModuleList([ResBlock(b * 2, a, tdim), ResBlock(a, a, tdim),
                                          nn.ConvTranspose1d(a, a, 4, 2, 1)]))
        self.final = nn.Sequential(Conv1dBlock(dim, dim), nn.Conv1d(dim, channels, 1))
        self.levels = len(mults)

    def optim_groups(self, weight_decay: float) -> list[dict]:
        decay = [p for n, p in self.named_parameters() if p.dim() >= 2]
        rest = [p for n, p in self.named_parameters() if p.dim() < 2]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)
        temb = self.time_mlp(time_embedding(t, self.tdim))
        skips = []
        for r1, r2, down in self.down:
            x = r2(r1(x, temb), temb)
            skips.append(x)
            x = down(x)
        x = self.mid2(self.mid1(x, temb), temb)
        for r1, r2, up in self.up:
            x = r2(r1(torch.cat([x, skips.pop()], 1), temb), temb)
            x = up(x)
        return self.final(x).transpose(1, 2)
