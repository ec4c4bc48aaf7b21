"""Where a policy's random draws come from: one stream for the whole run, or one per episode.

With one stream (the default, what a single robot's loop uses), a chunk's noise depends on every
draw made before it, so the same evaluation seed scores differently with another batch size,
episode count or order. ``EpisodeNoise`` gives each env row a generator of its own, seeded from
(the policy's seed, the episode's seed): a row's draws are then the same whoever shares its
batch. Each draw of a run is made row by row (``RowStreams.randn``), in the fixed order of
policy/denoise.py's ``draw_noise``.

Noise alone is not enough for identical actions: this CPU's float32 GEMM takes one kernel for a
single row, another for 2-10 and another from 11 rows on, and they round differently, so a
row's output depends on how many rows share the call. ``ROWS_MIN``: the networks pad their
calls to at least this many rows while per-episode streams are on (``Transformer.min_rows``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

ROWS_MIN = 16  # >= 11 rows in every linear layer's GEMM (each is batch x tokens rows)


def episode_seed(policy_seed: int, seed: int) -> int:
    """The seed of one episode's stream: (policy seed, episode seed) through a SeedSequence, so
    nearby seeds give unrelated streams."""
    return int(np.random.SeedSequence([int(policy_seed), int(seed)]).generate_state(1, np.uint64)[0] >> 1)


def randn(source, shape: Sequence[int]) -> torch.Tensor:
    """Standard normal draws of ``shape`` from a ``torch.Generator`` or a ``RowStreams``."""
    if isinstance(source, torch.Generator):
        return torch.randn(tuple(shape), generator=source)
    return source.randn(shape)


class RowStreams:
    """The streams of the rows of one batch (each row ``copies`` times in a row, as
    bidirectional decoding's candidates are): a draw of (B, ...) takes (copies, ...) from each."""

    def __init__(self, generators: list[torch.Generator], copies: int = 1):
        self.generators, self.copies = generators, copies

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        rows = len(self.generators) * self.copies
        if shape[0] != rows:
            raise ValueError(f"a per-episode draw must have one row per env row ({rows}), got shape {tuple(shape)}")
        return torch.cat([torch.randn((self.copies, *shape[1:]), generator=g) for g in self.generators])


class EpisodeNoise:
    """Per-env-row generators, started at each episode's reset with its seed."""

    def __init__(self, policy_seed: int = 0):
        self.policy_seed = policy_seed
        self.streams: dict[int, torch.Generator] = {}

    def reset(self, ids: Sequence[int] | None = None, seeds: Sequence[int] | None = None) -> None:
        """With ``seeds``: the env rows ``ids`` (default 0..len-1) start the episodes of those seeds.
        Without: the rows ``ids`` (default all) go back to the shared stream."""
        if seeds is None:
            for i in list(self.streams) if ids is None else ids:
                self.streams.pop(i, None)
            return
        ids = list(range(len(seeds))) if ids is None else list(ids)
        if len(ids) != len(seeds):
            raise ValueError(f"{len(seeds)} episode seeds for {len(ids)} env rows")
        for i, s in zip(ids, seeds):
            self.streams[i] = torch.Generator().manual_seed(episode_seed(self.policy_seed, s))

    def source(self, shared: torch.Generator, ids: Sequence[int], copies: int = 1):
        """What the rows ``ids`` draw from: their own streams, or ``shared`` when none has one."""
        if not self.streams:
            return shared
        missing = [i for i in ids if i not in self.streams]
        if missing:
            raise ValueError(f"env rows {missing} have no episode seed; reset(ids, seeds=...) starts their episodes")
        return RowStreams([self.streams[i] for i in ids], copies)


def pad_rows(t: torch.Tensor | None, rows: int) -> torch.Tensor | None:
    """``t`` with its last row repeated up to ``rows`` rows (unchanged if it has as many)."""
    if t is None or t.shape[0] >= rows:
        return t
    return torch.cat([t, t[-1:].expand(rows - t.shape[0], *t.shape[1:])])
