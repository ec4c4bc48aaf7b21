"""LeRobot v3.0 datasets <-> the zarr episode store, without the ``lerobot`` package.

LeRobot's v3.0 layout (what ``lerobot`` 0.4 writes and reads)::

    meta/info.json                      codebase_version "v3.0", fps, features, path templates
    meta/stats.json                     per-feature min/max/mean/std/count/q01..q99
    meta/tasks.parquet                  task string (index) -> task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode: length, tasks, where its
                                        rows (dataset_from/to_index) and frames
                                        (videos/<key>/from/to_timestamp) live
    data/chunk-000/file-000.parquet     one row per frame: the features + timestamp,
                                        frame_index, episode_index, index, task_index
    videos/<key>/chunk-000/file-000.mp4 camera frames, episodes concatenated in one stream

Only pyarrow and PyAV are needed. Key mapping (zarr key <-> LeRobot feature):
``action`` <-> ``action``; an image array (T, H, W, 3) uint8 ``k`` <-> video
``observation.images.k``; any other array ``k`` <-> ``observation.k``. On import, LeRobot
names without that shape map by dropping the ``observation.``/``observation.images.``
prefix and turning the remaining dots into underscores (``next.reward`` -> ``next_reward``).

Exact round trips. Export encodes video losslessly (H.264 RGB, ``libx264rgb`` at qp 0), so
the frames ``lerobot`` decodes are bit-identical to the recorded ones; arrays keep their
dtype, except float64, stored as float32 (what lerobot's reader returns for any float). Import reads what is there: frames of a lossy LeRobot video (AV1 by default) come
out exactly as any decoder returns them, not as they were before encoding.

Crash safety: both directions write into a hidden sibling directory and rename it into
place at the end, so a killed run leaves no half-written dataset under the target name.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dpctrl.data.replay_buffer import ReplayBuffer

CODEBASE_VERSION = "v3.0"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
CHUNKS_SIZE = 1000  # files per chunk directory, as lerobot
FRAME_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
TIMESTAMP_TOLERANCE_S = 1e-4  # lerobot's default tolerance when it matches frames to timestamps


class LeRobotFormatError(ValueError):
    """The directory is not a LeRobot v3.0 dataset this reader understands."""


def require_pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - the `lerobot` extra installs it
        raise ImportError("LeRobot datasets need pyarrow: pip install 'dpctrl[lerobot]'") from e
    return pa, pq


def require_av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - the `lerobot` extra installs it
        raise ImportError("LeRobot videos need PyAV: pip install 'dpctrl[lerobot]'") from e
    return av


def is_image(arr_shape: tuple[int, ...], dtype: np.dtype) -> bool:
    return len(arr_shape) == 4 and arr_shape[-1] == 3 and np.dtype(dtype) == np.uint8


def lerobot_key(zarr_key: str, is_image: bool) -> str:
    if zarr_key == "action":
        return "action"
    return ("observation.images." if is_image else "observation.") + zarr_key


def zarr_key(lerobot_name: str) -> str:
    for prefix in ("observation.images.", "observation."):
        if lerobot_name.startswith(prefix):
            lerobot_name = lerobot_name[len(prefix):]
            break
    return lerobot_name.replace(".", "_").replace("/", "_")


class Staging:
    """A hidden sibling directory that becomes ``target`` on ``commit()`` and is deleted on error."""

    def __init__(self, target: str | os.PathLike, overwrite: bool):
        self.target = Path(target)
        if self.target.exists() and not overwrite:
            raise FileExistsError(f"{self.target} exists; pass overwrite=True (--overwrite) to replace it")
        self.path = self.target.parent / f".{self.target.name}.partial-{os.getpid()}"

    def __enter__(self) -> Path:
        shutil.rmtree(self.path, ignore_errors=True)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        return self.path

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.old-{os.getpid()}"
            self.target.rename(old)
            self.path.rename(self.target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.path.rename(self.target)


# --------------------------------------------------------------------------------- statistics
def _stats(values: np.ndarray, image: bool) -> dict[str, list]:
    """lerobot's per-feature statistics: per dimension for vectors, per channel in [0, 1] with
    shape (3, 1, 1) for images."""
    if image:
        x = values.reshape(-1, 3).astype(np.float64) / 255.0
        shape = (3, 1, 1)
    else:
        x = values.reshape(len(values), -1).astype(np.float64)
        shape = (x.shape[1],)
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
    for q in QUANTILES:
        out[f"q{int(round(q * 100)):02d}"] = np.quantile(x, q, axis=0)
    stats = {k: v.reshape(shape).tolist() for k, v in out.items()}
    stats["count"] = [int(len(values))]
    return stats


# --------------------------------------------------------------------------------- video
class _VideoWriter:
    """One mp4 per (video key, file): frames of consecutive episodes in one stream with pts =
    frame number and time base 1/fps. Lossless H.264 in RGB so decoders return the exact pixels."""

    def __init__(self, path: Path, fps: int, height: int, width: int):
        av = require_av()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264rgb", rate=fps)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "rgb24"
        self.stream.options = {"qp": "0", "preset": "veryfast", "g": "10"}
        self.frames = 0
        self._av = av

    def write(self, frames: np.ndarray) -> None:
        for img in frames:
            frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = self.frames  # in the encoder's time base, 1/fps
            self.frames += 1
            for packet in self.stream.encode(frame):
                self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def decode_video(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """All frames of a video file as (N, H, W, 3) uint8 RGB and their presentation times (s)."""
    av = require_av()
    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * stream.time_base) if frame.pts is not None else float(frame.time))
    if not frames:
        raise LeRobotFormatError(f"{path}: no video frames")
    return np.stack(frames), np.asarray(times)


# --------------------------------------------------------------------------------- export
def export_lerobot(buffer: ReplayBuffer, out_dir: str | os.PathLike, fps: int, task: str = "",
                   robot_type: str | None = None, episodes: Sequence[int] | None = None,
                   data_file_mb: float = 100.0, video_file_mb: float = 200.0,
                   overwrite: bool = False, progress: bool = True) -> dict:
    """Write ``buffer``'s episodes as a LeRobot v3.0 dataset in ``out_dir``; returns info.json.

    ``fps`` is the recording rate; ``task`` the natural-language task of every episode.
    Files roll over at about ``data_file_mb`` of frame rows and ``video_file_mb`` of raw
    frames (an upper bound on the encoded size). Per-episode metadata (seed, success) goes
    into the episodes table as ``dpctrl/<field>`` columns, which lerobot carries along.
    """
    pa, pq = require_pyarrow()
    if int(fps) != fps or fps <= 0:
        raise ValueError(f"fps must be a positive integer (LeRobot stores an int), got {fps}")
    fps = int(fps)
    ep_ids = list(range(buffer.n_episodes)) if episodes is None else [int(e) for e in episodes]
    if not ep_ids:
        raise ValueError(f"{buffer.path}: no episodes to export")
    bad = [e for e in ep_ids if not 0 <= e < buffer.n_episodes]
    if bad:
        raise IndexError(f"episodes {bad} out of range (the store has {buffer.n_episodes})")

    first = buffer.episode(ep_ids[0])
    keys = sorted(first, key=lambda k: (k != "action", k))
    features: dict[str, dict] = {}
    video_keys, columns = {}, {}
    for k in keys:
        arr = first[k]
        if is_image(arr.shape, arr.dtype):
            name = lerobot_key(k, True)
            h, w = arr.shape[1:3]
            features[name] = {"dtype": "video", "shape": [int(h), int(w), 3],
                              "names": ["height", "width", "channels"],
                              "info": {"video.height": int(h), "video.width": int(w), "video.codec": "h264",
                                       "video.pix_fmt": "rgb24", "video.is_depth_map": False,
                                       "video.fps": fps, "video.channels": 3, "video.has_audio": False}}
            video_keys[name] = k
        elif arr.ndim in (1, 2):
            name = lerobot_key(k, False)
            dim = 1 if arr.ndim == 1 else int(arr.shape[1])
            features[name] = {"dtype": str(export_dtype(arr.dtype)), "shape": [dim],
                              "names": None if arr.ndim == 1 else [f"{k}_{i}" for i in range(dim)]}
            columns[name] = k
        else:
            raise ValueError(f"{buffer.path}: key {k!r} of per-step shape {arr.shape[1:]} has no LeRobot "
                             "feature (vectors, scalars and (H, W, 3) uint8 images are supported)")
    for name, dt in zip(FRAME_COLUMNS, ("float32", "int64", "int64", "int64", "int64")):
        features[name] = {"dtype": dt, "shape": [1], "names": None}

    def column(name: str, values: np.ndarray):
        ft = features[name]
        values = np.ascontiguousarray(values, dtype=ft["dtype"])
        if values.ndim == 1:
            return pa.array(values)
        flat = pa.array(values.reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, ft["shape"][0])

    meta_fields = buffer.meta_keys()
    row_bytes = sum(int(np.prod(first[k].shape[1:])) * first[k].dtype.itemsize for k in columns.values()) + 40
    with Staging(out_dir, overwrite) as root:
        data_file = [0, 0]  # chunk, file
        writer, rows_in_file = None, 0
        videos: dict[str, _VideoWriter] = {}
        video_file = {name: [0, 0] for name in video_keys}
        video_frames_in_file = {name: 0 for name in video_keys}
        all_stats: dict[str, list[np.ndarray]] = {name: [] for name in features if name not in video_keys}
        image_stats: dict[str, list[dict]] = {name: [] for name in video_keys}
        episode_rows = []
        total = 0
        schema = None
        for new_index, e in enumerate(tqdm(ep_ids, desc="export lerobot", unit="ep", disable=not progress)):
            ep = buffer.episode(e)
            n = len(ep["action"]) if "action" in ep else len(next(iter(ep.values())))
            if writer is not None and (rows_in_file + n) * row_bytes > data_file_mb * 2**20:
                writer.close()
                writer, rows_in_file = None, 0
                data_file = _next_file(data_file)
            cols = {name: column(name, ep[k]) for name, k in columns.items()}
            frame_cols = {"timestamp": np.arange(n, dtype=np.float32) / np.float32(fps),
                          "frame_index": np.arange(n, dtype=np.int64),
                          "episode_index": np.full(n, new_index, np.int64),
                          "index": np.arange(total, total + n, dtype=np.int64),
                          "task_index": np.zeros(n, np.int64)}
            cols.update({k: pa.array(v) for k, v in frame_cols.items()})
            for name, k in columns.items():
                all_stats[name].append(ep[k].astype(features[name]["dtype"]))
            for name, v in frame_cols.items():
                all_stats[name].append(v)
            table = pa.table(cols)
            if writer is None:
                path = root / DATA_PATH.format(chunk_index=data_file[0], file_index=data_file[1])
                path.parent.mkdir(parents=True, exist_ok=True)
                schema = table.schema
                writer = pq.ParquetWriter(str(path), schema)
            writer.write_table(table.cast(schema))
            rows_in_file += n
            row = {"episode_index": new_index, "tasks": [task], "length": n,
                   "data/chunk_index": data_file[0], "data/file_index": data_file[1],
                   "dataset_from_index": total, "dataset_to_index": total + n}
            for name, k in video_keys.items():
                frames = ep[k]
                raw_mb = frames.nbytes / 2**20
                if name in videos and (video_frames_in_file[name] * frames[0].nbytes / 2**20 + raw_mb) > video_file_mb:
                    videos.pop(name).close()
                    video_file[name] = _next_file(video_file[name])
                    video_frames_in_file[name] = 0
                if name not in videos:
                    path = root / VIDEO_PATH.format(video_key=name, chunk_index=video_file[name][0],
                                                    file_index=video_file[name][1])
                    videos[name] = _VideoWriter(path, fps, frames.shape[1], frames.shape[2])
                start = video_frames_in_file[name]
                videos[name].write(frames)
                video_frames_in_file[name] += n
                row.update({f"videos/{name}/chunk_index": video_file[name][0],
                            f"videos/{name}/file_index": video_file[name][1],
                            f"videos/{name}/from_timestamp": start / fps,
                            f"videos/{name}/to_timestamp": (start + n) / fps})
                image_stats[name].append(_stats(frames, image=True))
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            for field in meta_fields:
                value = buffer.episode_meta(e).get(field)
                if value is not None:
                    row[f"dpctrl/{field}"] = np.asarray(value).item()
            episode_rows.append(row)
            total += n
        if writer is not None:
            writer.close()
        for v in videos.values():
            v.close()

        ep_table = pa.Table.from_pylist(episode_rows)
        path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(ep_table, str(path))
        pq.write_table(pa.table({"task_index": pa.array([0], pa.int64()),
                                 "__index_level_0__": pa.array([task])}).replace_schema_metadata(
            {b"pandas": json.dumps(_pandas_index_meta()).encode()}), str(root / "meta" / "tasks.parquet"))

        stats = {name: _stats(np.concatenate(v), image=False) for name, v in all_stats.items()}
        for name, per_ep in image_stats.items():
            stats[name] = _merge_image_stats(per_ep)
        (root / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type,
                "total_episodes": len(ep_ids), "total_frames": total, "total_tasks": 1,
                "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": int(data_file_mb),
                "video_files_size_in_mb": int(video_file_mb), "fps": fps,
                "splits": {"train": f"0:{len(ep_ids)}"}, "data_path": DATA_PATH,
                "video_path": VIDEO_PATH if video_keys else None, "features": features}
        (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return info


def export_dtype(dtype: np.dtype) -> np.dtype:
    """float64 is stored as float32: lerobot hands every float feature to torch as float32
    (``torch.tensor`` of Python floats), so wider values would not survive its reader anyway."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float64 else np.dtype(dtype)


