"""``dpctrl bench peer``: our transformer diffusion policy next to LeRobot's diffusion policy
on the same observation/action sizes, same machine, same run.

Ours (this process): the shipped Lift policy (1.2M) and the 9M DP-T of ``bench_policy``,
DDPM-100, DDIM-10 and RTI, per-chunk wall-clock of ``predict_batch`` (robot-unit
observations in, robot-unit actions out) over demo windows in episode order, timed once
before and once after the LeRobot side (p50 over both passes; each pass's p50 is kept).
LeRobot (its side venv, ``launch/bench/peer_lerobot_side.py``): ``DiffusionPolicy`` with Lift's
sizes (state 9 = eef pos + quat + gripper, environment state 10 = object; action 7; 2
observation steps, horizon 16, 8 executed) at its default U-Net (down_dims 512-1024-2048,
~249M parameters) and at two sizes near ours (~9.6M and ~1.2M), DDPM-100 and DDIM-10,
per-chunk wall-clock of ``generate_actions`` (normalized in and out). Both sides get the
same torch thread count; LeRobot's weights are random (latency does not depend on them).
"""
from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import torch

from dpctrl.policy.diffusion_policy import DiffusionPolicy
from dpctrl.launch.bench.cache import episode_windows
from dpctrl.launch.bench.timing import stats
from dpctrl.launch.bench.policy import chunk_times, big_policy, configure

SIDE = Path(__file__).with_name("peer_lerobot_side.py")
LEROBOT_SIZES = {"default": [512, 1024, 2048], "~9M": [96, 192, 384], "~1.2M": [32, 64, 128]}
OURS = ("DDPM-100", "DDIM-10", "RTI")


def bench_peer(checkpoint_name: str, data_path, python: Path, reps: int = 5, threads: int = 2,
               lerobot_sizes: dict | None = None) -> dict:
    torch.set_num_threads(threads)
    lift = DiffusionPolicy.load(checkpoint_name).eval()
    cfg = lift.cfg
    state = sum(d for k, d in cfg.obs_dims.items() if k.startswith("robot0_"))
    env = sum(cfg.obs_dims.values()) - state
    if cfg.image_keys or not state or not env:
        raise ValueError("the peer benchmark maps a low-dim policy's robot0_* keys to LeRobot's state and the "
                         "rest to its environment state; this checkpoint does not split that way")
    models = (("lift", lift), ("9M", big_policy(lift)))
    ours = {}  # (model, variant) -> chunk times from both passes

    def time_ours() -> None:
        for model, pol in models:
            seqs = episode_windows(pol, data_path, 1, max(2, reps // 2 + 1))
            for name in OURS:
                configure(pol, checkpoint_name, name, None)
                ours.setdefault((model, name), []).append(chunk_times(pol, seqs, reps))
                ours[(model, name, "nfe")] = pol.nfe_last
            pol.set_warm_start(None)

    time_ours()  # ours before and after the LeRobot side: the machine's drift shows in both halves
    spec = {"state_dim": state, "env_dim": env, "action_dim": cfg.action_dim, "n_obs_steps": cfg.n_obs_steps,
            "horizon": cfg.horizon, "n_action_steps": cfg.n_action_steps,
            "sizes": lerobot_sizes or LEROBOT_SIZES, "samplers": [["DDPM", 100], ["DDIM", 10]],
            "batch": 1, "reps": reps, "threads": threads}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.json"
        path.write_text(json.dumps(spec))
        res = subprocess.run([str(python), str(SIDE), str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"the lerobot side failed:\n{res.stderr[-3000:]}")
    side = json.loads(res.stdout.strip().splitlines()[-1])
    time_ours()
    rows = []
    for model, pol in models:
        for name in OURS:
            before, after = ours[(model, name)]
            ms = before + after
            rows.append({"impl": "dpctrl", "arch": f"DP-T {pol.cfg.n_layer}x{pol.cfg.n_emb}", "size": model,
                         "params": sum(p.numel() for p in pol.parameters()), "sampler": name,
                         "nfe": ours[(model, name, "nfe")], "batch": 1, "p50_ms": stats(ms)["p50_ms"],
                         "p99_ms": stats(ms)["p99_ms"], "timed_chunks": len(ms),
                         "p50_before_ms": stats(before)["p50_ms"], "p50_after_ms": stats(after)["p50_ms"]})
    rows += side["rows"]
    return {"checkpoint": str(checkpoint_name), "threads": threads, "reps": reps, "lerobot": side["lerobot"],
            "lerobot_torch": side["torch"], "torch": torch.__version__, "spec": spec, "rows": rows}


def markdown(rep: dict) -> str:
    from dpctrl.launch.results import markdown_table

    def ours(sampler, size):
        return next((r["p50_ms"] for r in rep["rows"] if r["impl"] == "dpctrl" and r["size"] == size
                     and r["sampler"] == sampler), None)
    out = []
    for r in rep["rows"]:
        # the same sampler on our model of the nearest size
        near = "9M" if r["params"] > 4e6 else "lift"
        base = ours(r["sampler"], near)
        out.append([r["impl"], r["arch"], f"{r['params'] / 1e6:.1f}M", r["sampler"], r["nfe"], f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}", f"{r['p50_before_ms']:.1f} / {r['p50_after_ms']:.1f}"
                    if r["impl"] == "dpctrl" else "-" if base is None else f"{r['p50_ms'] / base:.2f}x ours {near}"])
    return markdown_table(["implementation", "network", "params", "sampler", "calls", "p50 (ms)", "p99 (ms)",
                           "vs ours (same sampler); ours: p50 before / after LeRobot's"], out)
