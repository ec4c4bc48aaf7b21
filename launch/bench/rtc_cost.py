"""What real-time-chunking guidance costs per chunk: the shipped policy's chunk with and without
``--overlap rtc`` guidance (one backward pass through the network per denoising step), batch 1,
calls interleaved in one process (launch/bench/timing.py). Not a command:

    python -m dpctrl.launch.bench.rtc_cost --checkpoint lift --rounds 40 --threads 1

prints one line per base sampler: p50 ms without and with guidance and the ratio, and how far
the guidance moved the chunk (max action change, robot units, same noise) toward committed
actions set 0.3 away from the free chunk.
"""
from __future__ import annotations

import argparse

import numpy as np


def main(argv: list[str] | None = None) -> int:
    import torch

    from dpctrl.launch.bench.timing import interleaved, stats, timed
    from dpctrl.policy.accel.warmstart import rti_for
    from dpctrl.policy.chunking import Prefix
    from dpctrl.policy.registry import load_policy
    ap = argparse.ArgumentParser(prog="python -m dpctrl.launch.bench.rtc_cost", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="lift")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    for base in ("ddim-10", "rti"):
        policy = load_policy(args.checkpoint)
        if base == "rti":
            policy.set_warm_start(rti_for(args.checkpoint, policy))
        obs = {k: rng.normal(0, 0.3, shape).astype(np.float32) for k, shape in policy.expected_obs().items()}
        first = policy.predict_chunk(obs)
        usable = policy.horizon - policy.n_obs_steps + 1
        prefix = Prefix(first[policy.n_obs_steps - 1 + 8: policy.n_obs_steps - 1 + usable], 2, 8, "rtc")

        def step(label, r):
            policy.note_executed(8)
            _, ms = timed(policy.predict_chunk, obs, prefix if label == "rtc" else None)
            return ms if r else None  # the first round warms up
        ms = interleaved(["plain", "rtc"], args.rounds, step)
        plain, rtc = stats(ms["plain"]), stats(ms["rtc"])
        calls = policy.nfe_last  # of a timed (warm, for RTI) chunk
        moved = pull(policy, obs, usable)
        print(f"{args.checkpoint} {base}: {calls} network calls; plain p50 {plain['p50_ms']:.1f} ms, with rtc "
              f"guidance p50 {rtc['p50_ms']:.1f} ms ({rtc['p50_ms'] / plain['p50_ms']:.2f}x) over {rtc['n']} chunks, "
              f"{args.threads} thread(s); guidance moved the chunk by at most {moved:.4f} toward committed "
              "actions 0.3 away")
    return 0


def pull(policy, obs, usable: int) -> float:
    """Max action change that rtc guidance makes on the same noise, toward committed actions
    0.3 (robot units) away from the free chunk's prefix."""
    import numpy as np

    from dpctrl.policy.chunking import Prefix
    s = policy.n_obs_steps - 1
    policy.generator.manual_seed(7)
    policy.reset()
    free = policy.predict_chunk(obs)
    target = np.clip(free[s:s + 8] + 0.3, -1, 1)
    policy.generator.manual_seed(7)
    policy.reset()
    guided = policy.predict_chunk(obs, Prefix(target, 3, 8, "rtc"))
    return float(np.abs(guided - free).max())


if __name__ == "__main__":
    raise SystemExit(main())
