"""ONNX export of a DP-T policy's whole chunk (``dpctrl export --format onnx``).

A chunk is already a pure function of device tensors once its noise is drawn
(``DiffusionPolicy.chunk_tensors``: observations in robot units -> conditioning -> the fixed
step list -> actions in robot units; what the CUDA-graph path captures). The exporter traces
that function with its step plan unrolled, one graph per plan:

- ``cold.onnx``: the cold run, from start noise ``x``;
- ``warm.onnx`` (with an RTI warm start set): from the stored previous chunk ``prev``, shifted
  by ``executed`` actions per row inside the graph (``shift_rows``), diffused to K' with
  ``start_noise`` where the warm start asks for it.

Both take the observation keys as inputs and return ``stored`` (the normalized sample as a warm
start keeps it) and ``actions``; DDPM graphs also take ``step_noise`` (steps, B, T, A). The batch
dimension is dynamic; each plan is also written specialized to batch 1 (``cold_b1.onnx``,
``warm_b1.onnx``: the robot's batch, where ONNX Runtime folds every shape computation away; 15-20%
faster per chunk on the 2-core dev CPU), which the runtime takes for single-row calls. ``deploy.json`` beside them holds the chunk geometry, the expected
observations, every input's shape, each file's size and SHA-256, and the source policy's
``describe()``; policy/onnx_policy.py runs the directory with ONNX Runtime alone.

``precision="int8"`` quantizes each graph after export with ONNX Runtime's dynamic
quantization: the MatMul/Gemm weights stored as signed int8 (per output channel), the
activations quantized per call from their own range; everything else (normalizer, sampler
arithmetic, layer norms) stays fp32. The manifest records it; nothing else changes.
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import json
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from dpctrl.policy.accel.warmstart import clip_discrete, discrete_mask, shift_rows
from dpctrl.policy.denoise import RunNoise
from dpctrl.policy.onnx_policy import FORMAT, MANIFEST, ORT_EXTRA, VERSION

OPSET = 17
PRECISIONS = ("fp32", "int8")


class _Chunk(nn.Module):
    """One plan's chunk as a module: (obs..., x | prev + executed, [start_noise], [step_noise])."""

    def __init__(self, policy, plan, warm: bool):
        super().__init__()
        self.policy, self.plan, self.warm = policy, plan, warm
        self.keys = list(policy.expected_obs())
        self.start = plan.start_level is not None
        self.ddpm = policy.sampler.name == "ddpm"
        cfg = policy.warm.cfg if policy.warm is not None else None
        self.clip = cfg
        self.register_buffer("mask", discrete_mask(cfg, policy.cfg.action_dim) if cfg else torch.zeros(0, dtype=torch.bool))

    def inputs(self) -> list[str]:
        names = [k.replace(".", "_") for k in self.keys]
        names += ["prev", "executed"] if self.warm else ["x"]
        return names + (["start_noise"] if self.warm and self.start else []) + (["step_noise"] if self.ddpm else [])

    def forward(self, *args):
        obs = dict(zip(self.keys, args[: len(self.keys)]))
        rest = list(args[len(self.keys):])
        x = shift_rows(rest.pop(0), rest.pop(0)) if self.warm else rest.pop(0)
        start = (rest.pop(0),) if self.warm and self.start else None
        steps = (rest.pop(0),) if self.ddpm else None
        x, actions = self.policy.chunk_tensors(obs, x, self.plan, RunNoise(start, steps))
        stored = clip_discrete(x, self.clip, self.mask) if self.clip is not None else x
        return stored, actions


def check_exportable(policy) -> None:
    """ValueError naming what cannot be exported, before anything is written."""
    if not hasattr(policy, "chunk_tensors"):
        raise ValueError(f"{type(policy).__name__} is not exportable: only the transformer diffusion policy (DP-T) is")
    if policy.cache is not None:
        raise ValueError("a block cache is not exportable (its per-branch reuse is Python control flow between "
                         "network calls); export without --cache")
    if policy.deploy != "eager":
        raise ValueError(f"export from the eager policy, not the {policy.deploy!r} deploy path")


def _example(policy, module: _Chunk, batch: int) -> tuple:
    T, A = policy.cfg.horizon, policy.cfg.action_dim
    ex = []
    for k, shape in policy.expected_obs().items():
        ex.append(torch.zeros(batch, *shape, dtype=torch.uint8 if len(shape) == 4 else torch.float32))
    ex += [torch.zeros(batch, T, A), torch.zeros(batch, dtype=torch.long)] if module.warm else [torch.zeros(batch, T, A)]
    if module.warm and module.start:
        ex.append(torch.zeros(batch, T, A))
    if module.ddpm:
        ex.append(torch.zeros(len(module.plan), batch, T, A))
    return tuple(ex)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _quantize_int8(path: Path) -> None:
    """Replace the fp32 graph at ``path`` by its dynamically quantized int8 version."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as err:
        raise ImportError(f"int8 export needs ONNX Runtime's quantizer: {ORT_EXTRA}") from err
    fp32 = path.with_suffix(".fp32.onnx")
    path.rename(fp32)
    root = logging.getLogger()
    hush = _DropMessage("pre-processing before quantization")  # its advice for static quantization
    root.addFilter(hush)
    try:
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.removeFilter(hush)
    fp32.unlink()


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def export_onnx(policy, out: str | Path, precision: str = "fp32") -> dict:
    """Write ``out/`` (cold.onnx, warm.onnx with a warm start, their batch-1 graphs, deploy.json)
    atomically: into a temporary folder beside it, renamed at the end. Returns the manifest."""
    check_exportable(policy)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; export into a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    was_training = policy.training
    policy.eval()
    plans = {"cold": (policy.cold_plan(), False)}
    if policy.warm is not None:
        plans["warm"] = (policy.warm_plan(), True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    graphs = {}
    try:
        for (name, (plan, warm)), fixed in itertools.product(plans.items(), (False, True)):
            module = _Chunk(policy, plan, warm).eval()
            names = module.inputs()
            example = _example(policy, module, 1)
            axis = {n: 1 if n == "step_noise" else 0 for n in names}
            dyn = {} if fixed else {**{n: {axis[n]: "batch"} for n in names}, "stored": {0: "batch"},
                                    "actions": {0: "batch"}}
            name = f"{name}_b1" if fixed else name
            path = tmp / f"{name}.onnx"
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings: the plan is fixed per graph, on purpose
                torch.onnx.export(module, example, str(path), input_names=names, output_names=["stored", "actions"],
                                  dynamic_axes=dyn, opset_version=OPSET, dynamo=False)
            if precision == "int8":
                _quantize_int8(path)
            graphs[name] = {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path),
                            "network_calls": len(plan), "batch": 1 if fixed else None,
                            "inputs": {n: [None if i == axis[n] and not fixed else d for i, d in enumerate(e.shape)]
                                       for n, e in zip(names, example)}}
        cfg = policy.cfg
        manifest = {"format": FORMAT, "version": VERSION, "n_obs_steps": cfg.n_obs_steps, "horizon": cfg.horizon,
                    "n_action_steps": cfg.n_action_steps, "action_dim": cfg.action_dim,
                    "expected_obs": {k: list(v) for k, v in policy.expected_obs().items()},
                    "graphs": graphs, "source": policy.describe(), "torch": torch.__version__, "opset": OPSET,
                    "precision": precision}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        tmp.rename(out)
    except BaseException:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
        raise
    finally:
        policy.train(was_training)
    return manifest
