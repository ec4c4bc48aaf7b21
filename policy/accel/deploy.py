"""CPU deploy path: the denoiser traced with TorchScript and frozen.

``TracedDenoiser`` wraps a frozen trace of ``Transformer.forward`` for one batch size (the
robot's: 1) and falls back to nothing: a call with another batch size, or while a block
cache is attached (its per-branch Python hook cannot live inside a trace), raises. Freezing
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
        example = (torch.zeros(batch, horizon, action_dim), torch.zeros(batch), torch.zeros(batch, *cond_shape))
        # TracerWarnings here are about the timestep's as_tensor and a tensor unpacking whose
        # shapes are fixed per trace; tests compare against eager at every timestep of a run.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # jit.freeze: still the fastest CPU path here
            self.traced = torch.jit.freeze(torch.jit.trace(net, example, check_trace=False))
        net.train(was_training)
        self.branch_hook = None

    def forward(self, sample: torch.Tensor, timestep, cond: torch.Tensor) -> torch.Tensor:
        if sample.shape[0] != self.batch:
            raise ValueError(f"the traced denoiser was built for batch {self.batch}, got {sample.shape[0]}")
        t = torch.as_tensor(timestep, dtype=torch.float32).expand(self.batch)
        return self.traced(sample, t, cond)

    def branch_names(self) -> list[str]:
        return self.eager.branch_names()