def _next_file(index: list[int]) -> list[int]:
    chunk, file = index
    return [chunk + 1, 0] if file == CHUNKS_SIZE - 1 else [chunk, file + 1]


def _pandas_index_meta() -> dict:
    """pandas metadata so that ``pd.read_parquet`` (what lerobot uses) restores the task string as
    the DataFrame index, as lerobot's own ``tasks.parquet`` does."""
    return {"index_columns": ["__index_level_0__"], "column_indexes": [],
            "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                         "numpy_type": "int64", "metadata": None},
                        {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                         "numpy_type": "object", "metadata": None}],
            "creator": {"library": "pyarrow"}, "pandas_version": "2.2.0"}


def _merge_image_stats(per_ep: list[dict]) -> dict:
    counts = np.array([s["count"][0] for s in per_ep], np.float64)
    w = counts / counts.sum()
    mean = sum(wi * np.asarray(s["mean"]) for wi, s in zip(w, per_ep))
    second = sum(wi * (np.asarray(s["std"]) ** 2 + np.asarray(s["mean"]) ** 2) for wi, s in zip(w, per_ep))
    out = {"min": np.min([s["min"] for s in per_ep], 0).tolist(), "max": np.max([s["max"] for s in per_ep], 0).tolist(),
           "mean": mean.tolist(), "std": np.sqrt(np.maximum(second - mean**2, 0)).tolist()}
    for q in QUANTILES:  # lerobot also averages per-episode quantiles when it aggregates
        key = f"q{int(round(q * 100)):02d}"
        out[key] = sum(wi * np.asarray(s[key]) for wi, s in zip(w, per_ep)).tolist()
    out["count"] = [int(counts.sum())]
    return out


# --------------------------------------------------------------------------------- import
