"""Causal encoder-decoder transformer denoiser of Diffusion Policy (docs/references.md §1).

Memory (encoder side): [time token, obs token_0 .. obs token_{To-1}] + learned positions,
through a per-token MLP (or ``n_cond_layers`` encoder layers). Decoder: noisy action
tokens + learned positions; per layer, pre-LN causal self-attention, cross-attention to
the memory, and FFN (GELU, 4x). Masks: action t sees actions <= t, and memory token s
iff t >= s - 1 (the time token is always visible).

Every residual branch goes through ``Transformer.branch(name, fn, *args)`` with names
``layer{i}.sa|ca|ffn``, so a cache (policy/accel) hooks in by setting ``branch_hook``
without monkey-patching. With no hook, ``branch`` is a plain call.

The memory, and so every layer's cross-attention keys and values, depends on the timestep
and the observation only, not on the noisy sample. A sampler run therefore computes them
for all its steps at once (``run_memory``, one batched encoder pass) and calls ``decode``
per step: per network call that drops the encoder and one of the two projections of every
cross-attention (7 of 37 linear layers of the shipped Lift model).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dpctrl.policy.noise import pad_rows

BranchHook = Callable[[str, Callable[..., torch.Tensor], tuple], torch.Tensor]


@dataclass
class TransformerConfig:
    action_dim: int
    cond_dim: int  # per-step observation feature size
    horizon: int = 16
    n_obs_steps: int = 2
    n_layer: int = 8
    n_head: int = 4
    n_emb: int = 256
    n_cond_layers: int = 0
    p_drop_emb: float = 0.0
    p_drop_attn: float = 0.01
    prefix_flag: bool = False  # a learned embedding marks committed prefix tokens (policy/prefix.py)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) float timesteps -> (B, dim), as in Diffusion Policy (no MLP after it)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=-1)


def decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on Linear weights only (not biases, norms, embeddings)."""
    decay, no_decay = [], []
    for mod in module.modules():
        for p_name, p in mod.named_parameters(recurse=False):
            (decay if isinstance(mod, nn.Linear) and p_name == "weight" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _additive(allowed: torch.Tensor) -> torch.Tensor:
    """A boolean attention mask (True: may attend) as the additive float mask SDPA applies."""
    return torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))


