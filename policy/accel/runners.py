"""How a DP-T policy's chunk runs: the deploy paths behind one small interface.

A runner moves observations to the device (``upload``), runs one chunk from device
tensors (``chunk``: conditioning, the denoising run, the actions in robot units) or one bare
run from conditioning (``run``), and brings the actions back (``download``). ``name`` is
what reports record; ``release()`` frees what the runner holds, ``prepare()`` builds what it
needs before a control loop starts (captures), ``allows_cache`` says whether a branch cache
may be attached.

- ``EagerRunner``: the network as it is (any device);
- ``TracedRunner``: a frozen TorchScript trace for one batch size (CPU deploy path,
  policy/accel/deploy.py);
- ``GraphDeploy`` (policy/accel/graph.py): whole chunks captured as CUDA graphs, or their
  static buffers without capture ("static", any device).

Every runner calls the policy's ``chunk_tensors`` / ``denoise_tensors`` with its own
denoiser, so the arithmetic is the policy's one path (policy/denoise.py).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

DEPLOYS = ("torchscript", "cuda_graph", "static")


class EagerRunner:
    name = "eager"
    allows_cache = True

    def __init__(self, policy, denoiser=None):
        self.policy, self.denoiser = policy, denoiser

    def upload(self, obs: Mapping) -> dict[str, torch.Tensor]:
        device = next(self.policy.parameters()).device
        keys = self.policy.expected_obs()
        return {k: torch.as_tensor(np.asarray(v)).to(device) for k, v in obs.items() if k in keys}

    def chunk(self, obs, x, plan, noise, guide=None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy.chunk_tensors(obs, x, plan, noise, guide, denoiser=self.denoiser)

    def run(self, x, cond, plan, noise, guide=None) -> torch.Tensor:
        return self.policy.denoise_tensors(x, cond, plan, noise, guide, denoiser=self.denoiser)

    def download(self, actions: torch.Tensor) -> np.ndarray:
        return actions.cpu().numpy()

    def prepare(self) -> int:
        return 0

    def release(self) -> None:
        pass


class TracedRunner(EagerRunner):
    name = "torchscript"
    allows_cache = False

    def __init__(self, policy, batch: int):
        from dpctrl.policy.accel.deploy import TracedDenoiser
        cfg = policy.cfg
        super().__init__(policy, TracedDenoiser(policy.net, batch, cfg.horizon, cfg.action_dim,
                                                (cfg.n_obs_steps, policy.cond_dim)))


def make_runner(policy, kind: str | None, batch: int = 1, precision: str = "fp32", compile: bool = False,
                fused: bool = False):
    """The runner of deploy path ``kind`` (None: eager); see ``DiffusionPolicy.set_deploy``."""
    if kind is None:
        return EagerRunner(policy)
    if kind == "torchscript":
        if precision != "fp32" or compile or fused:
            raise ValueError("the TorchScript deploy path is float32, uncompiled and unfused only")
        return TracedRunner(policy, batch)
    if kind not in DEPLOYS:
        raise ValueError(f"unknown deploy path {kind!r}; known: {', '.join(DEPLOYS)}")
    from dpctrl.policy.accel.graph import GraphDeploy
    return GraphDeploy(policy, batch, precision, graph=kind == "cuda_graph", compile=compile, fused=fused)
