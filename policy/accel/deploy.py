"""CPU deploy path: the denoiser traced with TorchScript and frozen.

``TracedDenoiser`` wraps a frozen trace of ``Transformer.decode`` (the per-step part of a
network call; a run's cross-attention memory is computed once per run by the eager
``run_memory``) for one batch size (the robot's: 1) and falls back to nothing: a call with
another batch size, or while a block cache is attached (its per-branch Python hook cannot
live inside a trace), raises. Freezing
inlines the weights as constants and folds what it can; at batch 1 this small network is
bound by per-operator Python overhead, which the trace removes. Equal to eager within float
rounding (tests check 1e-5); ``dpctl bench deploy`` measures the speed-up.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn


class TracedDenoiser(nn.Module):
    def __init__(self, net: nn.Module, batch: int, horizon: int, action_dim: int, cond_shape: tuple[int, int]):
        super().__init__()
        if getattr(net, "branch_hook", None) is not None:
            raise ValueError("detach the block cache before tracing (set_cache(None)); caches run eagerly")
        self.eager, self.batch = net, batch
        was_training = net.training
        net.eval()
        sample = torch.zeros(batch, horizon, action_dim)
        # TracerWarnings here are about shapes fixed per trace; tests compare against eager at
        # every timestep of a run.
        with torch.no_grad(), warnings.catch_warnings():
            kv = net.memory_kv(torch.zeros(batch), torch.zeros(batch, *cond_shape))
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # jit.freeze: still the fastest CPU path here
            self.traced = torch.jit.freeze(torch.jit.trace(_Decode(net).eval(), (sample, kv), check_trace=False))
        net.train(was_training)
        self.branch_hook = None

    def run_memory(self, timesteps, cond: torch.Tensor):
        with torch.no_grad():
            return self.eager.run_memory(timesteps, cond)

    def decode(self, sample: torch.Tensor, kv) -> torch.Tensor:
        if sample.shape[0] != self.batch:
            raise ValueError(f"the traced denoiser was built for batch {self.batch}, got {sample.shape[0]}")
        return self.traced(sample, kv)

    def forward(self, sample: torch.Tensor, timestep, cond: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(timestep, dtype=torch.float32).expand(sample.shape[0])
        with torch.no_grad():
            kv = self.eager.memory_kv(t, cond)
        return self.decode(sample, kv)

    def branch_names(self) -> list[str]:
        return self.eager.branch_names()


class _Decode(nn.Module):
    """``Transformer.decode`` as a module's forward, for tracing."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, sample: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        return self.net.decode(sample, kv)
