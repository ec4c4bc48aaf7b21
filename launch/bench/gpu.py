"""``dpctrl bench gpu``: the GPU path measured in one process and one run.

1. Chunks: per model (the shipped Lift policy and the 9M DP-T of ``bench_policy``) x batch
   x variant (DDIM-10, RTI, DDPM-100, BAC, RTI+BAC, the 1-call floor) x path (eager fp32,
   then CUDA graph at fp32, tf32 and bf16, then CUDA graph with the fused decoder kernels of
   policy/accel/fused.py at fp32 and tf32; no cached variant on those): p50/p99 wall-clock per chunk end to end (host
   observations in, host actions out), network calls, the speed-up of the graph against
   eager on the same GPU in the same run, and the action error of the path against eager
   fp32 on the same noise (mean and max |delta| in robot units over every chunk of the run;
   warm-started variants carry their error from chunk to chunk, as on a robot).
2. Loop: the fixed-rate control loop (``--rate``, default 500 Hz) with async inference,
   driving the mock arm (the interface of a physical arm, which is absent here) with the
   9M DP-T on the graph path (and on the fused graph path), once with RTI and once with
   DDIM-10, for ``--loop-cycles`` cycles each: deadline misses, period jitter, chunk latency.

Targets on an H100 (docs/acceleration.md): 9M DDIM-10 chunk <= 2 ms, 9M RTI chunk <= 1 ms, 500 Hz loop
with zero misses. ``targets`` in the report says which were met, with the numbers.
"""
from __future__ import annotations

import numpy as np
import torch

from dpctrl.policy.diffusion_policy import DiffusionPolicy
from dpctrl.launch.bench.cache import episode_windows
from dpctrl.launch.bench.timing import stats
from dpctrl.launch.bench.policy import VARIANTS, chunk_times, big_policy, calibrate_big, configure

# path -> set_deploy arguments (kind, precision, compile, fused)
PATHS = {"eager fp32": (None, "fp32", False, False), "graph fp32": ("cuda_graph", "fp32", False, False),
         "graph tf32": ("cuda_graph", "tf32", False, False), "graph bf16": ("cuda_graph", "bf16", False, False),
         "graph+fused fp32": ("cuda_graph", "fp32", False, True), "graph+fused tf32": ("cuda_graph", "tf32", False, True),
         "graph+compile fp32": ("cuda_graph", "fp32", True, False), "graph+compile bf16": ("cuda_graph", "bf16", True, False),
         "static fp32": ("static", "fp32", False, False),  # the graph path's buffers without capture: CPU tests only
         "static+fused fp32": ("static", "fp32", False, True)}
DEFAULT_PATHS = ("eager fp32", "graph fp32", "graph tf32", "graph bf16", "graph+fused fp32", "graph+fused tf32")
COMPILE_PATHS = ("graph+compile fp32", "graph+compile bf16")
GPU_VARIANTS = ("DDIM-10", "RTI", "DDPM-100", "BAC (DDPM-100)", "RTI+BAC", "floor: 1 call")


