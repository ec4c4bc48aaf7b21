"""Checkpoint formats -> model classes: one way to load any checkpoint.

    model = registry.load("lift")          # the class its config.json's format names
    policy = registry.load_policy("lift")  # the same, refusing anything that is not a chunk policy
    policy = registry.load_policy("runs/export/lift-rti")  # an exported directory: ONNX Runtime

The model classes import torch; they are imported on the first checkpoint load, so that loading
an exported directory (policy/onnx_policy.py) imports neither torch nor the network code.
"""
from __future__ import annotations

import os

from dpctrl.policy import checkpoint
from dpctrl.policy.onnx_policy import OnnxPolicy, is_export

CHUNK_POLICIES = ("dpctrl-policy", "dpctrl-pad")  # DiffusionPolicy.FORMAT, PadPolicy.FORMAT


def models() -> dict[str, type]:
    """format name (config.json's ``format``) -> model class."""
    from dpctrl.policy.diffusion_policy import DiffusionPolicy
    from dpctrl.policy.drive import DrivePlanner
    from dpctrl.policy.pad import PadPolicy
    from dpctrl.policy.planner import TrajectoryPlanner
    return {cls.FORMAT: cls for cls in (DiffusionPolicy, PadPolicy, DrivePlanner, TrajectoryPlanner)}


def load(name_or_dir: str | os.PathLike, seed: int = 0, formats: tuple[str, ...] | None = None):
    """The model of a checkpoint directory or name, in eval mode; ``seed`` seeds its noise.
    ``formats``: the formats accepted (default any registered one)."""
    path = checkpoint.resolve(name_or_dir)
    fmt = checkpoint.read_format(path)
    classes = models()
    accepted = formats or tuple(classes)
    if fmt not in accepted:
        if fmt is None:  # unreadable: the first accepted class's reader says exactly what is wrong
            return classes[accepted[0]].load(path, seed=seed)
        raise checkpoint.CheckpointError(f"{path}: format {fmt!r} is not one of {list(accepted)}")
    return classes[fmt].load(path, seed=seed)


def load_policy(name_or_dir: str | os.PathLike, seed: int = 0, threads: int = 1):
    """A chunk policy (the transformer diffusion policy, or PAD) from a checkpoint, in eval mode;
    from an exported directory (``dpctrl export``), its ONNX Runtime policy with ``threads``
    intra-op threads (the eager policies use torch's global thread count)."""
    if is_export(name_or_dir):
        return OnnxPolicy(name_or_dir, threads=threads, seed=seed)
    return load(name_or_dir, seed=seed, formats=CHUNK_POLICIES)


def load_method(cls: type, name_or_dir: str | os.PathLike, method: str, seed: int = 0):
    """A planner checkpoint of class ``cls`` (TrajectoryPlanner, DrivePlanner) that must hold a
    ``method`` planner; ValueError naming what it holds otherwise."""
    model = cls.load(name_or_dir, seed=seed)
    if model.cfg.method != method:
        raise ValueError(f"{name_or_dir} holds a {model.cfg.method!r} planner, not {method!r}")
    return model
