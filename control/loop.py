"""The fixed-rate control loop: read -> update -> write, once per period.

Each cycle: observe (stamped), keep the last ``n_obs_steps`` observations, collect a
finished chunk from the inference worker into the action queue (or, synchronous, compute
one in this thread when the queue is short), pop the action due now, pass it through the
safety filter, send it, wait for the next absolute deadline.

Asynchronous mode requests a new chunk every ``n_action_steps`` cycles (the execution
horizon S, counted from the last request's observation) and queues every executable action of
each chunk, so a chunk that arrives D cycles late replaces the queue from its action D on and
each chunk runs S actions: the delay-injected evaluation's protocol (envs/evaluate.py) in
wall-clock time. (Requesting when a fixed ``replan_at`` actions remain instead, as before,
made each chunk run only its first ~4-5 actions: the shipped Lift policy executing 4 actions
per chunk from offset 0 or 1 stalls, 0.00 / 0.10 success in the evaluator.) ``replan_at``
keeps the old rule for those who set it. The first chunk of an episode is computed before the
clock starts. Failures:
- the policy raises or returns NaN/Inf: the chunk is dropped and counted, the queue and
  the safety filter's hold carry the robot, the next request is made at once;
- no action by the deadline (slow or hung policy): the safety filter holds and counts;
  past ``max_hold_cycles`` the episode stops (``stopped = "watchdog"``);
- ``observe``/``act`` raise, or Ctrl-C: the loop stops, hands what it recorded to
  ``on_episode_end``, and re-raises.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dpctrl.policy.chunking import COMMITTED, ActionQueue, Prefix, boundary_jumps, mean_squared_jerk
from dpctrl.control.clock import RateKeeper
from dpctrl.control.inference import ChunkResult, InferenceWorker, run_policy
from dpctrl.control.safety import SafetyFilter, WatchdogTimeout

log = logging.getLogger(__name__)


@dataclass
class LoopConfig:
    rate_hz: float = 20.0
    async_inference: bool = True
    replan_at: int | None = None  # async: request when this many actions are left (None: every S cycles)
    overlap: str = "replace"  # replace | blend | inpaint | rtc | bid (async: guide the new prefix to the queue)
    max_hold_cycles: int = 50
    max_delta: float | None = None
    spin_s: float = 0.001
    status_every: int | None = None  # cycles between status callbacks; None: once a second


@dataclass
class EpisodeReport:
    seed: int | None
    cycles: int = 0
    success: bool = False
    stopped: str = "done"  # done | max_cycles | watchdog | robot_error | interrupted
    deadline_misses: int = 0
    chunks: int = 0
    policy_errors: int = 0
    policy_non_finite: int = 0
    chunk_latency_ms: list[float] = field(default_factory=list)
    jitter_ms: list[float] = field(default_factory=list)  # |actual period - nominal| per cycle
    timing: dict = field(default_factory=dict)
    safety: dict = field(default_factory=dict)
    queue: dict = field(default_factory=dict)
    delays: list[int] = field(default_factory=list)  # per chunk: cycles from its observation to its arrival
    boundary_jumps: list[float] = field(default_factory=list)  # per chunk switch (policy/chunking.py)
    jerk: float = float("nan")


class ControlLoop:
    def __init__(self, robot, predict: Callable[[dict], np.ndarray], n_obs_steps: int, first_action: int,
                 n_action_steps: int, cfg: LoopConfig, safety: SafetyFilter,
                 clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep,
                 status: Callable[[dict], None] | None = None,
                 note_executed: Callable[[int], None] | None = None, discrete_dims: tuple[int, ...] = (),
                 on_cycle: Callable[[int | None, int, dict], None] | None = None):
        self.robot, self.predict, self.cfg, self.safety = robot, predict, cfg, safety
        self.on_cycle = on_cycle  # (seed, cycle, that cycle's record row): a recorder; it must not block
        self.To, self.first, self.n = n_obs_steps, first_action, n_action_steps
        self.clock, self.sleep, self.status = clock, sleep, status
        self.note_executed = note_executed  # tells a warm-starting policy the shift since its last chunk
        self.discrete_dims = tuple(discrete_dims)  # action dims the smoothness measures leave out (a gripper)
        self._request_cycle = 0
        self.replan_at = cfg.replan_at
        # async without replan_at: each chunk queues all its executable actions, one request every S cycles
        self.n_queued = None if cfg.async_inference and cfg.replan_at is None else n_action_steps
        self.worker = InferenceWorker(predict, first_action, self.n_queued) if cfg.async_inference else None

    def settle(self, timeout: float = 5.0) -> bool:
        """Between episodes: drop any chunk still in flight (computed from the last episode's
        observations, it must not reach the next one) after waiting up to ``timeout`` for it, so
        the policy can be reset; returns whether the worker is idle."""
        return self.worker.discard(timeout) if self.worker else True

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the worker; False if a hung policy call is still running after ``timeout``."""
        return self.worker.close(timeout) if self.worker else True

    def _window(self, hist: deque) -> dict:
        return {k: np.stack([h[k] for h in hist]) for k in hist[0]}

    def _accept(self, res: ChunkResult, queue: ActionQueue, rep: EpisodeReport, now: float,
                switches: list[int] | None = None) -> None:
        """Queue a finished chunk; ``switches`` collects the index of the first action sent after
        each chunk that replaced another (where the smoothness measures look)."""
        rep.chunk_latency_ms.append(res.latency_s * 1000)
        self._arrived = None
        delay = 0
        if switches is not None:  # not the episode's first chunk, which the loop waits for
            delay = rep.cycles - self._request_cycle  # counted: actions sent since its observation
            rep.delays.append(delay)
        if res.error is not None:
            rep.policy_errors += 1
            log.warning("policy raised %s: %s; holding and retrying", type(res.error).__name__, res.error)
        elif not np.isfinite(res.actions).all():
            rep.policy_non_finite += 1
            log.warning("policy returned non-finite actions; chunk dropped")
        else:
            rep.chunks += 1
            self._arrived = (res.actions, res.latency_s * 1000, delay)  # recorded with the next cycle sent
            queue.push(res.actions, res.t_obs, now)
            if switches is not None and rep.chunks > 1:
                switches.append(rep.cycles)

    def run_episode(self, seed: int | None = None, max_cycles: int | None = None,
                    on_episode_end: Callable[[dict, EpisodeReport], None] | None = None) -> EpisodeReport:
        cfg, robot = self.cfg, self.robot
        rk = RateKeeper(cfg.rate_hz, spin_s=cfg.spin_s, clock=self.clock, sleep=self.sleep)
        queue = ActionQueue(rk.period_s, mode="replace" if cfg.overlap in COMMITTED else cfg.overlap)
        self.settle(0.0)  # a chunk of the last episode never reaches this one
        self.safety.reset()
        rep = EpisodeReport(seed=seed)
        record: dict[str, list] = {"action": [], "t": [], "held": [], "queue": [], "chunk_arrived": [], "chunk": [],
                                   "chunk_latency_ms": [], "chunk_delay": []}
        self._arrived = None
        obs = robot.reset(seed) if hasattr(robot, "reset") else robot.observe()
        hist = deque([self._strip(obs)] * self.To, maxlen=self.To)
        t_start = self.clock()
        switches: list[int] = []
        self._request_cycle = 0
        # the first chunk before the clock starts (start-up latency is not a deadline miss)
        first = run_policy(self.predict, self._window(hist), t_start, self.first, self.n_queued, self.clock)
        rk.start()
        first.t_obs = rk.t0
        self._accept(first, queue, rep, rk.t0)
        try:
            while True:
                now = self.clock()
                obs = robot.observe()
                hist.append(self._strip(obs))
                t_obs = now  # the loop's clock; robot timestamps may use another clock
                if self.worker is not None:
                    res = self.worker.poll()
                    if res is not None:
                        self._accept(res, queue, rep, now, switches)
                    due = (len(queue) <= self.replan_at if self.replan_at is not None
                           else rep.cycles - self._request_cycle >= self.n)
                    if due and not self.worker.busy:
                        queued = queue.remaining(t_obs) if cfg.overlap in COMMITTED else ()
                        # nothing to agree with when every queued action is already past due (a slow cycle)
                        kw = {"committed": self._prefix(queued, rep)} if len(queued) else {}
                        self._note_shift(rep)
                        self._request_cycle = rep.cycles
                        self.worker.submit(self._window(hist), t_obs, **kw)
                elif len(queue) == 0:
                    self._note_shift(rep)
                    self._request_cycle = rep.cycles
                    self._accept(run_policy(self.predict, self._window(hist), t_obs, self.first, self.n, self.clock),
                                 queue, rep, self.clock(), switches)
                candidate = queue.pop(self.clock())
                held = candidate is None
                try:
                    action = self.safety.filter(candidate)
                except WatchdogTimeout as e:
                    log.error("%s; stopping the episode", e)
                    rep.stopped = "watchdog"
                    break
                rep.deadline_misses += int(held)
                sent = robot.act(action)
                for k, v in hist[-1].items():
                    record.setdefault(k, []).append(v)
                record["action"].append(sent)
                record["t"].append(now - rk.t0)
                record["held"].append(held)
                record["queue"].append(len(queue))
                arrived, self._arrived = self._arrived, None
                record["chunk_arrived"].append(arrived is not None)
                record["chunk"].append(arrived[0] if arrived else None)  # one array per episode at its end
                record["chunk_latency_ms"].append(arrived[1] if arrived else 0.0)
                record["chunk_delay"].append(arrived[2] if arrived else 0)  # its action 0 was due that many cycles ago
                if self.on_cycle is not None:
                    self.on_cycle(seed, rep.cycles, {k: v[-1] for k, v in record.items()})
                rep.cycles += 1
                if getattr(robot, "done", False):
                    break
                if max_cycles is not None and rep.cycles >= max_cycles:
                    rep.stopped = "max_cycles"
                    break
                if self.status is not None and rep.cycles % (cfg.status_every or max(1, int(cfg.rate_hz))) == 0:
                    self.status({"cycles": rep.cycles, "queue": len(queue), **rk.stats.summary(),
                                 "chunk_latency_ms": rep.chunk_latency_ms[-1] if rep.chunk_latency_ms else math.nan})
                rk.wait()
        except KeyboardInterrupt:
            rep.stopped = "interrupted"
            raise
        except Exception:
            rep.stopped = "robot_error"
            raise
        finally:
            rep.success = bool(getattr(robot, "success", False))
            rep.deadline_misses += rk.stats.skipped_cycles
            rep.timing = rk.stats.summary()
            rep.jitter_ms = (np.abs(np.diff(rk.stats.starts) - rk.period_s) * 1000).tolist()
            rep.safety = vars(self.safety.stats).copy()
            rep.queue = vars(queue.stats).copy()
            if record["action"]:
                sent = np.asarray(record["action"])
                dims = [d for d in range(sent.shape[1]) if d not in self.discrete_dims]
                rep.boundary_jumps = boundary_jumps(sent, switches, dims)
                rep.jerk = mean_squared_jerk(sent, dims)
            if on_episode_end is not None and record["action"]:
                record["chunk"] = chunk_rows(record["chunk"], len(record["action"][0]))
                on_episode_end({k: np.asarray(v) for k, v in record.items()}, rep)
        return rep

    def _prefix(self, remaining: np.ndarray, rep: EpisodeReport) -> Prefix:
        """The queued actions the next chunk should agree with; the ones expected to run before
        it arrives (the last chunk's counted delay, 1 before any) are the frozen part."""
        delay = min(rep.delays[-1] if rep.delays else 1, len(remaining))
        return Prefix(remaining, delay, None, self.cfg.overlap)  # None: the mask ends with the queue

    def _note_shift(self, rep: EpisodeReport) -> None:
        """Tell a warm start how far to shift: the actions sent since the last request's
        observation, counted (not estimated from wall-clock time)."""
        if self.note_executed is not None:
            self.note_executed(rep.cycles - self._request_cycle)

    @staticmethod
    def _strip(obs: dict) -> dict:
        return {k: v for k, v in obs.items() if k != "timestamp"}


def chunk_rows(chunks: list, action_dim: int) -> np.ndarray:
    """A record's per-cycle chunks (an array where one arrived, else None) as one (L, n, A)
    array: zeros where none arrived, every chunk cut or zero-padded to the first one's rows."""
    n = next((len(c) for c in chunks if c is not None), 0)
    out = np.zeros((len(chunks), n, action_dim), np.float32)
    for i, c in enumerate(chunks):
        if c is not None:
            out[i, :min(n, len(c))] = c[:n]
    return out

