"""CUDA kernels per network call of the 9M DP-T at batch 1 (eager, fp32), by name: what a
CUDA graph replays per denoising step. Two ways of calling the network:
- ``whole``: ``net(x, t, cond)``, the encoder and every cross-attention key/value projection
  included (as training calls it);
- ``decode``: a run's step after ``run_memory`` (the sampler's path): the memory, which
  depends on the timestep and observation only, computed once for all the run's steps.
``python3 launch/gpu_kernels.py`` on a GPU machine (the checkpoint's sizes; random weights)."""
from __future__ import annotations

from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

from launch.bench_policy import big_policy
from policy import checkpoint


def kernels(fn) -> list:
    with torch.no_grad():
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
    return [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def main() -> None:
    pol = big_policy(checkpoint.load("lift").eval()).cuda()
    net = pol.net
    x = torch.randn(1, pol.horizon, pol.cfg.action_dim, device="cuda")
    cond = torch.randn(1, pol.n_obs_steps, pol.cond_dim, device="cuda")
    t = torch.tensor(50.0, device="cuda")
    with torch.no_grad():
        memory = net.run_memory([90.0, 50.0, 10.0], cond)
    for name, fn in (("whole", lambda: net(x, t, cond)), ("decode", lambda: net.decode(x, memory[1]))):
        ks = kernels(fn)
        busy = sum(getattr(e, "device_time", 0.0) for e in ks)
        print(f"{name}: {len(ks)} kernels per network call, {busy:.0f} us of kernel time")
        for kname, n in Counter(e.name[:90] for e in ks).most_common(8):
            print(f"{n:4d}  {kname}")


if __name__ == "__main__":
    main()
