"""Control-loop behaviour on a fake robot: fake clock for timing semantics, events for threads."""
import threading
import time

import gymnasium as gym
import numpy as np
import pytest

from dpctrl.control.clock import FakeClock
from dpctrl.control.loop import ControlLoop, LoopConfig
from dpctrl.control.robot import RobotBase
from dpctrl.control.safety import SafetyFilter


class FakeRobot(RobotBase):
    """Observation x = number of actions received; records everything it is sent."""

    def __init__(self, episode_len=40, fail_observe_at=None, interrupt_at=None):
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.observation_keys = ["x"]
        self.sent, self.episode_len = [], episode_len
        self.fail_observe_at, self.interrupt_at = fail_observe_at, interrupt_at
        self.done = self.success = False

    def connect(self):
        pass

    def disconnect(self):
        pass

    def reset(self, seed=None):
        self.sent.clear()
        self.done = False
        return self.observe()

    def observe(self):
        if self.fail_observe_at is not None and len(self.sent) == self.fail_observe_at:
            raise OSError("camera unplugged")
        return {"x": np.array([len(self.sent)], np.float32), "timestamp": 0.0}

    def act(self, action):
        assert np.isfinite(action).all()
        if self.interrupt_at is not None and len(self.sent) == self.interrupt_at:
            raise KeyboardInterrupt
        self.sent.append(np.array(action))
        self.done = len(self.sent) >= self.episode_len
        self.success = self.done
        return action


def chunk_policy(calls, latency_s=0.0, clock=None, fail_on=(), nan_on=()):
    """Chunk of 16: action i = (x_last + i) / 100 in dim 0, so sent actions reveal the chunk."""
    def predict(window):
        calls.append(float(window["x"][-1, 0]))
        if clock is not None:
            clock.advance(latency_s)
        n = len(calls)
        if n in fail_on:
            raise RuntimeError("policy blew up")
        out = np.stack([(window["x"][-1, 0] + np.arange(16)) / 100, np.zeros(16)], axis=1)
        if n in nan_on:
            out[3, 0] = np.nan
        return out
    return predict


def safety(max_hold=50):
    return SafetyFilter(low=-np.ones(2), high=np.ones(2), safe_action=np.zeros(2), max_hold_cycles=max_hold)


def sync_loop(robot, predict, clock, rate=50.0, **cfg):
    return ControlLoop(robot, predict, n_obs_steps=2, first_action=1, n_action_steps=8,
                       cfg=LoopConfig(rate_hz=rate, async_inference=False, spin_s=0.0, **cfg),
                       safety=safety(), clock=clock, sleep=clock.sleep)


def test_sync_fast_policy_executes_chunks_in_order_without_misses():
    clock, calls = FakeClock(), []
    robot = FakeRobot(episode_len=40)
    rep = sync_loop(robot, chunk_policy(calls, 0.002, clock), clock).run_episode(seed=0)
    assert rep.stopped == "done" and rep.cycles == 40 and rep.deadline_misses == 0
    assert calls == [0, 8, 16, 24, 32]  # replans exactly when each executed part (Ta=8) runs out
    sent = np.array([a[0] for a in robot.sent])
    np.testing.assert_allclose(sent[:8], (0 + np.arange(1, 9)) / 100)  # pred[To-1 : To-1+Ta]
    assert rep.timing["period_jitter_ms"]["max"] < 1e-6


def test_loop_reports_the_shift_since_the_last_chunk():
    clock, calls, shifts = FakeClock(), [], []
    loop = ControlLoop(FakeRobot(episode_len=24), chunk_policy(calls, 0.001, clock), 2, 1, 8,
                       LoopConfig(rate_hz=50.0, async_inference=False, spin_s=0.0), safety=safety(),
                       clock=clock, sleep=clock.sleep, note_executed=shifts.append)
    loop.run_episode()
    assert shifts == [8, 8]  # each new chunk comes 8 executed actions after the previous one


def test_loop_measures_chunk_switches_and_counts_each_chunks_delay():
    clock, calls = FakeClock(), []
    loop = ControlLoop(FakeRobot(episode_len=40), chunk_policy(calls, 0.002, clock), 2, 1, 8,
                       LoopConfig(rate_hz=50.0, async_inference=False, spin_s=0.0), safety=safety(),
                       clock=clock, sleep=clock.sleep, discrete_dims=(1,))
    rep = loop.run_episode()
    # the ramp continues across each switch: (8 + 1) / 100 follows 8 / 100
    assert rep.boundary_jumps == pytest.approx([0.01] * 4, abs=1e-6)  # float32 actions
    assert rep.jerk == pytest.approx(0.0, abs=1e-10)
    assert rep.delays == [0, 0, 0, 0]  # synchronous: each chunk arrives before an action is sent


def test_sync_slow_policy_misses_deadlines():
    clock, calls = FakeClock(), []
    robot = FakeRobot(episode_len=40)
    rep = sync_loop(robot, chunk_policy(calls, 0.030, clock), clock).run_episode(seed=0)
    assert rep.deadline_misses > 0 and rep.timing["overruns"] >= 4


