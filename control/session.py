"""Episodes of a chunk policy in the fixed-rate loop against a robot (``dpctrl run``).

    report = run_loop(policy, "sim:lift", rate_hz=20, async_inference=True, episodes=10)

``run_loop`` builds the robot (a name or a ``Robot``), the safety filter from its action
space, the ``ControlLoop`` (control/loop.py) with the policy's chunk geometry, runs the
episodes (the policy reset before each) and aggregates the loop's per-episode reports:
success, deadline misses, period jitter and chunk latency percentiles.
"""
from __future__ import annotations

import sys

import numpy as np

from dpctrl import envs
from dpctrl.control.loop import ControlLoop, EpisodeReport, LoopConfig
from dpctrl.control.robot import MockArm, SimRobot
from dpctrl.control.safety import SafetyFilter
from dpctrl.policy.chunking import smoothness


def percentiles(values: list[float]) -> dict:
    v = np.asarray(values if values else [np.nan])
    return {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)), "max": float(v.max())}


def aggregate(reports: list[EpisodeReport]) -> dict:
    return {
        "episodes": len(reports),
        "success_rate": float(np.mean([r.success for r in reports])),
        "cycles": int(sum(r.cycles for r in reports)),
        "period_jitter_ms": percentiles([j for r in reports for j in r.jitter_ms]),
        "deadline_misses": int(sum(r.deadline_misses for r in reports)),
        "overruns": int(sum(r.timing.get("overruns", 0) for r in reports)),
        "chunk_latency_ms": percentiles([x for r in reports for x in r.chunk_latency_ms]),
        "policy_errors": int(sum(r.policy_errors for r in reports)),
        # counted per chunk: control cycles between its observation and its arrival
        "delay_cycles": percentiles([float(d) for r in reports for d in r.delays]),
        **smoothness([{"boundary_jumps": r.boundary_jumps, "jerk": r.jerk} for r in reports]),
        "stopped": [r.stopped for r in reports],
        "per_episode": [{"seed": r.seed, "success": r.success, "length": r.cycles, "cycles": r.cycles, "stopped": r.stopped,
                         "deadline_misses": r.deadline_misses, "holds": r.safety.get("holds", 0), "chunks": r.chunks,
                         "boundary_jump": float(np.mean(r.boundary_jumps)) if r.boundary_jumps else None}
                        for r in reports],
    }


def status_line(s: dict) -> None:
    j = s["period_jitter_ms"]
    sys.stderr.write(f"\rcycle {s['cycles']:6d}  rate {1000 / s['mean_period_ms']:6.1f} Hz  jitter p99 "
                     f"{j['p99']:.2f} ms  chunk {s['chunk_latency_ms']:.0f} ms  queue {s['queue']:2d}  "
                     f"overruns {s['overruns']}   ")
    sys.stderr.flush()


def sim_task(robot: str) -> str:
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
    return SimRobot(envs.make(sim_task(robot), images=images, max_steps=max_steps,
                              cameras=envs.cameras_of(image_keys)))


def run_loop(policy, robot="sim:lift", rate_hz: float | None = None, async_inference: bool = False, episodes: int = 1,
             seed_start: int = 100_000,
             on_episode_end=None, overlap: str = "replace", status: bool = True, max_steps: int | None = None,
             action_steps: int | None = None, replan_at: int | None = None, images: bool = False,
             max_hold_cycles: int = 50, max_cycles: int | None = None, obs_shapes: dict | None = None,
             image_keys=(), on_cycle=None) -> dict:
    """Episodes of ``policy`` (anything with ``predict_chunk``, ``note_executed``, ``reset``,
    ``n_obs_steps``, ``n_action_steps``, ``horizon``: a local policy or a ``RemotePolicy``) in the
    fixed-rate loop against ``robot``: a name (``sim:<env>``, ``mock``) or a ``Robot`` object with an
    ``action_space`` and ``reset(seed)`` (``dpctrl.control.robot``). ``on_cycle(seed, cycle, row)``
    sees every cycle's record row as it is sent (a recorder; called on the loop thread)."""
    sim = (make_robot(robot, images=images, max_steps=max_steps, obs_shapes=obs_shapes, image_keys=image_keys)
           if isinstance(robot, str) else robot)
    if isinstance(robot, str) and robot.startswith("sim:") and hasattr(policy, "expected_obs"):
        from dpctrl.envs.evaluate import check_fits
        try:
            check_fits(policy, sim.env, sim_task(robot))
        except ValueError:
            sim.env.close()
            raise
    rate_hz = rate_hz or getattr(sim, "control_rate_hz", 20.0)
    space = sim.action_space
    safety = SafetyFilter(low=space.low, high=space.high, safe_action=np.zeros(space.shape, np.float32),
                          max_hold_cycles=max_hold_cycles)
    To, Ta = policy.n_obs_steps, action_steps or policy.n_action_steps
    cfg = LoopConfig(rate_hz=rate_hz, async_inference=async_inference, overlap=overlap, replan_at=replan_at)
    discrete = (envs.discrete_action_dims(sim_task(robot)) if isinstance(robot, str) and robot.startswith("sim:")
                else getattr(sim, "discrete_action_dims", ()))
    loop = ControlLoop(sim, policy.predict_chunk, To, To - 1, Ta, cfg, safety,
                       status=status_line if status else None,
                       note_executed=lambda n: policy.note_executed(min(n, policy.horizon)), discrete_dims=discrete,
                       on_cycle=on_cycle)
    reports = []
    try:
        with sim:
            for seed in range(seed_start, seed_start + episodes):
                loop.settle()  # the last episode's chunk in flight finishes and is dropped first
                policy.reset()
                reports.append(loop.run_episode(seed, max_cycles=max_cycles, on_episode_end=on_episode_end))
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


def run_remote(server: str, token: str | None, robot_name: str, rate_hz: float, episodes: int, seed_start: int,
          timeout_s: float = 1.0, max_hold_s: float = 10.0, async_inference: bool = True,
          replan_at: int | None = None, max_cycles: int | None = None, status: bool = True) -> dict:
    """``run_loop`` with the policy behind a ``dpctrl serve`` server (control/client.py): the
    loop, safety filter and action queue here, inference over the socket; adds the round-trip
    and server times and the request failures to the report."""
    from dpctrl.control.client import RemotePolicy
    remote = RemotePolicy(server, token=token, timeout_s=timeout_s, name=robot_name)
    try:
        meta = remote.connect()
        shapes = {k: tuple(s[1:]) for k, s in meta["obs"].items()}
        res = run_loop(remote, robot_name, rate_hz, async_inference, episodes, seed_start, status=status,
                       replan_at=replan_at, images=bool(meta["image_keys"]), obs_shapes=shapes,
                       image_keys=meta["image_keys"],
                       max_hold_cycles=max(1, int(max_hold_s * rate_hz)), max_cycles=max_cycles)
    finally:
        remote.close()
    misses = res["deadline_misses"]
    return {"server": server, "policy": meta.get("describe", ""), **res,
            "deadline_miss_rate": misses / max(1, res["cycles"]),
            "round_trip_ms": percentiles(remote.rtt_ms), "server_ms": percentiles(remote.server_ms),
            "requests": len(remote.rtt_ms), "failed_requests": remote.failures, "reconnects": remote.reconnects}
