"""``dpctrl bench loop``: the loop's timing with a synthetic policy on a mock arm, async vs
sync in one run; with ``rerun``, also async while a live Rerun recording (data/view.py) logs
every cycle, as ``dpctrl run --rerun`` does."""
from __future__ import annotations

import sys
import time

import numpy as np

from dpctrl.control.loop import ControlLoop, LoopConfig
from dpctrl.control.robot import MockArm
from dpctrl.control.safety import SafetyFilter
from dpctrl.control.session import aggregate, status_line


def synthetic_policy(latency_s: float, chunk: int, action_dim: int = 7):
    """Sleeps ``latency_s`` (releasing the GIL as torch kernels do) and returns a chunk."""
    def predict(window: dict) -> np.ndarray:
        time.sleep(latency_s)
        return np.zeros((chunk, action_dim), np.float32)
    return predict


def bench_loop(rate_hz: float, latency_ms: float, chunk: int, cycles: int, replan_at: int | None = None,
               status: bool = True, rerun: bool = False) -> list[dict]:
    """Async and sync on the same synthetic policy and mock arm; To = 1. Sync executes all
    ``chunk`` actions before asking again; async asks every ``chunk // 2`` cycles (its execution
    horizon S), so a chunk that takes a few periods still arrives before the queue runs dry."""
    import tempfile
    rows = []
    modes = [("async", True, False), ("async + rerun", True, True), ("sync", False, False)]
    for mode, async_inference, record in (m for m in modes if rerun or not m[2]):
        live = None
        if record:
            from dpctrl.data.view import LiveRecording
            tmp = tempfile.TemporaryDirectory(prefix="dpctrl-bench-loop-")
            live = LiveRecording(f"{tmp.name}/loop.rrd")
        arm = MockArm()
        safety = SafetyFilter(low=arm.action_space.low, high=arm.action_space.high, safe_action=np.zeros(7),
                              max_hold_cycles=cycles)
        cfg = LoopConfig(rate_hz=rate_hz, async_inference=async_inference, replan_at=replan_at)
        horizon = chunk // 2 if async_inference else chunk
        loop = ControlLoop(arm, synthetic_policy(latency_ms / 1000, chunk), 1, 0, horizon, cfg, safety,
                           status=status_line if status else None, on_cycle=live.on_cycle if live else None)
        try:
            with arm:
                rep = loop.run_episode(max_cycles=cycles)
        finally:
            loop.close()
            if live:
                live.close()
                tmp.cleanup()
            if status:
                sys.stderr.write("\n")
        agg = aggregate([rep])
        rows.append({"mode": mode, "rate_hz": rate_hz, "latency_ms": latency_ms,
                     "chunk": chunk, **{k: agg[k] for k in ("cycles", "deadline_misses", "overruns",
                                                            "period_jitter_ms", "chunk_latency_ms")},
                     "holds": rep.safety["holds"]})
    return rows
