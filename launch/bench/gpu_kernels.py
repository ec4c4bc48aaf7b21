"""CUDA kernels per network call of the 9M DP-T at batch 1 (eager, fp32), by name: what a
CUDA graph replays per denoising step. Two ways of calling the network:
- ``whole``: ``net(x, t, cond)``, the encoder and every cross-attention key/value projection
  included (as training calls it);
- ``decode``: a run's step after ``run_memory`` (the sampler's path): the memory, which
  depends on the timestep and observation only, computed once for all the run's steps.
``python3 launch/bench/gpu_kernels.py [--compile MODE ...]`` on a GPU machine (the checkpoint's sizes;
random weights); ``--compile`` also profiles ``decode`` through ``torch.compile`` in each
inductor MODE (``default``, ``max-autotune-no-cudagraphs``, ...), in fp32 and bf16 autocast:
how many kernels fusion leaves per step; ``--fused`` profiles the Triton decoder of
policy/accel/fused.py (float32 and tf32 products) and checks it against eager ``decode``;
``--chunk`` profiles whole ``predict_batch`` chunks on the fused tf32 CUDA-graph path (DDIM-10,
RTI, one call): wall time, host-side API calls and the device work outside the graph."""
from __future__ import annotations

import argparse
import time
from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

from dpctrl.policy.diffusion_policy import DiffusionPolicy
from dpctrl.launch.bench.policy import big_policy


def kernels(fn) -> list:
    with torch.no_grad():
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
    return [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def report(name: str, fn) -> None:
    ks = kernels(fn)
    busy = sum(getattr(e, "device_time", 0.0) for e in ks)
    print(f"{name}: {len(ks)} kernels per network call, {busy:.0f} us of kernel time")
    count, time_us = Counter(e.name[:90] for e in ks), Counter()
    for e in ks:
        time_us[e.name[:90]] += getattr(e, "device_time", 0.0)
    for kname, us in time_us.most_common(8):
        print(f"{count[kname]:4d} {us:6.0f} us  {kname}")


def chunk_profile(pol, variant: str, chunks: int = 20) -> None:
    """Where a chunk's wall time goes: CPU-side calls (Python ops, launches, copies) and the
    device's kernels, of ``chunks`` chunks after a warm-up."""
    import numpy as np

    from dpctrl.launch.bench.policy import configure
    pol.set_deploy(None)
    configure(pol, "lift", variant, None)
    pol.set_deploy("cuda_graph", batch=1, precision="tf32", fused=True)
    rng = np.random.default_rng(0)
    obs = {k: rng.uniform(-0.5, 0.5, (1, *shape)).astype(np.float32) for k, shape in pol.expected_obs().items()}
    pol.reset()
    for _ in range(5):
        pol.predict_batch(obs)
        pol.note_executed(pol.n_action_steps)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(chunks):
            pol.predict_batch(obs)
            pol.note_executed(pol.n_action_steps)
        wall = (time.perf_counter() - t0) * 1e3 / chunks
    pol.set_deploy(None)
    events = prof.events()
    gpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(getattr(e, "device_time", 0.0) for e in gpu) / chunks
    print(f"chunk {variant} (graph+fused tf32): {wall:.3f} ms wall per chunk (profiled), {len(gpu) / chunks:.0f} "
          f"device kernels/copies per chunk, {busy:.0f} us of device time")
    api = Counter(e.name for e in events if e.name.startswith("cuda"))
    print("  CUDA API calls per chunk: " + ", ".join(f"{k} {v / chunks:.1f}" for k, v in api.most_common(8)))
    ops = Counter()
    for e in events:
        if e.device_type == torch.autograd.DeviceType.CPU and e.name.startswith("aten::"):
            ops[e.name] += 1
    print("  aten ops per chunk (host side, outside the graph): "
          + ", ".join(f"{k[6:]} {v / chunks:.1f}" for k, v in ops.most_common(14)))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=48))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compile", nargs="*", default=[], metavar="MODE")
    ap.add_argument("--fused", action="store_true", help="also the fused Triton decoder")
    ap.add_argument("--chunk", action="store_true", help="profile whole chunks on the fused tf32 graph path")
    args = ap.parse_args()
    pol = big_policy(DiffusionPolicy.load("lift").eval()).cuda()
    net = pol.net
    x = torch.randn(1, pol.horizon, pol.cfg.action_dim, device="cuda")
    cond = torch.randn(1, pol.n_obs_steps, pol.cond_dim, device="cuda")
    t = torch.tensor(50.0, device="cuda")
    with torch.no_grad():
        memory = net.run_memory([90.0, 50.0, 10.0], cond)
    report("whole", lambda: net(x, t, cond))
    report("decode", lambda: net.decode(x, memory[1]))
    if args.fused:
        from dpctrl.policy.accel.fused import FusedDecoder
        for precision in ("ieee", "tf32"):
            fused = FusedDecoder(net, precision)
            with torch.no_grad():
                err = (fused.decode(x, memory[1]) - net.decode(x, memory[1])).abs().max().item()
            print(f"(fused {precision}: max |fused - eager| = {err:.2e} on one decode output)")
            report(f"decode fused {precision}", lambda: fused.decode(x, memory[1]))
        for lb in (16, 32, 64):  # block sizes: output columns per program (defaults: linear 16/32, attention 64)
            for ab in (16, 32, 64):
                fused = FusedDecoder(net, "tf32", linear_block=lb, attend_block=ab)
                ks = kernels(lambda: fused.decode(x, memory[1]))
                busy = sum(getattr(e, "device_time", 0.0) for e in ks)
                print(f"decode fused tf32, linear block {lb}, attention block {ab}: {busy:.0f} us of kernel time")
    if args.chunk:
        for variant in ("DDIM-10", "RTI", "floor: 1 call"):
            chunk_profile(pol, variant)
    for mode in args.compile:
        for precision in ("fp32", "bf16"):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                kv = net.run_memory([90.0, 50.0, 10.0], cond)[1] if precision == "bf16" else memory[1]
                compiled = torch.compile(net.decode, mode=mode, fullgraph=True, dynamic=False)
                t0 = time.perf_counter()
                with torch.no_grad():
                    compiled(x, kv)
                print(f"(compiled {mode} {precision} in {time.perf_counter() - t0:.0f} s)")
                report(f"decode compiled {mode} {precision}", lambda: compiled(x, kv))


if __name__ == "__main__":
    main()
