"""``dpctrl run``: a checkpoint as a real-time controller of a (simulated) robot, and
``dpctrl bench loop``: the loop's timing with a synthetic policy on a mock arm."""
from __future__ import annotations

import sys
import time

import numpy as np

from dpctrl.policy.diffusion_policy import DiffusionPolicy
from dpctrl import envs
from dpctrl.control.loop import ControlLoop, EpisodeReport, LoopConfig
from dpctrl.control.robot import MockArm, SimRobot
from dpctrl.control.safety import SafetyFilter
from dpctrl.data import ReplayBuffer


def _pct(values: list[float]) -> dict:
    v = np.asarray(values if values else [np.nan])
    return {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)), "max": float(v.max())}


def aggregate(reports: list[EpisodeReport]) -> dict:
    return {
        "episodes": len(reports),
        "success_rate": float(np.mean([r.success for r in reports])),
        "cycles": int(sum(r.cycles for r in reports)),
        "period_jitter_ms": _pct([j for r in reports for j in r.jitter_ms]),
        "deadline_misses": int(sum(r.deadline_misses for r in reports)),
        "overruns": int(sum(r.timing.get("overruns", 0) for r in reports)),
        "chunk_latency_ms": _pct([x for r in reports for x in r.chunk_latency_ms]),
        "policy_errors": int(sum(r.policy_errors for r in reports)),
        "stopped": [r.stopped for r in reports],
        "per_episode": [{"seed": r.seed, "success": r.success, "cycles": r.cycles, "stopped": r.stopped,
                         "deadline_misses": r.deadline_misses, "holds": r.safety.get("holds", 0)} for r in reports],
    }


def status_line(s: dict) -> None:
    j = s["period_jitter_ms"]
    sys.stderr.write(f"\rcycle {s['cycles']:6d}  rate {1000 / s['mean_period_ms']:6.1f} Hz  jitter p99 "
                     f"{j['p99']:.2f} ms  chunk {s['chunk_latency_ms']:.0f} ms  queue {s['queue']:2d}  "
                     f"overruns {s['overruns']}   ")
    sys.stderr.flush()


def _recorder(path):
    if path is None:
        return None
    rb = ReplayBuffer.open_or_create(path)

    def on_end(record: dict, rep: EpisodeReport) -> None:
        data = {k: v for k, v in record.items() if k != "held"}
        data["held"] = record["held"].astype(np.uint8)
        rb.add_episode(data, meta={"seed": -1 if rep.seed is None else rep.seed, "success": rep.success,
                                   "deadline_misses": rep.deadline_misses, "stopped_early": rep.stopped != "done"})
    return on_end


def run(checkpoint_name: str, robot: str, rate_hz: float | None, async_inference: bool, episodes: int,
        seed_start: int, record: str | None = None, overlap: str = "replace", status: bool = True,
        max_steps: int | None = None, configure=None, action_steps: int | None = None,
        replan_at: int | None = None) -> dict:
    _sim_task(robot)  # validate before loading anything
    policy = DiffusionPolicy.load(checkpoint_name, seed=seed_start)
    if configure is not None:
        configure(policy)
    res = run_loop(policy, robot, rate_hz, async_inference, episodes, seed_start, record=record, overlap=overlap,
                   status=status, max_steps=max_steps, action_steps=action_steps, replan_at=replan_at,
                   images=bool(policy.cfg.image_keys), image_keys=policy.cfg.image_keys)
    return {"checkpoint": str(checkpoint_name), "sampler": policy.cfg.sampler,
            "num_inference_steps": policy.cfg.num_inference_steps,
            "warm_start": None if policy.warm is None else vars(policy.warm.cfg),
            "cache": getattr(policy.cache, "kind", None) if policy.cache is not None else None,
            "deploy": "torchscript" if policy._traced is not None else "eager", **res}


def _sim_task(robot: str) -> str:
    kind, _, task = robot.partition(":")
    if kind != "sim" or not task:
        raise ValueError(f"--robot must be sim:<env> (e.g. sim:lift); got {robot!r}")
    return task


def make_robot(robot: str, images: bool = False, max_steps: int | None = None, obs_shapes: dict | None = None,
               image_keys=()):
    """``sim:<env>`` -> a SimRobot over ``envs.make`` rendering the cameras of ``image_keys``
    (``<camera>_image``; none: the default camera); ``mock`` -> a MockArm observing ``obs_shapes``."""
    if robot == "mock":
        return MockArm(obs_shapes=obs_shapes)
    return SimRobot(envs.make(_sim_task(robot), images=images, max_steps=max_steps,
                              cameras=envs.cameras_of(image_keys)))