def test_policy_exception_holds_then_recovers():
    clock, calls = FakeClock(), []
    robot = FakeRobot(episode_len=30)
    rep = sync_loop(robot, chunk_policy(calls, 0.001, clock, fail_on=(2,)), clock).run_episode()
    assert rep.policy_errors == 1 and rep.stopped == "done" and rep.cycles == 30
    assert rep.safety["holds"] == 1  # one cycle held the last action, then the next chunk came
    np.testing.assert_allclose(robot.sent[8], robot.sent[7])


def test_safety_counts_are_per_episode():
    clock, calls = FakeClock(), []
    loop = sync_loop(FakeRobot(episode_len=30), chunk_policy(calls, 0.001, clock, fail_on=(2,)), clock)
    assert loop.run_episode().safety["holds"] == 1
    assert loop.run_episode().safety["holds"] == 0  # the second episode had no failure


def test_non_finite_chunk_never_reaches_the_robot():
    clock, calls = FakeClock(), []
    robot = FakeRobot(episode_len=24)
    rep = sync_loop(robot, chunk_policy(calls, 0.001, clock, nan_on=(1, 2)), clock).run_episode()
    assert rep.policy_non_finite == 2 and rep.stopped == "done"
    assert all(np.isfinite(a).all() for a in robot.sent)


def test_observe_failure_stops_and_keeps_the_record():
    clock, calls = FakeClock(), []
    robot = FakeRobot(fail_observe_at=5)
    got = {}
    loop = sync_loop(robot, chunk_policy(calls, 0.001, clock), clock)
    with pytest.raises(OSError, match="unplugged"):
        loop.run_episode(on_episode_end=lambda rec, rep: got.update(rec=rec, rep=rep))
    assert got["rep"].stopped == "robot_error" and len(got["rec"]["action"]) == 5


def test_ctrl_c_stops_cleanly_and_keeps_the_record():
    clock, calls = FakeClock(), []
    robot = FakeRobot(interrupt_at=3)
    got = {}
    loop = sync_loop(robot, chunk_policy(calls, 0.001, clock), clock)
    with pytest.raises(KeyboardInterrupt):
        loop.run_episode(on_episode_end=lambda rec, rep: got.update(rec=rec, rep=rep))
    assert got["rep"].stopped == "interrupted" and len(got["rec"]["action"]) == 3


def test_async_loop_keeps_cycling_while_the_policy_computes():
    """The second chunk blocks until released: the loop keeps sending (queue, then holds)
    and takes the chunk when it arrives."""
    release, calls = threading.Event(), []
    base = chunk_policy(calls)

    def predict(window):
        if len(calls) == 1:
            release.wait(10)
        return base(window)
    robot = FakeRobot(episode_len=10_000)
    sent_at_release = []

    def status(s):
        if s["cycles"] >= 30 and not release.is_set():
            sent_at_release.append(len(robot.sent))
            release.set()
    loop = ControlLoop(robot, predict, 2, 1, 8, LoopConfig(rate_hz=200.0, async_inference=True, replan_at=4, status_every=1),
                       safety=safety(max_hold=1000), status=status)
    rep = loop.run_episode(max_cycles=80)
    assert loop.close()
    assert sent_at_release and sent_at_release[0] >= 30  # never blocked on the slow chunk
    assert rep.safety["holds"] >= 20 and rep.chunks >= 3 and rep.stopped == "max_cycles"


def test_async_requests_every_s_cycles_and_queues_whole_chunks():
    """Default async rule: a request every n_action_steps (S = 8) cycles from the last one's
    observation, each chunk queuing all 15 executable actions; a chunk 3 cycles late replaces
    the queue from its action 3 on, so every chunk runs 8 actions and the queue never runs dry."""
    calls, delayed = [], threading.Event()
    base = chunk_policy(calls)
    robot = FakeRobot(episode_len=40)

    def predict(window):
        if len(calls) == 1:  # the second chunk is slow: it lands while the first one still runs
            start = len(robot.sent)
            while len(robot.sent) < start + 3 and delayed.wait(0.001) is False:
                pass
        return base(window)
    # 50 Hz: a period (20 ms) that a loaded 2-core machine's sleeps keep within half of (at 200 Hz
    # their 3 ms lateness missed a slot now and then)
    shifts = []
    loop = ControlLoop(robot, predict, 2, 1, 8, LoopConfig(rate_hz=50.0, async_inference=True, spin_s=0.0),
                       safety=safety(max_hold=1000), note_executed=shifts.append)
    rep = loop.run_episode()
    assert loop.close()
    assert shifts[:3] == [8, 8, 8]  # a warm start's shift: actions sent since the last request, counted
    assert calls[:4] == [0, 8, 16, 24]  # the observation each chunk came from: every 8 cycles
    assert rep.safety.get("holds", 0) == 0 and rep.deadline_misses == 0, (rep.timing, rep.queue, rep.jitter_ms)
    sent = np.array([a[0] for a in robot.sent]) * 100
    # action i of a chunk from observation x is (x + i) / 100: aligned by time, the late second chunk
    # (from x = 8, arriving >= 3 cycles later) continues the first one's ramp without a gap or a skip
    # (wall-clock stamps may put a chunk one slot off: the ramp may repeat or skip one value, never more)
    steps = np.round(np.diff(sent[:24]))
    assert np.all((steps >= 0) & (steps <= 2)) and abs(sent[23] - 24) <= 1, sent[:24]
    assert rep.delays[0] >= 3