def bench_gpu(checkpoint_name: str, data_path, batches=(1, 8), models=("lift", "9M"), reps: int = 30,
              variants=GPU_VARIANTS, paths=DEFAULT_PATHS, rate_hz: float = 500.0, loop_cycles: int = 2500,
              loop_precision: str = "fp32", device: str = "cuda", progress: bool = True) -> dict:
    from tqdm import tqdm

    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("`dpctrl bench gpu` needs a CUDA device; torch sees none")
    lift = DiffusionPolicy.load(checkpoint_name).to(device).eval()
    rows, big = [], None
    for model in models:
        pol = lift if model == "lift" else big_policy(lift).to(device)
        big = pol if model != "lift" else big
        n_params = sum(p.numel() for p in pol.parameters())
        cal = None if model == "lift" else calibrate_big(pol, data_path)
        for B in batches:
            seqs = episode_windows(pol, data_path, B, max(2, reps // 4 + 1))
            for name in tqdm(variants, desc=f"{model} batch {B}", disable=not progress):
                ref = None
                for path in paths:
                    kind, precision, compiled, fused = PATHS[path]
                    if (compiled or fused) and VARIANTS[name][3]:
                        continue  # a compiled or fused network has no per-block cache hook
                    pol.set_deploy(None)
                    configure(pol, checkpoint_name, name, cal)
                    pol.set_deploy(kind, batch=B, precision=precision, compile=compiled, fused=fused)  # captures
                    pol.generator.manual_seed(0)  # every path sees the same noise
                    outs: list = []
                    ms = chunk_times(pol, seqs, reps, outs)
                    outs = np.stack(outs)
                    ref = outs if ref is None else ref
                    err = np.abs(outs - ref)
                    rows.append({"model": model, "params": n_params, "batch": B, "name": name, "path": path,
                                 "nfe": pol.nfe_last, "p50_ms": stats(ms)["p50_ms"],
                                 "p99_ms": stats(ms)["p99_ms"], "timed_chunks": len(ms),
                                 "err_mean": float(err.mean()), "err_max": float(err.max())})
        pol.set_deploy(None)
        pol.set_cache(None)
        pol.set_warm_start(None)
    for r in rows:
        eager = next(x["p50_ms"] for x in rows if (x["model"], x["batch"], x["name"], x["path"])
                     == (r["model"], r["batch"], r["name"], "eager fp32"))
        r["vs_eager"] = eager / r["p50_ms"]
    loop_fused = (False, True) if any(PATHS[p][3] for p in paths) else (False,)
    loops = [] if big is None or not loop_cycles else [
        gpu_loop(big, checkpoint_name, v, rate_hz, loop_cycles, loop_precision, _graph_kind(device), fused)
        for fused in loop_fused for v in ("RTI", "DDIM-10")]
    rep = {"checkpoint": str(checkpoint_name), "device": device, "gpu": _gpu_name(device), "torch": torch.__version__,
           "reps": reps, "rows": rows, "loops": loops}
    rep["targets"] = targets(rep)
    return rep


def _graph_kind(device: str) -> str:
    return "cuda_graph" if device == "cuda" else "static"


def gpu_loop(policy, checkpoint_name, variant: str, rate_hz: float, cycles: int, precision: str,
             kind: str = "cuda_graph", fused: bool = False) -> dict:
    """The control loop at ``rate_hz``, async inference, ``policy`` as ``variant`` on the
    graph path (``kind``; ``fused``: with the fused decoder kernels), driving the mock arm for
    ``cycles`` cycles."""
    from dpctrl.control.session import run_loop
    policy.set_deploy(None)
    configure(policy, checkpoint_name, variant, None)
    policy.set_deploy(kind, batch=1, precision=precision, fused=fused)
    shapes = {k: s[1:] for k, s in policy.expected_obs().items()}
    res = run_loop(policy, "mock", rate_hz, True, 1, 0, status=False, max_cycles=cycles, obs_shapes=shapes)
    policy.set_deploy(None)
    policy.set_warm_start(None)
    return {"variant": variant, "precision": precision, "path": kind + ("+fused" if fused else ""),
            "rate_hz": rate_hz, "nfe": policy.nfe_last,
            **{k: res[k] for k in ("cycles", "deadline_misses", "overruns", "period_jitter_ms", "chunk_latency_ms",
                                   "policy_errors", "stopped")}}


def targets(rep: dict) -> list[dict]:
    """The GPU latency targets against this report (9M model, batch 1, best graph path whose
    mean action error vs eager fp32 stays under 1e-2)."""
    def best(name):
        cands = [r for r in rep["rows"] if r["model"] == "9M" and r["batch"] == 1 and r["name"] == name
                 and r["path"] != "eager fp32" and r["err_mean"] < 1e-2]
        return min(cands, key=lambda r: r["p50_ms"]) if cands else None
    out = []
    for name, limit in (("DDIM-10", 2.0), ("RTI", 1.0)):
        r = best(name)
        out.append({"target": f"9M {name} chunk <= {limit:g} ms", "met": bool(r and r["p50_ms"] <= limit),
                    "measured": None if r is None else f"{r['p50_ms']:.2f} ms p50 ({r['path']})"})
    for lp in rep["loops"]:
        out.append({"target": f"{lp['rate_hz']:g} Hz loop, async, {lp['variant']} ({lp['path']}): zero misses",
                    "met": lp["deadline_misses"] == 0,
                    "measured": f"{lp['deadline_misses']} misses in {lp['cycles']} cycles"})
    return out


def _gpu_name(device: str) -> str:
    return torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else "none"


def markdown(rep: dict) -> str:
    from dpctrl.launch.results import markdown_table
    def vs_ddpm(r):  # DDPM-100 on the same model, batch and path, over this row
        d = [x["p50_ms"] for x in rep["rows"] if (x["model"], x["batch"], x["path"], x["name"])
             == (r["model"], r["batch"], r["path"], "DDPM-100")]
        return f"{d[0] / r['p50_ms']:.1f}x" if d else "-"
    chunks = markdown_table(
        ["model", "batch", "variant", "path", "calls", "p50 (ms)", "p99 (ms)", "vs eager", "vs DDPM-100 (same path)",
         "action err mean / max"],
        [[f"{r['model']} ({r['params'] / 1e6:.1f}M)", r["batch"], r["name"], r["path"], r["nfe"], f"{r['p50_ms']:.2f}",
          f"{r['p99_ms']:.2f}", f"{r['vs_eager']:.1f}x", vs_ddpm(r), f"{r['err_mean']:.1e} / {r['err_max']:.1e}"]
         for r in rep["rows"]])
    parts = [chunks]
    if rep["loops"]:
        parts.append(markdown_table(
            ["loop", "path", "precision", "calls/chunk", "cycles", "deadline misses", "overruns", "jitter p99 (ms)",
             "chunk latency p50 / p99 (ms)"],
            [[f"{lp['rate_hz']:g} Hz async, 9M {lp['variant']}", lp["path"], lp["precision"], lp["nfe"], lp["cycles"],
              lp["deadline_misses"], lp["overruns"], f"{lp['period_jitter_ms']['p99']:.3f}",
              f"{lp['chunk_latency_ms']['p50']:.2f} / {lp['chunk_latency_ms']['p99']:.2f}"] for lp in rep["loops"]]))
    parts.append(markdown_table(["target", "met", "measured"],
                                [[t["target"], "yes" if t["met"] else "**no**", t["measured"]] for t in rep["targets"]]))
    return "\n\n".join(parts)