def run_loop(policy, robot="sim:lift", rate_hz: float | None = None, async_inference: bool = False, episodes: int = 1,
             seed_start: int = 100_000,
             record: str | None = None, overlap: str = "replace", status: bool = True, max_steps: int | None = None,
             action_steps: int | None = None, replan_at: int | None = None, images: bool = False,
             max_hold_cycles: int = 50, max_cycles: int | None = None, obs_shapes: dict | None = None,
             image_keys=()) -> dict:
    """Episodes of ``policy`` (anything with ``predict_chunk``, ``note_executed``, ``reset``,
    ``n_obs_steps``, ``n_action_steps``, ``horizon``: a local policy or a ``RemotePolicy``) in the
    fixed-rate loop against ``robot``: a name (``sim:<env>``, ``mock``) or a ``Robot`` object with an
    ``action_space`` and ``reset(seed)`` (``dpctrl.control.robot``)."""
    sim = (make_robot(robot, images=images, max_steps=max_steps, obs_shapes=obs_shapes, image_keys=image_keys)
           if isinstance(robot, str) else robot)
    rate_hz = rate_hz or getattr(sim, "control_rate_hz", 20.0)
    space = sim.action_space
    safety = SafetyFilter(low=space.low, high=space.high, safe_action=np.zeros(space.shape, np.float32),
                          max_hold_cycles=max_hold_cycles)
    To, Ta = policy.n_obs_steps, action_steps or policy.n_action_steps
    cfg = LoopConfig(rate_hz=rate_hz, async_inference=async_inference, overlap=overlap, replan_at=replan_at)
    loop = ControlLoop(sim, policy.predict_chunk, To, To - 1, Ta, cfg, safety,
                       status=status_line if status else None,
                       note_executed=lambda n: policy.note_executed(min(n, policy.horizon)))
    on_end = _recorder(record)
    reports = []
    try:
        with sim:
            for seed in range(seed_start, seed_start + episodes):
                policy.reset()
                reports.append(loop.run_episode(seed, max_cycles=max_cycles, on_episode_end=on_end))
    finally:
        loop.close()
        if hasattr(sim, "env"):
            sim.env.close()
        if status:
            sys.stderr.write("\n")
    return {"robot": robot if isinstance(robot, str) else type(robot).__name__, "rate_hz": rate_hz,
            "async": async_inference, "overlap": overlap,
            "replan_at": loop.replan_at, "action_steps": Ta, **aggregate(reports)}


def compare_with_eval(run_report: dict, eval_json: str) -> dict:
    """Success of this run and of a synchronous ``dpctrl eval`` report on the same seeds."""
    import json
    from pathlib import Path
    ev = {e["seed"]: bool(e["success"]) for e in json.loads(Path(eval_json).read_text())["per_episode"]}
    ours = {e["seed"]: bool(e["success"]) for e in run_report["per_episode"]}
    missing = sorted(set(ours) - set(ev))
    if missing:
        raise ValueError(f"{eval_json} has no episodes for seeds {missing[:5]}{'...' if len(missing) > 5 else ''}")
    a = float(np.mean([ev[s] for s in ours]))
    b = float(np.mean(list(ours.values())))
    return {"eval_json": str(eval_json), "seeds": len(ours), "eval_success_rate": a, "run_success_rate": b,
            "difference_points": 100 * (b - a)}


def synthetic_policy(latency_s: float, chunk: int, action_dim: int = 7):
    """Sleeps ``latency_s`` (releasing the GIL as torch kernels do) and returns a chunk."""
    def predict(window: dict) -> np.ndarray:
        time.sleep(latency_s)
        return np.zeros((chunk, action_dim), np.float32)
    return predict


def bench_loop(rate_hz: float, latency_ms: float, chunk: int, cycles: int, replan_at: int | None = None,
               status: bool = True) -> list[dict]:
    """Async and sync on the same synthetic policy and mock arm; To = 1, all ``chunk`` executed."""
    rows = []
    for async_inference in (True, False):
        arm = MockArm()
        safety = SafetyFilter(low=arm.action_space.low, high=arm.action_space.high, safe_action=np.zeros(7),
                              max_hold_cycles=cycles)
        cfg = LoopConfig(rate_hz=rate_hz, async_inference=async_inference, replan_at=replan_at)
        loop = ControlLoop(arm, synthetic_policy(latency_ms / 1000, chunk), 1, 0, chunk, cfg, safety,
                           status=status_line if status else None)
        try:
            with arm:
                rep = loop.run_episode(max_cycles=cycles)
        finally:
            loop.close()
            if status:
                sys.stderr.write("\n")
        agg = aggregate([rep])
        rows.append({"mode": "async" if async_inference else "sync", "rate_hz": rate_hz, "latency_ms": latency_ms,
                     "chunk": chunk, **{k: agg[k] for k in ("cycles", "deadline_misses", "overruns",
                                                            "period_jitter_ms", "chunk_latency_ms")},
                     "holds": rep.safety["holds"]})
    return rows
