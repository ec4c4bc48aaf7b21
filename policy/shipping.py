"""``dpctrl ship``: a run's checkpoint copied under a name into ``$DPCTRL_HOME/checkpoints``
(or a directory of the user's), never into an installed package (``checkpoint.ship_target``).

- ``ship_policy``: a DP-T checkpoint, fp16 weights by default, its recipe.json extended by the
  fp16-vs-fp32 action difference on observation windows;
- ``ship_copy``: any checkpoint copied as it is (PAD), with the command that trained it and the
  reports measured on it in recipe.json.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from dpctrl.policy import checkpoint, registry
from dpctrl.policy.diffusion_policy import DiffusionPolicy

REPORT_KEYS = ("command", "env", "episodes", "success_rate", "task", "frames", "psnr_pred_db", "psnr_copy_last_db",
               "gain_db")


def ship_policy(src: str | Path, name: str, windows: list[dict], fp16: bool = True,
                discrete_dims: list[int] | None = None, to: str | Path | None = None) -> dict:
    """Write ``src`` as checkpoint ``name``; ``windows``: observation windows ``{key: (To, ...)}``
    on which the shipped weights' actions are compared with the float32 ones (same noise)."""
    src = Path(src)
    recipe = json.loads((src / "recipe.json").read_text())
    dest = checkpoint.ship_target(name, to)
    full = DiffusionPolicy.load(src)
    if discrete_dims is not None:  # for runs trained before the config carried them
        full.cfg.discrete_action_dims = list(discrete_dims)
    full.save(dest, dtype=torch.float16 if fp16 else torch.float32)
    half = DiffusionPolicy.load(dest)
    obs = {k: np.stack([w[k] for w in windows]) for k in windows[0]}
    full.generator.manual_seed(0)
    half.generator.manual_seed(0)
    diff = float(np.abs(full.predict_batch(obs) - half.predict_batch(obs)).max())
    recipe["shipped"] = {"dtype": "float16" if fp16 else "float32", "max_abs_action_diff_vs_fp32": diff,
                         "windows_checked": len(windows), "size_bytes": (dest / checkpoint.WEIGHTS).stat().st_size}
    (dest / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    return {**recipe["shipped"], "path": str(dest)}


def ship_copy(src: str | Path, name: str, command: str, reports: list[str], to: str | Path | None = None) -> Path:
    """Copy checkpoint ``src`` (refused unless it loads) as ``name`` with ``command`` (what
    trained it) and the eval / frame ``reports`` measured on it (their commands included) in
    recipe.json; written beside the target and renamed into place."""
    src, dest = Path(src), checkpoint.ship_target(name, to)
    registry.load(src)  # refuse anything that is not a loadable checkpoint
    measured = []
    for f in reports:
        r = json.loads(Path(f).read_text())
        if r.get("checkpoint") and Path(r["checkpoint"]).resolve() != src.resolve():
            raise ValueError(f"{f} measured {r['checkpoint']}, not {src}")
        measured.append({k: r[k] for k in REPORT_KEYS if k in r}
                        | ({"chunk_latency_p50_ms": r["chunk_latency_ms"]["p50"]} if "chunk_latency_ms" in r else {}))
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    cfg = json.loads((tmp / checkpoint.CONFIG).read_text())
    cfg["command"] = command
    (tmp / checkpoint.CONFIG).write_text(json.dumps(cfg, indent=1) + "\n")
    (tmp / "recipe.json").write_text(json.dumps({"command": command, "measured": measured}, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    return dest
