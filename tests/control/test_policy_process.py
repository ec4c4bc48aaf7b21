"""The policy in a child process (control/policy_process.py): the same chunks as in-process,
failures reported, and the loop running on it."""
import os
import signal
from functools import partial

import numpy as np
import pytest
import torch

from dpctrl.control.policy_process import PolicyProcess, PolicyProcessError
from dpctrl.policy.chunking import Prefix
from dpctrl.policy.registry import load_policy


def rti_lift(seed):
    from dpctrl.policy.accel.warmstart import rti_for
    policy = load_policy("lift", seed=seed)
    policy.set_warm_start(rti_for("lift", policy))
    return policy


class Picky:
    """Refuses windows whose first value is positive."""
    n_obs_steps, n_action_steps, horizon = 2, 8, 16

    def expected_obs(self):
        return {"x": (2, 1)}

    def describe(self):
        return {"sampler": "picky"}

    def reset(self):
        pass

    def note_executed(self, n):
        pass

    def predict_chunk(self, window, committed=None):
        if window["x"][0, 0] > 0:
            raise ValueError("positive window")
        return np.zeros((16, 2))


def broken():
    raise FileNotFoundError("no checkpoint here")


def windows(policy, n, seed=0):
    rng = np.random.default_rng(seed)
    return [{k: rng.normal(0, 0.3, s).astype(np.float32) for k, s in policy.expected_obs().items()} for _ in range(n)]


def test_the_same_chunks_as_in_process_with_warm_start_and_rtc():
    torch.set_num_threads(1)
    local = rti_lift(11)
    ws = windows(local, 3)
    with PolicyProcess(partial(rti_lift, 11), threads=1) as remote:
        assert remote.describe()["inference"] == "process" and remote.describe()["warm_start"] is not None
        assert (remote.n_obs_steps, remote.horizon) == (local.n_obs_steps, local.horizon)
        assert "rtc" in remote.overlap_modes and remote.expected_obs() == local.expected_obs()
        for p in (local, remote):
            p.reset()
        for i, w in enumerate(ws):
            prefix = Prefix(np.full((7, 7), 0.1, np.float32), 2, 8, "rtc") if i == 2 else None
            a, b = local.predict_chunk(w, prefix), remote.predict_chunk(w, prefix)
            np.testing.assert_allclose(b, a, atol=1e-6)
            local.note_executed(8)
            remote.note_executed(8)


def test_failures_are_reported_and_the_process_stays_usable():
    with PolicyProcess(Picky) as p:
        with pytest.raises(PolicyProcessError, match="ValueError: positive window"):
            p.predict_chunk({"x": np.ones((2, 1))})
        assert p.predict_chunk({"x": -np.ones((2, 1))}).shape == (16, 2)
        os.kill(p.pid, signal.SIGKILL)
        with pytest.raises(PolicyProcessError, match="exited"):
            p.predict_chunk({"x": -np.ones((2, 1))})
    with pytest.raises(PolicyProcessError, match="could not build the policy: FileNotFoundError: no checkpoint here"):
        PolicyProcess(broken)


def test_the_loop_runs_on_a_policy_process():
    from dpctrl.control.session import run_loop
    with PolicyProcess(partial(load_policy, "lift", seed=100000)) as policy:
        res = run_loop(policy, "sim:lift", 40.0, True, episodes=1, seed_start=100000, status=False, max_steps=40)
    # the episode runs to its 40 steps, or ends sooner by lifting the cube (timing decides which
    # actions run, so a loaded machine can finish it in ~34)
    assert res["cycles"] == 40 or (res["cycles"] < 40 and res["success_rate"] == 1.0), res["cycles"]
    assert res["policy_errors"] == 0 and res["stopped"] == ["done"]
    assert res["delay_cycles"]["max"] >= 1  # chunks came back from the child while the loop ran
