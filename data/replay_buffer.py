"""Episode store: a zarr replay buffer in Diffusion Policy's layout.

Layout (the one Chi et al.'s ``ReplayBuffer`` writes, so their files open here and ours
open there when written in zarr format 2)::

    <root>/data/<key>             arrays concatenated along time (axis 0), chunked along time
    <root>/meta/episode_ends      int64, exclusive cumulative ends, one per episode
    <root>/meta/episode_<field>   optional per-episode metadata (seed, success, ...)

Crash safety. ``add_episode`` validates everything before touching the disk, then writes
every data array, then the per-episode metadata, and commits last by appending to
``meta/episode_ends``. zarr's LocalStore replaces each file atomically, so a killed append
can only leave rows *past* the last committed end. The committed episode count is the
longest prefix of ``episode_ends`` that is positive, strictly increasing and covered by
every data array; readers see exactly those episodes, and opening for append trims the
leftovers. Committed rows are never rewritten with other values, so a concurrent reader
sees old or new chunk files with identical committed content: never a torn episode.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
import zarr.codecs

CHUNK_BYTES = 2 * 1024 * 1024  # time-chunks of about 2 MB, as in Diffusion Policy
META_PREFIX = "episode_"


def _time_chunks(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    return (max(1, CHUNK_BYTES // max(row_bytes, 1)),) + tuple(shape[1:])


def _compressor_kwargs(zarr_format: int) -> dict[str, Any]:
    if zarr_format == 2:
        return {"compressors": numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE)}
    return {"compressors": zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")}


def _as_checked_array(key: str, value: Any, what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{what} {key!r}: dtype {arr.dtype} is not numeric (bool/int/uint/float)")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{what} {key!r}: {bad} non-finite value(s) (NaN/Inf); nothing was written")
    return arr


class ReplayBuffer:
    """Append-only episode store on a local zarr directory (format 2 or 3)."""

    def __init__(self, root: zarr.Group, path: Path, writable: bool):
        self._root = root
        self.path = path
        self.writable = writable
        self.refresh()
        if writable:
            self._trim_uncommitted()

    # ----------------------------------------------------------------- construction
    @classmethod
    def create(cls, path: str | os.PathLike, zarr_format: int = 2, overwrite: bool = False) -> "ReplayBuffer":
        """Create an empty store. Format 2 (default) is what Diffusion Policy's own code reads."""
        path = Path(path)
        if zarr_format not in (2, 3):
            raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format}")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; use ReplayBuffer.open(path, mode='a') or overwrite=True")
        root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
        root.create_group("data")
        meta = root.create_group("meta")
        meta.create_array("episode_ends", shape=(0,), chunks=(4096,), dtype="int64", fill_value=0,
                          **_compressor_kwargs(zarr_format))
        return cls(root, path, writable=True)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> "ReplayBuffer":
        """Open an existing store: ``mode='r'`` read-only, ``'a'`` append."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        if not path.exists():
            raise FileNotFoundError(f"no replay buffer at {path}")
        root = zarr.open_group(str(path), mode="r" if mode == "r" else "r+")
        for name in ("data", "meta", "meta/episode_ends"):
            if name not in root:
                raise ValueError(f"{path} is not a replay buffer: missing {name!r}")
        return cls(root, path, writable=(mode == "a"))

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, zarr_format: int = 2) -> "ReplayBuffer":
        return cls.open(path, mode="a") if Path(path).exists() else cls.create(path, zarr_format=zarr_format)

    # ----------------------------------------------------------------- reading
    def refresh(self) -> None:
        """Re-read array metadata and the committed episode count (for readers of a growing file)."""
        self._data = {k: a for k, a in self._root["data"].arrays()}
        self._meta = {k[len(META_PREFIX):]: a for k, a in self._root["meta"].arrays()
                      if k.startswith(META_PREFIX) and k != "episode_ends"}
        ends = np.asarray(self._root["meta/episode_ends"][:], dtype=np.int64)
        self._ends = ends[: self._committed_count(ends)]

    def _committed_count(self, ends: np.ndarray) -> int:
        data_len = min((a.shape[0] for a in self._data.values()), default=0)
        n = 0
        prev = 0
        for end in ends:
            if end <= prev or end > data_len:
                break
            prev = int(end)
            n += 1
        meta_len = min((a.shape[0] for a in self._meta.values()), default=n)
        return min(n, meta_len)

    @property
    def zarr_format(self) -> int:
        return self._root.metadata.zarr_format

    @property
    def n_episodes(self) -> int:
        return len(self._ends)

    def __len__(self) -> int:
        return self.n_episodes

    @property
    def n_steps(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def episode_ends(self) -> np.ndarray:
        return self._ends.copy()

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(self._ends, prepend=0)

    @property
    def attrs(self) -> dict[str, Any]:
        """User attributes of the store (JSON values), e.g. which env and collector made it."""
        return dict(self._root.attrs)

    def set_attrs(self, values: Mapping[str, Any]) -> None:
        if not self.writable:
            raise PermissionError(f"{self.path} is open read-only")
        self._root.attrs.update(dict(values))

    def keys(self) -> list[str]:
        return sorted(self._data)

    def meta_keys(self) -> list[str]:
        return sorted(self._meta)

    def _bounds(self, i: int) -> tuple[int, int]:
        if not -self.n_episodes <= i < self.n_episodes:
            raise IndexError(f"episode {i} out of range (buffer has {self.n_episodes})")
        i %= self.n_episodes
        return (int(self._ends[i - 1]) if i > 0 else 0), int(self._ends[i])

    def episode(self, i: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """All arrays of episode ``i`` as ``{key: (L, ...)}``."""
        start, end = self._bounds(i)
        return {k: self._data[k][start:end] for k in (keys or self.keys())}

    def episode_meta(self, i: int) -> dict[str, Any]:
        self._bounds(i)
        return {k: a[i % self.n_episodes].item() for k, a in self._meta.items()}

    def get(self, key: str) -> np.ndarray:
        """The committed part of ``data/<key>``, all episodes concatenated: ``(n_steps, ...)``."""
        if key not in self._data:
            raise KeyError(f"no key {key!r}; buffer has {self.keys()}")
        return self._data[key][: self.n_steps]

    def meta_column(self, field: str) -> np.ndarray:
        return self._meta[field][: self.n_episodes]

    # ----------------------------------------------------------------- writing
    def _trim_uncommitted(self) -> None:
        """Drop what a killed append left past the last committed episode."""
        n, end = self.n_episodes, self.n_steps
        if n == 0:  # nothing committed yet: forget the schema a killed first append began
            for group, arrays in (("data", self._data), ("meta", self._meta)):
                for k in list(arrays):
                    del self._root[group][k if group == "data" else META_PREFIX + k]
                    del arrays[k]
        for arr in self._data.values():
            if arr.shape[0] > end:
                arr.resize((end,) + arr.shape[1:])
        for arr in self._meta.values():
            if arr.shape[0] > n:
                arr.resize((n,))
        ends = self._root["meta/episode_ends"]
        if ends.shape[0] > n:
            ends.resize((n,))

    def _validate(self, data: Mapping[str, Any], meta: Mapping[str, Any]) -> tuple[dict, dict, int]:
        if not isinstance(data, Mapping) or not data:
            raise ValueError("episode must be a non-empty dict of arrays")
        arrays = {k: _as_checked_array(k, v, "key") for k, v in data.items()}
        for k, a in arrays.items():
            if a.ndim == 0:
                raise ValueError(f"key {k!r}: expected an array with a time axis, got a scalar")
        lengths = {k: a.shape[0] for k, a in arrays.items()}
        length = next(iter(lengths.values()))
        if length == 0:
            raise ValueError(f"key {next(iter(lengths))!r}: episode has zero steps")
        for k, n in lengths.items():
            if n != length:
                raise ValueError(f"key {k!r}: length {n} differs from {length} of the other keys (ragged episode)")
        if self._data:
            for k in self._data:
                if k not in arrays:
                    raise ValueError(f"missing key {k!r}; the buffer stores {self.keys()}")
            for k in arrays:
                if k not in self._data:
                    raise ValueError(f"unexpected key {k!r}; the buffer stores {self.keys()}")
            for k, a in arrays.items():
                stored = self._data[k]
                if a.shape[1:] != stored.shape[1:]:
                    raise ValueError(f"key {k!r}: per-step shape {a.shape[1:]} != stored {stored.shape[1:]}")
                if not np.can_cast(a.dtype, stored.dtype, casting="same_kind") or (
                        a.dtype.kind == "f" and stored.dtype.kind in "biu"):
                    raise ValueError(f"key {k!r}: dtype {a.dtype} cannot be stored as {stored.dtype}")
        meta_arrays = {k: _as_checked_array(k, v, "metadata") for k, v in meta.items()}
        for k, a in meta_arrays.items():
            if a.ndim != 0:
                raise ValueError(f"metadata {k!r}: expected a scalar, got shape {a.shape}")
        if self.n_episodes > 0 or self._meta:
            if set(meta_arrays) != set(self._meta):
                raise ValueError(f"metadata keys {sorted(meta_arrays)} != stored {self.meta_keys()}")
        return arrays, meta_arrays, length

    def add_episode(self, data: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> int:
        """Append one episode ``{key: (L, ...)}`` (+ scalar metadata); returns its index.

        Raises ``ValueError`` naming the offending key for ragged lengths, non-numeric
        dtypes, NaN/Inf, or keys that differ from the stored ones; nothing is written then.
        """
        if not self.writable:
            raise PermissionError(f"{self.path} is open read-only; use ReplayBuffer.open(path, mode='a')")
        arrays, meta_arrays, length = self._validate(data, meta or {})
        fmt = self.zarr_format
        start = self.n_steps
        n = self.n_episodes
        for k, a in arrays.items():
            arr = self._data.get(k)
            if arr is None:
                arr = self._root["data"].create_array(
                    k, shape=(0,) + a.shape[1:], chunks=_time_chunks(a.shape, a.dtype), dtype=a.dtype,
                    **_compressor_kwargs(fmt))
                self._data[k] = arr
            arr.resize((start + length,) + arr.shape[1:])
            arr[start:start + length] = a
        for k, a in meta_arrays.items():
            arr = self._meta.get(k)
            if arr is None:
                arr = self._root["meta"].create_array(
                    META_PREFIX + k, shape=(0,), chunks=(4096,), dtype=a.dtype, **_compressor_kwargs(fmt))
                self._meta[k] = arr
            arr.resize((n + 1,))
            arr[n] = a
        ends = self._root["meta/episode_ends"]
        ends.resize((n + 1,))
        ends[n] = start + length  # the commit
        self._ends = np.append(self._ends, start + length)
        return n

    def __repr__(self) -> str:
        return (f"ReplayBuffer({str(self.path)!r}, episodes={self.n_episodes}, steps={self.n_steps}, "
                f"keys={self.keys()}, zarr_format={self.zarr_format})")


def loop_recorder(path: str | os.PathLike):
    """An ``on_episode_end(record, report)`` callback for the control loop that appends what
    it observed and sent (``record``: observations, ``action``, ``t``, ``held``, ``queue`` and the
    chunks as they arrived: ``chunk_arrived``, ``chunk``, ``chunk_latency_ms``) to the store at
    ``path``, with the episode's seed, success, deadline misses and whether it stopped early as
    metadata."""
    rb = ReplayBuffer.open_or_create(path)

    def on_end(record: dict, rep) -> None:
        data = {k: v.astype(np.uint8) if v.dtype == bool else v for k, v in record.items()}  # held, chunk_arrived
        rb.add_episode(data, meta={"seed": -1 if rep.seed is None else rep.seed, "success": rep.success,
                                   "deadline_misses": rep.deadline_misses, "stopped_early": rep.stopped != "done"})
    return on_end
