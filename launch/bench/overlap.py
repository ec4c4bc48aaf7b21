"""``dpctrl bench overlap``: what each overlap mode costs per chunk against the plain sampler, and
how far it moves the chunk, batch 1, calls interleaved in one process (launch/bench/timing.py).

Per base sampler (DDIM-10, RTI) and mode: p50/p99 ms, the ratio to the plain chunk, network
calls (``rtc`` adds a backward pass per call; ``bid`` makes its calls on 8 candidates at
once), and the largest change the mode makes to the executed actions (the 8 after the 2
frozen ones) on the same noise, toward committed actions set 0.3 (robot units) away from the
free chunk. ``prefix`` runs ``--prefix-checkpoint``
(its plain row is that checkpoint's own).
"""
from __future__ import annotations

import numpy as np

MODES = ("rtc", "bid", "inpaint")
DELAY = 2  # committed actions that run before the new chunk arrives


def _policy(checkpoint: str, base: str):
    from dpctrl.policy.accel.warmstart import rti_for
    from dpctrl.policy.registry import load_policy
    policy = load_policy(checkpoint)
    if base == "RTI":
        policy.set_warm_start(rti_for(checkpoint, policy))
    return policy


def _committed(policy, free: np.ndarray, mode: str):
    from dpctrl.policy.chunking import Prefix
    s = policy.n_obs_steps - 1
    return Prefix(np.clip(free[s:s + 8] + 0.3, -1, 1), DELAY, 8, mode)


def moved(policy, obs, mode: str) -> float:
    """Max change the mode makes to the executed actions (after the DELAY frozen ones, 8 of them)
    on the same noise (the same draws for the first chunk)."""
    policy.generator.manual_seed(7)
    policy.reset()
    free = policy.predict_chunk(obs)
    policy.generator.manual_seed(7)
    policy.reset()
    run = slice(policy.n_obs_steps - 1 + DELAY, policy.n_obs_steps - 1 + DELAY + 8)
    return float(np.abs(policy.predict_chunk(obs, _committed(policy, free, mode))[run] - free[run]).max())


def bench_overlap(checkpoint: str, rounds: int, prefix_checkpoint: str | None = None) -> list[dict]:
    from dpctrl.envs.evaluate import check_overlap
    from dpctrl.launch.bench.timing import interleaved, stats, timed
    if prefix_checkpoint:  # before anything is timed
        check_overlap(_policy(prefix_checkpoint, "DDIM-10"), "prefix", DELAY)
    rng = np.random.default_rng(0)
    rows = []
    runs = [(checkpoint, MODES)] + ([(prefix_checkpoint, ("prefix",))] if prefix_checkpoint else [])
    for ckpt, modes in runs:
        for base in ("DDIM-10", "RTI"):
            policy = _policy(ckpt, base)
            obs = {k: rng.normal(0, 0.3, shape).astype(np.float32) for k, shape in policy.expected_obs().items()}
            first = policy.predict_chunk(obs)
            prefixes = {m: _committed(policy, first, m) for m in modes}
            calls = {}

            def step(label, r):
                policy.note_executed(8)  # a warm start shifts as in the loop
                _, ms = timed(policy.predict_chunk, obs, prefixes.get(label))
                calls[label] = policy.nfe_last
                return ms if r else None  # the first round warms up
            ms = interleaved(("plain",) + modes, rounds, step)
            plain = stats(ms["plain"])
            for label in ("plain",) + modes:
                st = stats(ms[label])
                rows.append({"checkpoint": ckpt, "base": base, "mode": label, **st,
                             "ratio": st["p50_ms"] / plain["p50_ms"], "network_calls": calls[label],
                             "moved": 0.0 if label == "plain" else moved(policy, obs, label)})
    return rows


def markdown(rows: list[dict]) -> str:
    from dpctrl.launch.results import markdown_table
    return markdown_table(
        ["checkpoint", "base", "mode", "p50 (ms)", "p99 (ms)", "x plain", "network calls", "max action change"],
        [[r["checkpoint"], r["base"], r["mode"], f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['ratio']:.2f}",
          r["network_calls"] if r["mode"] != "rtc" else f"{r['network_calls']} + {r['network_calls']} backward",
          f"{r['moved']:.4f}"] for r in rows])
