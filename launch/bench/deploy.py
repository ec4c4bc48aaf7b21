"""``dpctrl bench deploy``: every CPU deploy path of one checkpoint at batch 1, per base sampler,
in one run: eager, the TorchScript-frozen denoiser (policy/accel/deploy.py), and the chunk
exported to ONNX (policy/accel/onnx_export.py) run by ONNX Runtime in fp32 and dynamic int8
(policy/onnx_policy.py).

Each path is its own policy object (its own warm-start memory) predicting the same demo-episode
windows through its public ``predict_batch``, the paths called in turn, the order reversed
every other call, so that machine load hits them alike; the episode's first (cold) chunk is
not timed. Reported: p50/p99 chunk latency, the speed-up of each path's p50 over eager's, and
the largest and the mean action difference from eager (robot units) on the same inputs and noise:
TorchScript draws the same torch noise; an ONNX graph is fed exactly what the eager chunk
function gets (observations, start noise, the eager chain's stored chunk), chunk by chunk.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from dpctrl.launch.bench.cache import BASES, episode_windows
from dpctrl.launch.bench.timing import stats, timed
from dpctrl.policy.accel.onnx_export import export_onnx
from dpctrl.policy.accel.warmstart import rti_for, shift_chunk
from dpctrl.policy.denoise import RunNoise
from dpctrl.policy.diffusion_policy import DiffusionPolicy
from dpctrl.policy.onnx_policy import OnnxPolicy

PATHS = ("eager", "torchscript", "onnxruntime fp32", "onnxruntime int8")


def _configured(checkpoint_name: str, sampler: str, steps: int, warm: bool) -> DiffusionPolicy:
    pol = DiffusionPolicy.load(checkpoint_name)
    pol.set_sampler(sampler, steps)
    pol.set_warm_start(rti_for(checkpoint_name, pol) if warm else None)
    return pol


def onnx_action_diff(eager: DiffusionPolicy, runtime: OnnxPolicy, batches: list[dict], episodes: int,
                     seed: int = 0) -> np.ndarray:
    """|ONNX - eager| of every action of every chunk of ``episodes`` episodes, each graph fed the
    eager chunk function's own inputs (same noise, the eager chain's stored chunk)."""
    rng = np.random.default_rng(seed)
    T, A, Ta = eager.cfg.horizon, eager.cfg.action_dim, eager.n_action_steps
    diffs = []
    for e in range(episodes):
        stored = None
        for batch in batches:
            obs = {k: np.asarray(v[e:e + 1], dtype=np.uint8 if v.dtype == np.uint8 else np.float32)
                   for k, v in batch.items()}
            name = "cold" if stored is None or "warm" not in runtime.sessions else "warm"
            graph = runtime.manifest["graphs"][name]
            feed = {k.replace(".", "_"): v for k, v in obs.items()}
            if name == "cold":
                feed["x"] = rng.standard_normal((1, T, A), dtype=np.float32)
                x, plan = torch.as_tensor(feed["x"]), eager.cold_plan()
            else:
                feed["prev"], feed["executed"] = stored, np.array([Ta], dtype=np.int64)
                x, plan = shift_chunk(torch.as_tensor(stored), Ta), eager.warm_plan()
            start = None
            if "start_noise" in graph["inputs"]:
                feed["start_noise"] = rng.standard_normal((1, T, A), dtype=np.float32)
                start = (torch.as_tensor(feed["start_noise"]),)
            steps = None
            if "step_noise" in graph["inputs"]:
                feed["step_noise"] = rng.standard_normal((graph["network_calls"], 1, T, A), dtype=np.float32)
                steps = (torch.as_tensor(feed["step_noise"]),)
            with torch.no_grad():
                ref_x, ref_a = eager.chunk_tensors({k: torch.as_tensor(v) for k, v in obs.items()}, x, plan,
                                                   RunNoise(start, steps))
            for graph_name in (name, f"{name}_b1"):  # the any-batch graph and the batch-1 one
                if graph_name in runtime.sessions:
                    _, got = runtime.sessions[graph_name].run(["stored", "actions"], feed)
                    diffs.append(np.abs(got - ref_a.numpy()))
            stored = ref_x.numpy()  # the eager chain continues: each graph is checked on eager's inputs
    return np.concatenate(diffs)


def bench_deploy(checkpoint_name: str, data_path, chunks: int = 12, episodes: int = 4,
                 bases: tuple[str, ...] = ("DDIM-10", "RTI")) -> dict:
    threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory(prefix="dpctrl-bench-deploy-") as tmp:
        for base in bases:
            sampler, steps, warm = BASES[base]
            pols = {"eager": _configured(checkpoint_name, sampler, steps, warm),
                    "torchscript": _configured(checkpoint_name, sampler, steps, warm)}
            pols["torchscript"].set_deploy("torchscript")
            for precision in ("fp32", "int8"):
                out = Path(tmp) / f"{base}-{precision}"
                export_onnx(pols["eager"], out, precision=precision)
                pols[f"onnxruntime {precision}"] = OnnxPolicy(out, threads=threads)
            batches = episode_windows(pols["eager"], data_path, episodes, chunks)
            times = {k: [] for k in pols}
            script_diff = []
            for e in range(episodes):
                for kind, pol in pols.items():
                    if isinstance(pol, OnnxPolicy):
                        pol.reset(seeds=[e])
                    else:
                        pol.reset()
                        pol.generator.manual_seed(e)
                for c, batch in enumerate(batches):
                    w = {k: v[e:e + 1] for k, v in batch.items()}
                    order = list(pols) if (e + c) % 2 else list(pols)[::-1]
                    out = {}
                    for kind in order:
                        out[kind], ms = timed(pols[kind].predict_batch, w)
                        if c:  # the episode's first (cold) chunk is not timed
                            times[kind].append(ms)
                        pols[kind].note_executed(pols[kind].n_action_steps)
                    script_diff.append(np.abs(out["eager"] - out["torchscript"]))
            diffs = {"eager": np.zeros(1), "torchscript": np.concatenate(script_diff)}
            for kind in PATHS[2:]:
                diffs[kind] = onnx_action_diff(pols["eager"], pols[kind], batches, episodes)
            st = {k: stats(v) for k, v in times.items()}
            pol = pols["eager"]
            label = base if not warm else f"RTI (DDIM, K'={pol.warm.cfg.start_t}, {pol.warm.cfg.tail} tail)"
            for kind in PATHS:
                rows.append({"base": label, "path": kind, "nfe": pol.nfe_last, "p50_ms": st[kind]["p50_ms"],
                             "p99_ms": st[kind]["p99_ms"], "speedup": st["eager"]["p50_ms"] / st[kind]["p50_ms"],
                             "max_abs_action_diff": float(diffs[kind].max()),
                             "mean_abs_action_diff": float(diffs[kind].mean()), "timed_chunks": st[kind]["n"]})
    return {"checkpoint": str(checkpoint_name), "threads": threads, "rows": rows}


def markdown(report: dict) -> str:
    from dpctrl.launch.results import markdown_table
    return markdown_table(
        ["base", "path", "network calls", "p50 (ms)", "p99 (ms)", "speed-up vs eager (p50)", "max action diff",
         "mean action diff"],
        [[r["base"], r["path"], r["nfe"], f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['speedup']:.2f}x",
          f"{r['max_abs_action_diff']:.1e}", f"{r['mean_abs_action_diff']:.1e}"] for r in report["rows"]])