class Attention(nn.Module):
    def __init__(self, n_emb: int, n_head: int, p_drop: float):
        super().__init__()
        if n_emb % n_head:
            raise ValueError(f"n_emb {n_emb} not divisible by n_head {n_head}")
        self.n_head, self.p_drop = n_head, p_drop
        self.q = nn.Linear(n_emb, n_emb)
        self.kv = nn.Linear(n_emb, 2 * n_emb)
        self.proj = nn.Linear(n_emb, n_emb)

    def keys_values(self, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory tokens (N, M, C) -> keys and values, each (N, heads, M, C / heads)."""
        N, M, C = mem.shape
        k, v = self.kv(mem).view(N, M, 2, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        return k, v

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q = self.q(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.p_drop if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

    def forward(self, x: torch.Tensor, mem: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.attend(x, *self.keys_values(mem), mask)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        d = cfg.n_emb
        self.ln_sa, self.ln_ca, self.ln_ffn = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.sa = Attention(d, cfg.n_head, cfg.p_drop_attn)
        self.ca = Attention(d, cfg.n_head, cfg.p_drop_attn)
        self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(cfg.p_drop_attn))

    def _sa(self, x, mask):
        h = self.ln_sa(x)
        return self.sa(h, h, mask)

    def _ca(self, x, kv, mask):
        return self.ca.attend(self.ln_ca(x), *kv, mask)

    def _ffn(self, x):
        return self.ffn(self.ln_ffn(x))

    def forward(self, x, kv, sa_mask, ca_mask, branch, prefix: str):
        """``kv``: this layer's cross-attention keys and values (``Transformer.memory_kv``)."""
        x = x + branch(f"{prefix}.sa", self._sa, x, sa_mask)
        x = x + branch(f"{prefix}.ca", self._ca, x, kv, ca_mask)
        x = x + branch(f"{prefix}.ffn", self._ffn, x)
        return x


class Transformer(nn.Module):
    """``forward(sample (B, T, A), timestep (B,) or scalar, cond (B, To, cond_dim)) -> (B, T, A)``."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        d, T, To = cfg.n_emb, cfg.horizon, cfg.n_obs_steps
        self.input_emb = nn.Linear(cfg.action_dim, d)
        self.pos_emb = nn.Parameter(torch.zeros(1, T, d))
        if cfg.prefix_flag:  # zeros: a network fine-tuned from one without it starts unchanged
            self.prefix_emb = nn.Parameter(torch.zeros(1, 1, d))
        self.cond_obs_emb = nn.Linear(cfg.cond_dim, d)
        self.cond_pos_emb = nn.Parameter(torch.zeros(1, 1 + To, d))
        self.drop = nn.Dropout(cfg.p_drop_emb)
        if cfg.n_cond_layers > 0:
            layer = nn.TransformerEncoderLayer(d, cfg.n_head, 4 * d, cfg.p_drop_attn, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, cfg.n_cond_layers)
        else:
            self.encoder = nn.Sequential(nn.Linear(d, 4 * d), nn.Mish(), nn.Linear(4 * d, d))
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.action_dim)
        t_idx = torch.arange(T)[:, None]
        s_idx = torch.arange(1 + To)[None, :]
        # additive float masks (0 allowed, -inf not), built once: a boolean mask is converted to
        # this form by scaled_dot_product_attention on every call (extra kernels per attention)
        self.register_buffer("sa_mask", _additive(t_idx >= torch.arange(T)[None, :]), persistent=False)
        self.register_buffer("ca_mask", _additive(t_idx >= s_idx - 1), persistent=False)
        self.branch_hook: BranchHook | None = None
        self.min_rows = 0  # calls padded to this many rows: batch-invariant outputs (policy/noise.py)
        self.apply(self._init)
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.normal_(self.cond_pos_emb, std=0.02)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def branch_names(self) -> list[str]:
        return [f"layer{i}.{b}" for i in range(self.cfg.n_layer) for b in ("sa", "ca", "ffn")]

    def branch(self, name: str, fn: Callable[..., torch.Tensor], *args) -> torch.Tensor:
        """The one code path of every residual branch; a cache hooks in here."""
        if self.branch_hook is None:
            return fn(*args)
        return self.branch_hook(name, fn, args)

    def encode(self, timestep: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Memory tokens (B, 1 + To, d) of timesteps (B,) and observation tokens (B, To, cond_dim)."""
        t = sinusoidal_embedding(timestep, self.cfg.n_emb).unsqueeze(1)
        mem = torch.cat([t, self.cond_obs_emb(cond)], dim=1) + self.cond_pos_emb
        return self.encoder(self.drop(mem))

    def memory_kv(self, timestep: torch.Tensor, cond: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's cross-attention keys and values, each (B, heads, 1 + To, d / heads).
        They depend on the timestep and the observation only, never on the noisy sample."""
        mem = self.encode(timestep, cond)
        return [layer.ca.keys_values(mem) for layer in self.layers]

    def run_memory(self, timesteps, cond: torch.Tensor) -> "RunMemory":
        """The cross-attention keys and values of every step of one denoising run (the network
        times ``timesteps``, one per step, floats or 0-dim tensors), in one batched pass of
        the encoder instead of one per step: a run's per-step network call is then
        ``decode(sample, memory[i])``, the same arithmetic as ``forward`` with the
        step-invariant part taken out of the loop."""
        t = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=cond.device) for v in timesteps])
        return RunMemory(self.run_kv(t, cond))

    def run_kv(self, t: torch.Tensor, cond: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``run_memory``'s tensors: per layer (keys, values), each (S, B, heads, M, d / heads),
        for network times ``t`` (S,) and observation tokens ``cond`` (B, To, cond_dim)."""
        cond = pad_rows(cond, self.min_rows)
        S, B = t.shape[0], cond.shape[0]
        kv = self.memory_kv(t.repeat_interleave(B), cond.repeat(S, 1, 1))  # row s * B + b: step s, sample b
        return [(k.unflatten(0, (S, B)), v.unflatten(0, (S, B))) for k, v in kv]

    def decode(self, sample: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]],
               flags: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder on the noisy sample (B, T, A), given every layer's keys and values;
        ``flags`` (B, T) marks committed prefix tokens (a ``prefix_flag`` network only). Keys and
        values of more rows (``min_rows`` padding) take the sample padded to as many."""
        B, T, rows = sample.shape[0], sample.shape[1], kv[0][0].shape[0]
        sample, flags = pad_rows(sample, rows), pad_rows(flags, rows)
        x = self.input_emb(sample) + self.pos_emb[:, :T]
        if flags is not None:
            x = x + flags[..., None].to(x.dtype) * self.prefix_emb
        x = self.drop(x)
        sa_mask, ca_mask = self.sa_mask[:T, :T], self.ca_mask[:T]
        for i, (layer, layer_kv) in enumerate(zip(self.layers, kv)):
            x = layer(x, layer_kv, sa_mask, ca_mask, self.branch, f"layer{i}")
        return self.head(self.ln_f(x))[:B]

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float, cond: torch.Tensor,
                flags: torch.Tensor | None = None) -> torch.Tensor:
        B = sample.shape[0]
        timestep = torch.as_tensor(timestep, device=sample.device, dtype=torch.float32)
        if timestep.dim() == 0:
            timestep = timestep.expand(B)
        rows = max(B, self.min_rows)
        return self.decode(sample, self.memory_kv(pad_rows(timestep, rows), pad_rows(cond, rows)), flags)

    def optim_groups(self, weight_decay: float) -> list[dict]:
        return decay_groups(self, weight_decay)


class RunMemory:
    """Per-layer cross-attention (keys, values) of a whole run, each (steps, B, heads, M, d/heads);
    ``memory[i]`` is step i's list of (keys, values), views without copies."""

    def __init__(self, kv: list[tuple[torch.Tensor, torch.Tensor]]):
        self.kv = kv

    def __len__(self) -> int:
        return self.kv[0][0].shape[0]

    def __getitem__(self, i: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(k[i], v[i]) for k, v in self.kv]
