"""CPU deploy path: the denoiser traced with TorchScript and frozen.

``TracedDenoiser`` wraps frozen traces of ``Transformer.decode`` (the per-step part of a
network call) and of ``Transformer.run_kv`` (a run's cross-attention memory, once per run)
for one batch size (the robot's: 1) and falls back to nothing: a call with
another batch size, or while a block cache is attached (its per-branch Python hook cannot
live inside a trace), raises. Freezing
inlines the weights as constants and folds what it can; at batch 1 this small network is
bound by per-operator Python overhead, which the trace removes. Equal to eager within float
rounding (tests check 1e-5); ``dpctrl bench deploy`` measures the speed-up.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from dpctrl.policy.nets.transformer import RunMemory


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
            cond = torch.zeros(batch, *cond_shape)
            kv = net.memory_kv(torch.zeros(batch), cond)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # jit.freeze: still the fastest CPU path here
            self.traced = torch.jit.freeze(torch.jit.trace(_Decode(net).eval(), (sample, kv), check_trace=False))
            # the run's memory: traced once, valid for any number of steps (sizes stay symbolic)
            self.memory = torch.jit.freeze(torch.jit.trace(_RunKV(net).eval(), (torch.zeros(2), cond),
                                                           check_trace=False))
        net.train(was_training)
        self.branch_hook = None

    def run_memory(self, timesteps, cond: torch.Tensor) -> RunMemory:
        """``Transformer.run_memory`` through its frozen trace (any run length)."""
        flat = self.memory(torch.tensor([float(v) for v in timesteps], dtype=torch.float32), cond)
        return RunMemory(list(zip(flat[0::2], flat[1::2])))

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


class _RunKV(nn.Module):
    """``Transformer.run_kv`` as a module's forward, for tracing."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, t: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Flat (k0, v0, k1, v1, ...): a trace returns tensors or flat sequences of them."""
        return tuple(x for kv in self.net.run_kv(t, cond) for x in kv)


class _Decode(nn.Module):
    """``Transformer.decode`` as a module's forward, for tracing."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, sample: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        return self.net.decode(sample, kv)
