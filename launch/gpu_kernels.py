"""CUDA kernels launched by one network call of the 9M DP-T at batch 1 (eager, fp32), by name:
what a CUDA graph replays per denoising step. ``python3 launch/gpu_kernels.py`` on a GPU machine
(the checkpoint's sizes; random weights)."""
from __future__ import annotations

from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

from launch.bench_policy import big_policy
from policy import checkpoint


def main() -> None:
    pol = big_policy(checkpoint.load("lift").eval()).cuda()
    x = torch.randn(1, pol.horizon, pol.cfg.action_dim, device="cuda")
    cond = torch.randn(1, pol.n_obs_steps, pol.cond_dim, device="cuda")
    t = torch.tensor(50.0, device="cuda")
    with torch.no_grad():
        for _ in range(3):
            pol.net(x, t, cond)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            pol.net(x, t, cond)
            torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(getattr(e, "device_time", 0.0) for e in kernels)
    print(f"{len(kernels)} kernels per network call, {busy:.0f} us of kernel time")
    for name, n in Counter(e.name[:90] for e in kernels).most_common(15):
        print(f"{n:4d}  {name}")


if __name__ == "__main__":
    main()
