"""Noise schedules (docs/references.md §1, §4).

``alphas_cumprod[t]`` is abar_t for the training timesteps t = 0..T-1; ``abar(-1) = 1``
stands for the clean sample at the end of a run, so a step ``t -> -1`` lands on x0.
"""
from __future__ import annotations

import math

import torch

KINDS = ("squaredcos_cap_v2", "linear", "scaled_linear")


class NoiseSchedule:
    def __init__(self, kind: str = "squaredcos_cap_v2", num_train_timesteps: int = 100,
                 beta_start: float = 1e-4, beta_end: float = 0.02):
        if kind not in KINDS:
            raise ValueError(f"unknown schedule {kind!r}; known: {KINDS}")
        if num_train_timesteps < 1:
            raise ValueError("num_train_timesteps must be >= 1")
        self.kind, self.num_train_timesteps = kind, num_train_timesteps
        self.beta_start, self.beta_end = beta_start, beta_end
        T = num_train_timesteps
        if kind == "squaredcos_cap_v2":
            def abar(u: float) -> float:
                return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
            betas = torch.tensor([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)],
                                 dtype=torch.float32)
        elif kind == "linear":
            betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
        else:
            betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=torch.float32) ** 2
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)

    def abar(self, t: int) -> torch.Tensor:
        """abar_t as a float32 scalar tensor; t = -1 means clean (1.0). Samplers do their
        scalar arithmetic in float32 tensors, as diffusers does, so results agree to ~1e-6."""
        if t < -1 or t >= self.num_train_timesteps:
            raise ValueError(f"timestep {t} outside [-1, {self.num_train_timesteps - 1}]")
        return torch.tensor(1.0) if t < 0 else self.alphas_cumprod[int(t)]

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Forward diffusion q(x_t | x0) for integer timesteps ``t`` (scalar or ``(B,)``)."""
        t = torch.as_tensor(t, device=x0.device)
        a = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype)
        while a.dim() < x0.dim():
            a = a.unsqueeze(-1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def config(self) -> dict:
        return {"kind": self.kind, "num_train_timesteps": self.num_train_timesteps,
                "beta_start": self.beta_start, "beta_end": self.beta_end}