def test_async_hung_policy_trips_the_watchdog():
    hang, calls = threading.Event(), []
    base = chunk_policy(calls)

    def predict(window):
        if len(calls) >= 1:
            hang.wait(10)
        return base(window)
    loop = ControlLoop(FakeRobot(episode_len=10_000), predict, 2, 1, 8,
                       LoopConfig(rate_hz=500.0, async_inference=True, replan_at=2), safety=safety(max_hold=20))
    rep = loop.run_episode()
    assert rep.stopped == "watchdog" and rep.safety["longest_hold"] == 21
    assert not loop.close(timeout=0.05)  # the hung call is still inside the policy
    hang.set()
    assert loop.close(timeout=5)


@pytest.mark.parametrize("mode", ["inpaint", "rtc"])
def test_guided_modes_hand_the_queued_actions_to_the_policy(mode):
    seen, calls = [], []
    base = chunk_policy(calls)

    def predict(window, committed=None):
        seen.append(committed)
        return base(window)
    loop = ControlLoop(FakeRobot(episode_len=10_000), predict, 2, 1, 8,
                       LoopConfig(rate_hz=500.0, async_inference=True, replan_at=3, overlap=mode),
                       safety=safety(max_hold=1000))
    rep = loop.run_episode(max_cycles=40)
    assert loop.close()
    assert seen[0] is None  # the first chunk has nothing to follow
    later = [c for c in seen[1:] if c is not None]
    assert later and all(1 <= len(c.actions) <= 3 and c.actions.shape[1] == 2 for c in later)
    assert {c.mode for c in later} == {mode} and all(c.execute is None for c in later)
    # the frozen part: the last chunk's counted delay (1 before any was counted), at most the queue
    assert later[0].delay == min(1, len(later[0].actions))
    assert all(0 <= c.delay <= len(c.actions) for c in later) and rep.delays

def test_a_chunk_in_flight_when_an_episode_ends_never_reaches_the_next_one():
    """The last request of an episode can still be computing when the episode ends; its chunk
    (from that episode's observations, time-stamped a few periods ago) must not be queued in the
    next episode (it was: the next episode then ran the old episode's actions for a few cycles)."""
    calls = []
    base = chunk_policy(calls)

    def predict(window):
        if len(calls) == 1:  # episode 1's second chunk (from x = 8) outlives the episode
            time.sleep(0.15)
        return base(window)
    robot = FakeRobot(episode_len=12)
    loop = ControlLoop(robot, predict, 2, 1, 8, LoopConfig(rate_hz=50.0, async_inference=True, spin_s=0.0),
                       safety=safety(max_hold=1000))
    first = loop.run_episode(0)
    assert first.cycles == 12 and loop.worker.busy  # ended with the request still in flight
    loop.run_episode(1)
    assert loop.close()
    sent = np.round(np.array([a[0] for a in robot.sent]) * 100)
    assert sent[:8].tolist() == list(range(1, 9)), sent  # episode 2's own first chunk, no action from x = 8


def test_the_loop_record_holds_each_chunk_where_it_arrived():
    """The record (what ``--record`` stores and ``dpctrl view`` shows): the queue depth per cycle
    and each accepted chunk, its latency, at the cycle it arrived; ``on_cycle`` sees every row."""
    clock, calls, rows, records = FakeClock(), [], [], []
    loop = ControlLoop(FakeRobot(episode_len=24), chunk_policy(calls, 0.004, clock), 2, 1, 8,
                       LoopConfig(rate_hz=50.0, async_inference=False, spin_s=0.0), safety=safety(),
                       clock=clock, sleep=clock.sleep, on_cycle=lambda seed, i, row: rows.append((seed, i, row)))
    rep = loop.run_episode(seed=7, on_episode_end=lambda rec, rep: records.append(rec))
    rec = records[0]
    assert rec["chunk"].shape == (24, 8, 2) and rec["chunk_arrived"].sum() == rep.chunks == 3
    arrivals = np.flatnonzero(rec["chunk_arrived"])
    assert arrivals.tolist() == [0, 8, 16]
    np.testing.assert_allclose(rec["chunk"][8, :, 0], (8 + np.arange(1, 9)) / 100)  # the chunk asked at x = 8
    assert not rec["chunk"][~rec["chunk_arrived"]].any()
    assert rec["chunk_latency_ms"][arrivals] == pytest.approx([4.0] * 3)
    assert rec["chunk_delay"].tolist() == [0] * 24  # synchronous: each chunk is used from its observation's cycle
    assert rec["queue"].tolist() == [7 - (i % 8) for i in range(24)]  # actions left after each send
    assert [(s, i) for s, i, _ in rows] == [(7, i) for i in range(24)]
    assert [bool(r["chunk_arrived"]) for _, _, r in rows] == rec["chunk_arrived"].tolist()
