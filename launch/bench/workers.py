"""``dpctrl bench workers``: evaluation throughput with 1, 2, ... Ray workers against one process,
in the same run, start-up included (envs/distributed.py).

Each row is a fresh start: ``1`` loads the policy and builds its envs in this process (no Ray);
``N > 1`` starts a local Ray cluster, N actors that each load the policy and build their envs,
and stops it. Episodes per second count everything from the start to the report; the row
also gives the cluster's start-up alone, and whether every seed's actions equal those of the
one-process run (per-episode determinism).
"""
from __future__ import annotations

import time
from functools import partial


def bench_workers(checkpoint: str, env: str, episodes: list[int], counts: list[int], seed_start: int = 100_000,
                  batch: int = 10, progress: bool = True) -> list[dict]:
    """One row per (episode count, worker count); speed-ups against the first count's row."""
    return [row for n in episodes for row in _rows(checkpoint, env, n, counts, seed_start, batch, progress)]


def _rows(checkpoint: str, env: str, episodes: int, counts: list[int], seed_start: int, batch: int,
          progress: bool) -> list[dict]:
    import torch

    from dpctrl.envs.distributed import evaluate_distributed
    from dpctrl.envs.evaluate import evaluate
    from dpctrl.policy.registry import load_policy
    rows, base = [], None
    for n in counts:
        t0 = time.perf_counter()
        if n == 1:
            torch.set_num_threads(1)  # what each worker runs with
            rep = evaluate(load_policy(checkpoint), env, episodes, seed_start, batch=batch, progress=progress)
            startup = 0.0
        else:
            rep = evaluate_distributed(partial(load_policy, checkpoint), env, episodes, seed_start, workers=n,
                                       batch=batch, progress=progress)
            startup = rep["startup_seconds"]
        wall = time.perf_counter() - t0
        digests = [e["actions_sha1"] for e in rep["per_episode"]]
        base = base or {"digests": digests, "eps_per_s": episodes / wall}
        rows.append({"workers": n, "episodes": episodes, "wall_s": wall, "ray_startup_s": startup,
                     "eps_per_s": episodes / wall, "speedup": episodes / wall / base["eps_per_s"],
                     "baseline_workers": counts[0],
                     "success_rate": rep["success_rate"], "same_as_first": digests == base["digests"],
                     "per_worker": rep.get("per_worker", {"0": episodes}),
                     "worker_peak_memory_mb": rep.get("worker_peak_memory_mb", {}) or {"0": peak_rss_mb()}})
    return rows


def peak_rss_mb() -> int:
    """This process's peak resident memory (the one-process row's worker)."""
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def markdown(rows: list[dict]) -> str:
    from dpctrl.launch.tables import markdown_table
    return markdown_table(
        ["workers", "episodes", "wall (s)", "Ray start-up (s)", "episodes/s", "x the first worker count", "success",
         "same per-seed actions", "episodes per worker", "peak memory per worker (MB)"],
        [[r["workers"], r["episodes"], f"{r['wall_s']:.1f}", f"{r['ray_startup_s']:.1f}", f"{r['eps_per_s']:.3f}",
          f"{r['speedup']:.2f}", f"{r['success_rate']:.3f}", "yes" if r["same_as_first"] else "NO",
          ", ".join(str(v) for v in r["per_worker"].values()),
          ", ".join(str(v) for v in r["worker_peak_memory_mb"].values())]
         for r in rows])
