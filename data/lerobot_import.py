"""LeRobot v3.0 datasets -> the zarr episode store (``dpctrl lerobot import``); the layout and
the key mapping are described in data/lerobot.py."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dpctrl.data.lerobot import (FRAME_COLUMNS, TIMESTAMP_TOLERANCE_S, LeRobotFormatError, Staging, decode_video,
                                 require_pyarrow, zarr_key)
from dpctrl.data.replay_buffer import ReplayBuffer


class LeRobotSource:
    """Reads a local LeRobot v3.0 dataset: ``info``, ``tasks``, ``n_episodes`` and
    ``episode(i) -> {zarr key: array}`` (frames decoded from the videos or PNG images)."""

    def __init__(self, root: str | os.PathLike):
        pa, pq = require_pyarrow()
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise LeRobotFormatError(f"{self.root}: no meta/info.json; not a LeRobot dataset")
        self.info = json.loads(info_path.read_text())
        version = str(self.info.get("codebase_version", ""))
        if not version.startswith("v3."):
            raise LeRobotFormatError(f"{self.root}: codebase_version {version!r}; only v3.x is supported "
                                     "(convert older datasets with lerobot's converter first)")
        for field in ("fps", "features", "data_path"):
            if field not in self.info:
                raise LeRobotFormatError(f"{self.root}: meta/info.json lacks {field!r}")
        self.fps = self.info["fps"]
        self.features: dict[str, dict] = self.info["features"]
        ep_files = sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))
        if not ep_files:
            raise LeRobotFormatError(f"{self.root}: no meta/episodes/*/*.parquet")
        eps = pa.concat_tables([pq.read_table(str(p)) for p in ep_files], promote_options="default")
        keep = [c for c in eps.column_names if not c.startswith("stats/")]
        self.episodes = sorted(eps.select(keep).to_pylist(), key=lambda r: r["episode_index"])
        tasks_path = self.root / "meta" / "tasks.parquet"
        self.tasks: list[str] = []
        if tasks_path.is_file():  # pandas-written: the task string is the (index) column besides task_index
            t = pq.read_table(str(tasks_path))
            names = [c for c in t.column_names if c != "task_index"]
            if "task_index" not in t.column_names or len(names) != 1:
                raise LeRobotFormatError(f"{tasks_path}: expected task_index and one task column, got {t.column_names}")
            self.tasks = [str(n) for _, n in sorted(zip(t["task_index"].to_pylist(), t[names[0]].to_pylist()))]
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        self.image_keys = [k for k, f in self.features.items() if f["dtype"] == "image"]
        self.keys = {k: zarr_key(k) for k, f in self.features.items()
                     if k not in FRAME_COLUMNS and f["dtype"] != "string"}
        clash = len(set(self.keys.values())) != len(self.keys)
        if clash:
            raise LeRobotFormatError(f"{self.root}: features {sorted(self.keys)} map to clashing zarr keys")
        self._data_cache: tuple[str, Any] | None = None
        self._video_cache: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}

    @property
    def n_episodes(self) -> int:
        return len(self.episodes)

    def _data(self, ep: dict):
        _, pq = require_pyarrow()
        path = self.root / self.info["data_path"].format(chunk_index=ep["data/chunk_index"],
                                                         file_index=ep["data/file_index"])
        if self._data_cache is None or self._data_cache[0] != str(path):
            if not path.is_file():
                raise LeRobotFormatError(f"{path}: data file of episode {ep['episode_index']} is missing")
            self._data_cache = (str(path), pq.read_table(str(path)))
        return self._data_cache[1]

    def _frames(self, name: str, ep: dict, timestamps: np.ndarray) -> np.ndarray:
        path = self.root / self.info["video_path"].format(video_key=name,
                                                          chunk_index=ep[f"videos/{name}/chunk_index"],
                                                          file_index=ep[f"videos/{name}/file_index"])
        cached = self._video_cache.get(name)
        if cached is None or cached[0] != str(path):
            if not path.is_file():
                raise LeRobotFormatError(f"{path}: video of episode {ep['episode_index']} is missing")
            frames, times = decode_video(path)
            self._video_cache[name] = cached = (str(path), frames, times)
        _, frames, times = cached
        query = ep[f"videos/{name}/from_timestamp"] + timestamps.astype(np.float64)
        idx = np.clip(np.searchsorted(times, query), 1, len(times) - 1)
        idx = np.where(np.abs(times[idx - 1] - query) <= np.abs(times[idx] - query), idx - 1, idx)
        off = np.abs(times[idx] - query)
        if (off > TIMESTAMP_TOLERANCE_S).any():
            worst = int(np.argmax(off))
            raise LeRobotFormatError(f"{path}: no frame within {TIMESTAMP_TOLERANCE_S} s of t={query[worst]:.4f} "
                                     f"(episode {ep['episode_index']}, nearest {times[idx[worst]]:.4f})")
        return frames[idx]

    def episode(self, i: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays by zarr key, per-episode metadata) of episode ``i`` (in episode_index order)."""
        ep = self.episodes[i]
        table = self._data(ep)
        start = ep["dataset_from_index"] - (table["index"][0].as_py() if table.num_rows else 0)
        rows = table.slice(start, ep["length"])
        if rows.num_rows != ep["length"] or (
                rows.num_rows and rows["episode_index"][0].as_py() != ep["episode_index"]):
            raise LeRobotFormatError(f"{self.root}: rows of episode {ep['episode_index']} are not where "
                                     "meta/episodes says")
        out: dict[str, np.ndarray] = {}
        for name, key in self.keys.items():
            ft = self.features[name]
            if ft["dtype"] == "video":
                out[key] = self._frames(name, ep, rows["timestamp"].to_numpy())
            elif ft["dtype"] == "image":
                out[key] = np.stack([_decode_png(v) for v in rows[name].to_pylist()])
            else:
                col = rows[name].combine_chunks() if hasattr(rows[name], "combine_chunks") else rows[name]
                if tuple(ft["shape"]) == (1,) and not hasattr(col.type, "list_size"):
                    out[key] = col.to_numpy(zero_copy_only=False).astype(ft["dtype"])
                else:
                    flat = col.flatten().to_numpy(zero_copy_only=False).astype(ft["dtype"])
                    out[key] = flat.reshape(rows.num_rows, *ft["shape"])
        meta = {"task_index": int(rows["task_index"][0].as_py()) if "task_index" in rows.column_names and rows.num_rows else 0}
        meta.update({k[len("dpctrl/"):]: v for k, v in ep.items() if k.startswith("dpctrl/") and v is not None})
        return out, meta

    def __iter__(self) -> Iterator[tuple[dict[str, np.ndarray], dict[str, Any]]]:
        for i in range(self.n_episodes):
            yield self.episode(i)


