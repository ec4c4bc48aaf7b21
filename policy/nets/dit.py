"""A small diffusion transformer (DiT, adaLN-Zero) over image patches and one action token
(PAD, docs/references.md §6).

Tokens: the current frame and k noisy future frames, concatenated channel-wise and cut into
p x p patches (one token per patch, learned positions), plus one action token made from the
noisy future actions (T x A, flattened) and the current state. Conditioning c = timestep
embedding + task embedding modulates every block through adaLN-Zero (shift, scale and a
zero-initialised gate for attention and MLP), so each block starts as the identity.
``mask_image_to_action``: image tokens cannot attend to the action token (the action token
sees everything). Outputs: the noise (or whatever the sampler predicts) for the k future
frames, and for the actions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dpctrl.policy.nets.transformer import sinusoidal_embedding


@dataclass
class DiTConfig:
    image_size: int = 64
    patch: int = 8
    k_future: int = 1
    action_dim: int = 4
    horizon: int = 8
    state_dim: int = 39
    n_tasks: int = 1
    width: int = 96
    depth: int = 4
    heads: int = 4
    mask_image_to_action: bool = True

    def __post_init__(self):
        if self.image_size % self.patch:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch {self.patch}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} not divisible by heads {self.heads}")


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class DiTBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)  # adaLN-Zero: gates start at 0, the block at identity
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, N, C = x.shape
        s1, sc1, g1, s2, sc2, g2 = self.ada(c).chunk(6, dim=-1)
        h = _modulate(self.ln1(x), s1, sc1)
        q, k, v = self.qkv(h).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(B, N, C)
        x = x + g1.unsqueeze(1) * self.proj(a)
        return x + g2.unsqueeze(1) * self.mlp(_modulate(self.ln2(x), s2, sc2))


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        p, w = cfg.patch, cfg.width
        self.n_patches = (cfg.image_size // p) ** 2
        in_ch, out_ch = 3 * (1 + cfg.k_future), 3 * cfg.k_future
        self.patch_in = nn.Linear(in_ch * p * p, w)
        self.act_in = nn.Linear(cfg.horizon * cfg.action_dim + cfg.state_dim, w)
        self.pos = nn.Parameter(torch.randn(1, self.n_patches + 1, w) * 0.02)
        self.t_mlp = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.task = nn.Embedding(cfg.n_tasks, w)
        self.blocks = nn.ModuleList(DiTBlock(w, cfg.heads) for _ in range(cfg.depth))
        self.ln_out = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(w, 2 * w))
        self.patch_out = nn.Linear(w, out_ch * p * p)
        self.act_out = nn.Linear(w, cfg.horizon * cfg.action_dim)
        for lin in (self.ada_out[1], self.patch_out, self.act_out):  # outputs start at 0
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        n = self.n_patches + 1
        allowed = torch.ones(n, n, dtype=torch.bool)
        if cfg.mask_image_to_action:
            allowed[:-1, -1] = False  # image tokens (all but the last) do not see the action token
        self.register_buffer("mask", torch.zeros(n, n).masked_fill(~allowed, float("-inf")), persistent=False)

    def _patchify(self, img: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, N, C * p * p)."""
        return F.unfold(img, self.cfg.patch, stride=self.cfg.patch).transpose(1, 2)

    def _unpatchify(self, tokens: torch.Tensor, channels: int) -> torch.Tensor:
        S = self.cfg.image_size
        return F.fold(tokens.transpose(1, 2), (S, S), self.cfg.patch, stride=self.cfg.patch).view(-1, channels, S, S)

    def forward(self, current: torch.Tensor, future: torch.Tensor, actions: torch.Tensor, state: torch.Tensor,
                t: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """current (B, 3, S, S) clean, future (B, 3k, S, S) noisy, actions (B, T, A) noisy,
        state (B, D), t (B,) or scalar, task (B,) long -> (future out, actions out)."""
        B = current.shape[0]
        t = torch.as_tensor(t, device=current.device, dtype=torch.float32)
        if t.dim() == 0:
            t = t.expand(B)
        img = self.patch_in(self._patchify(torch.cat([current, future], dim=1)))
        act = self.act_in(torch.cat([actions.flatten(1), state], dim=1)).unsqueeze(1)
        x = torch.cat([img, act], dim=1) + self.pos
        c = self.t_mlp(sinusoidal_embedding(t, self.cfg.width)) + self.task(task)
        for blk in self.blocks:
            x = blk(x, c, self.mask)
        shift, scale = self.ada_out(c).chunk(2, dim=-1)
        x = _modulate(self.ln_out(x), shift, scale)
        fut = self._unpatchify(self.patch_out(x[:, :-1]), 3 * self.cfg.k_future)
        return fut, self.act_out(x[:, -1]).view(B, self.cfg.horizon, self.cfg.action_dim)

    def optim_groups(self, weight_decay: float) -> list[dict]:
        from dpctrl.policy.nets.transformer import decay_groups
        return decay_groups(self, weight_decay)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

