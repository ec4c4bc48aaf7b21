"""Per-dimension min-max normalization to [-1, 1] (docs/references.md §1).

Stats are plain tensors so they travel inside a checkpoint's safetensors file:
``state_dict()`` gives ``{"<key>.scale": ..., "<key>.offset": ...}``.
Dimensions whose range is below ``range_eps`` (constant in the data) map to 0 and back.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

RANGE_EPS = 1e-4


class Normalizer:
    """``x_n = x * scale + offset``; ``x = (x_n - offset) / scale``; per key, per last dim."""

    def __init__(self, params: Mapping[str, tuple[torch.Tensor, torch.Tensor]]):
        self.params = {k: (torch.as_tensor(s, dtype=torch.float32), torch.as_tensor(o, dtype=torch.float32))
                       for k, (s, o) in params.items()}
        self._moved: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # (key, device, dtype) -> params there

    @classmethod
    def from_stats(cls, stats: Mapping[str, Mapping[str, np.ndarray]], range_eps: float = RANGE_EPS) -> "Normalizer":
        params = {}
        for k, st in stats.items():
            lo = torch.as_tensor(np.asarray(st["min"]), dtype=torch.float32)
            hi = torch.as_tensor(np.asarray(st["max"]), dtype=torch.float32)
            if lo.shape != hi.shape or not torch.all(hi >= lo):
                raise ValueError(f"normalizer stats for {k!r}: need min <= max of equal shape")
            span = hi - lo
            flat = span < range_eps
            scale = torch.where(flat, torch.ones_like(span), 2.0 / torch.where(flat, torch.ones_like(span), span))
            offset = torch.where(flat, -lo, -1.0 - lo * scale)
            params[k] = (scale, offset)
        return cls(params)

    @classmethod
    def from_ranges(cls, ranges: Mapping[str, tuple]) -> "Normalizer":
        """``{key: (lo, hi)}`` with ``hi > lo`` everywhere (a model's stored ranges): lo -> -1, hi -> 1."""
        params = {}
        for k, (lo, hi) in ranges.items():
            lo, hi = torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)
            if not torch.all(hi > lo):
                raise ValueError(f"normalizer range for {k!r}: need hi > lo")
            scale = 2.0 / (hi - lo)
            params[k] = (scale, -1.0 - lo * scale)
        return cls(params)

    def keys(self) -> list[str]:
        return sorted(self.params)

    def _get(self, key: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if key not in self.params:
            raise KeyError(f"normalizer has no key {key!r} (has {self.keys()})")
        s, o = self.params[key]
        if like.shape[-1] != s.shape[-1]:
            raise ValueError(f"{key!r}: last dim {like.shape[-1]} != normalizer dim {s.shape[-1]}")
        if like.device.type == "cpu" and like.dtype == torch.float32:
            return s, o
        at = (key, like.device, like.dtype)
        if at not in self._moved:  # one host-to-device copy per key and device, not one per call
            self._moved[at] = (s.to(like.device, like.dtype), o.to(like.device, like.dtype))
        return self._moved[at]

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        s, o = self._get(key, x)
        return x * s + o

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        s, o = self._get(key, x)
        return (x - o) / s

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for k, (s, o) in self.params.items():
            out[f"{k}.scale"], out[f"{k}.offset"] = s.clone(), o.clone()
        return out

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> "Normalizer":
        keys = {name.rsplit(".", 1)[0] for name in state}
        missing = [k for k in keys if f"{k}.scale" not in state or f"{k}.offset" not in state]
        if missing:
            raise ValueError(f"normalizer state incomplete for {sorted(missing)}")
        return cls({k: (state[f"{k}.scale"], state[f"{k}.offset"]) for k in keys})
