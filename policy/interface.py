"""What the rest of the package depends on, not which model it is.

- ``LoopPolicy``: what the fixed-rate loop (control/session.py) and ``ChunkStepper`` use: the
  chunk geometry, ``reset``, ``note_executed``, ``predict_chunk``. ``RemotePolicy`` (a policy
  over the network, control/client.py) provides exactly this.
- ``ChunkPolicy``: a ``LoopPolicy`` that also predicts batches and says what it expects and
  is: what the evaluator (envs/evaluate.py) and the server (control/server.py) use.
  ``DiffusionPolicy`` (DP-T) and ``PadPolicy`` satisfy it.
- ``Trainable``: what the trainer (policy/train.py) uses: a loss on a batch and the
  parameter groups to optimise (with and without weight decay). Every model satisfies it.

A chunk policy predicts ``horizon`` actions from the last ``n_obs_steps`` observations and
the loop executes ``n_action_steps`` of them, starting at index ``n_obs_steps - 1`` (the
action aligned with the newest observation).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # not at run time: an exported policy (policy/onnx_policy.py) runs without torch
    import torch


@runtime_checkable
class LoopPolicy(Protocol):
    n_obs_steps: int
    horizon: int
    n_action_steps: int

    def reset(self) -> None:
        """Start of an episode."""

    def note_executed(self, n: int) -> None:
        """``n`` actions of the last chunk ran since it was predicted."""

    def predict_chunk(self, obs_window: Mapping[str, np.ndarray]) -> np.ndarray:
        """``{key: (To, ...)}`` -> actions ``(T, A)`` in robot units, never non-finite."""


@runtime_checkable
class ChunkPolicy(LoopPolicy, Protocol):
    nfe_last: int  # network calls of the last prediction

    def expected_obs(self) -> dict[str, tuple[int, ...]]:
        """Observation key -> shape of one window ``(n_obs_steps, ...)``."""

    def reset(self, ids: list[int] | None = None, seeds: list[int] | None = None) -> None:
        """Start of an episode (of the envs ``ids`` only, if given). ``seeds``: each env's episode
        seed; its noise then comes from a stream of that seed alone, so its actions do not depend on
        the batch, the order or the episodes run before (the evaluator passes them)."""

    def note_executed(self, n: int, ids: list[int] | None = None) -> None:
        """``n`` actions of the last chunk ran since it was predicted (by the envs ``ids``)."""

    def describe(self) -> dict:
        """What reports record: ``sampler``, ``num_inference_steps``, ``warm_start``, ``cache``,
        ``deploy`` and the model's ``config``."""

    def predict_batch(self, obs: Mapping[str, np.ndarray], committed: np.ndarray | None = None,
                      ids: list[int] | None = None) -> np.ndarray:
        """``{key: (B, To, ...)}`` -> actions ``(B, T, A)`` in robot units, never non-finite."""

    def predict_chunk(self, obs_window: Mapping[str, np.ndarray],
                      committed: np.ndarray | None = None) -> np.ndarray:
        """``{key: (To, ...)}`` -> actions ``(T, A)``; ``committed``: actions ``(d, A)`` already
        scheduled, for the new chunk's prefix to follow."""


@runtime_checkable
class Trainable(Protocol):
    def loss(self, batch: Mapping, generator: torch.Generator | None = None) -> torch.Tensor:
        """The training loss of one batch (the model's noise and timesteps from ``generator``)."""

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Optimizer parameter groups covering every trained parameter once."""


class ChunkShape:
    """The chunk geometry from ``self.cfg`` (``n_obs_steps``, ``horizon``, ``n_action_steps``)."""

    @property
    def n_obs_steps(self) -> int:
        return self.cfg.n_obs_steps

    @property
    def horizon(self) -> int:
        return self.cfg.horizon

    @property
    def n_action_steps(self) -> int:
        return self.cfg.n_action_steps


def validate_obs(expected: Mapping[str, tuple[int, ...]], obs: Mapping, batched: bool = False) -> None:
    """ValueError naming the key for a missing key, wrong shape, non-numeric dtype or NaN/Inf."""
    for k, shape in expected.items():
        if k not in obs:
            raise ValueError(f"observation is missing key {k!r} (expected shape {shape})")
        v = obs[k]
        got = tuple(np.shape(v)[1:] if batched else np.shape(v))
        if got != shape:
            raise ValueError(f"observation {k!r}: expected shape {'(B, ) + ' if batched else ''}{shape}, got {got}")
        kind = v.dtype.kind if isinstance(v, np.ndarray) else (
            ("f" if v.is_floating_point() else "u") if hasattr(v, "is_floating_point") else np.asarray(v).dtype.kind)
        if kind not in "biuf":
            raise ValueError(f"observation {k!r}: dtype {v.dtype} is not numeric")
        if not bool(np.isfinite(np.asarray(v, dtype=np.float64)).all()):
            raise ValueError(f"observation {k!r} contains NaN/Inf")


def finite_actions(actions: np.ndarray) -> np.ndarray:
    """``actions`` if every entry is finite; FloatingPointError otherwise (never to a robot)."""
    if not np.isfinite(actions).all():
        raise FloatingPointError("policy produced non-finite actions")
    return actions