def _decode_png(value: dict) -> np.ndarray:
    import cv2
    raw = value.get("bytes") if isinstance(value, dict) else None
    if raw is None:
        raise LeRobotFormatError("image feature without embedded bytes (external image paths are not supported)")
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    return img[..., ::-1].copy()


def import_lerobot(src: str | os.PathLike, out_zarr: str | os.PathLike, zarr_format: int = 2,
                   overwrite: bool = False, progress: bool = True) -> ReplayBuffer:
    """Copy a LeRobot v3.0 dataset into a new zarr store (all episodes, in episode order).
    The tasks, fps and robot type go into the store's attrs; task_index and any ``dpctrl/``
    episode columns become per-episode metadata."""
    source = LeRobotSource(src)
    with Staging(out_zarr, overwrite) as tmp:
        buf = ReplayBuffer.create(tmp, zarr_format=zarr_format)
        buf.set_attrs({"source": "lerobot", "lerobot_tasks": source.tasks, "fps": source.fps,
                       "robot_type": source.info.get("robot_type"),
                       "lerobot_features": {k: v for k, v in source.keys.items()}})
        for data, meta in tqdm(source, total=source.n_episodes, desc="import lerobot", unit="ep",
                               disable=not progress):
            buf.add_episode(data, meta)
    return ReplayBuffer.open(out_zarr)
