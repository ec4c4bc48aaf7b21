"""A chunk policy from an exported directory (policy/accel/onnx_export.py), run by ONNX Runtime
on the CPU. It needs numpy and onnxruntime only: no network definition, no trainer, no torch
model is imported, so a deployment (``dpctrl serve --checkpoint EXPORTED_DIR``) can ship the
directory and this module.

The directory is checked before anything runs: its manifest's format and version, every graph
file's size and SHA-256 (a truncated or replaced file is refused), and each graph's inputs
against the manifest (a manifest from another export is refused). The RTI warm start lives in
the graphs (``warm.onnx`` shifts the stored chunk itself); this class keeps the stored chunk
per env row and draws the noise, per episode when ``reset(seeds=...)`` starts episodes.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from dpctrl.policy.interface import finite_actions, validate_obs

FORMAT, VERSION, MANIFEST = "dpctrl-onnx", 1, "deploy.json"
ORT_EXTRA = "pip install 'dpctrl[onnx]'"


class ExportError(ValueError):
    """An exported directory that cannot be run as it is."""


def is_export(path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path) -> dict:
    """The manifest of an exported directory, with every graph file verified."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ExportError(f"{path}: no readable {MANIFEST} ({err})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ExportError(f"{path}/{MANIFEST}: format {manifest.get('format')!r} version {manifest.get('version')!r}, "
                          f"not {FORMAT!r} version {VERSION}")
    for name, g in manifest.get("graphs", {}).items():
        f = path / g["file"]
        if not f.is_file():
            raise ExportError(f"{path}: graph {name!r} file {g['file']} is missing")
        if f.stat().st_size != g["bytes"]:
            raise ExportError(f"{f}: {f.stat().st_size} bytes, the manifest says {g['bytes']} (truncated or replaced)")
        if hashlib.sha256(f.read_bytes()).hexdigest() != g["sha256"]:
            raise ExportError(f"{f}: SHA-256 differs from the manifest's (modified after export)")
    if "cold" not in manifest.get("graphs", {}):
        raise ExportError(f"{path}/{MANIFEST}: no cold graph")
    return manifest


class OnnxPolicy:
    """``ChunkPolicy`` over ONNX Runtime sessions of an exported directory."""

    overlap_modes: tuple[str, ...] = ()  # committed-prefix modes run the eager network
    deploy = "onnxruntime"

    def __init__(self, path, threads: int = 1, seed: int = 0):
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError(f"running an exported policy needs ONNX Runtime: {ORT_EXTRA}") from err
        self.path, self.seed = Path(path), seed
        m = self.manifest = read_manifest(path)
        self.n_obs_steps, self.horizon = m["n_obs_steps"], m["horizon"]
        self.n_action_steps, self.action_dim = m["n_action_steps"], m["action_dim"]
        # the source policy's configuration, read as DiffusionPolicy's is (the server's meta, image keys)
        src = m["source"]
        self.cfg = SimpleNamespace(**{**src["config"], "sampler": src["sampler"],
                                      "num_inference_steps": src["num_inference_steps"]})
        self.warm = SimpleNamespace(cfg=SimpleNamespace(**src["warm_start"])) if src.get("warm_start") else None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sessions = {}
        for name, g in m["graphs"].items():
            sess = ort.InferenceSession(str(self.path / g["file"]), opts, providers=["CPUExecutionProvider"])
            got = [i.name for i in sess.get_inputs()]
            if got != list(g["inputs"]):
                raise ExportError(f"{self.path / g['file']} takes inputs {got}, the manifest says {list(g['inputs'])}")
            self.sessions[name] = sess
        self.rng = np.random.default_rng(seed)
        self.prev: dict[int, np.ndarray] = {}
        if self.warm is not None:  # the server groups warm and cold sessions by warm.prev, as for the eager policy
            self.warm.prev = self.prev
        self.executed: dict[int, int] = {}
        self.streams: dict[int, np.random.Generator] = {}
        self.nfe_last = 0

    # ---------------------------------------------------------------- ChunkPolicy
    def expected_obs(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v) for k, v in self.manifest["expected_obs"].items()}

    def validate_obs(self, obs: Mapping, batched: bool = False) -> None:
        validate_obs(self.expected_obs(), obs, batched)

    def describe(self) -> dict:
        src = self.manifest["source"]
        return {**src, "deploy": self.deploy, "export": str(self.path), "precision": self.manifest.get("precision", "fp32")}

    def reset(self, ids: list[int] | None = None, seeds: list[int] | None = None) -> None:
        """As ``DiffusionPolicy.reset``: ``seeds`` start per-episode noise streams (numpy's)."""
        self.nfe_last = 0
        for i in list(self.prev) if ids is None else ids:
            self.prev.pop(i, None)
            self.executed.pop(i, None)
        if seeds is None:
            for i in list(self.streams) if ids is None else ids:
                self.streams.pop(i, None)
            return
        for i, s in zip(range(len(seeds)) if ids is None else ids, seeds):
            self.streams[i] = np.random.default_rng(np.random.SeedSequence([self.seed, int(s)]))

    def note_executed(self, n: int, ids: list[int] | None = None) -> None:
        for i in ids if ids is not None else list(self.prev):
            self.executed[i] = n

    def _draw(self, ids: list[int], shape: tuple[int, ...], axis: int = 0) -> np.ndarray:
        if self.streams:
            rows = [self.streams[i].standard_normal(shape, dtype=np.float32) for i in ids]
        else:
            rows = [self.rng.standard_normal(shape, dtype=np.float32) for _ in ids]
        return np.stack(rows, axis=axis)

    def predict_batch(self, obs: Mapping[str, np.ndarray], committed=None, ids: list[int] | None = None) -> np.ndarray:
        if committed is not None and np.asarray(getattr(committed, "actions", committed)).size:
            raise ValueError("an exported policy runs the replace and blend overlap modes only (the committed-"
                             "prefix modes run the eager network)")
        self.validate_obs(obs, batched=True)
        B = len(next(iter(obs.values())))
        ids = list(range(B)) if ids is None else list(ids)
        warm = "warm" in self.sessions and all(i in self.prev for i in ids)
        name = "warm" if warm else "cold"
        if B == 1 and f"{name}_b1" in self.sessions:  # the graph specialized to one row
            name = f"{name}_b1"
        graph = self.manifest["graphs"][name]
        T, A = self.horizon, self.action_dim
        feed = {}
        for k, shape in self.expected_obs().items():
            feed[k.replace(".", "_")] = np.asarray(obs[k], dtype=np.uint8 if len(shape) == 4 else np.float32)
        if warm:
            feed["prev"] = np.stack([self.prev[i] for i in ids])
            feed["executed"] = np.array([self.executed.get(i, self.n_action_steps) for i in ids], dtype=np.int64)
        else:
            feed["x"] = self._draw(ids, (T, A))
        if "start_noise" in graph["inputs"]:
            feed["start_noise"] = self._draw(ids, (T, A))
        if "step_noise" in graph["inputs"]:
            feed["step_noise"] = self._draw(ids, (graph["network_calls"], T, A), axis=1)
        stored, actions = self.sessions[name].run(["stored", "actions"], feed)
        for row, i in enumerate(ids):
            self.prev[i] = stored[row]
            self.executed.pop(i, None)
        self.nfe_last = graph["network_calls"]
        return finite_actions(actions)

    def predict_chunk(self, obs_window: Mapping[str, np.ndarray], committed=None) -> np.ndarray:
        return self.predict_batch({k: np.asarray(obs_window[k])[None] for k in self.expected_obs()}, committed)[0]
