"""The public API at ``import dpctrl``: small, lazy, and what the README shows works."""
import subprocess
import sys

import numpy as np
import pytest


def test_import_dpctrl_is_light():
    """``import dpctrl`` loads neither torch nor a simulator (names resolve on first use)."""
    code = ("import sys, dpctrl; heavy = [m for m in ('torch', 'mujoco', 'robosuite', 'metaworld', 'highway_env', "
            "'zarr', 'gymnasium') if m in sys.modules]; print(heavy, dpctrl.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "0.2.0"]


def test_every_public_name_resolves():
    import dpctrl
    for name in dpctrl.__all__:
        assert getattr(dpctrl, name) is not None, name
    with pytest.raises(AttributeError, match="public API"):
        dpctrl.no_such_name  # noqa: B018


def test_chunk_stepper_runs_the_shipped_policy_in_a_user_loop():
    """The README's loop: one action per call, a new chunk every Ta actions, warm start told."""
    import dpctrl
    policy = dpctrl.load_policy("lift")
    env = dpctrl.make_env("lift", max_steps=20)
    calls, told = [], []
    predict, note = policy.predict_chunk, policy.note_executed
    policy.predict_chunk = lambda w, *a: calls.append(w) or predict(w, *a)
    policy.note_executed = lambda n, *a: told.append(n) or note(n, *a)
    stepper = dpctrl.ChunkStepper(policy)
    obs, _ = env.reset(seed=100000)
    actions = []
    try:
        for _ in range(20):
            action = stepper.act(obs)
            actions.append(action)
            obs, reward, terminated, truncated, info = env.step(action)
    finally:
        env.close()
    Ta = policy.n_action_steps
    assert len(calls) == -(-20 // Ta) and told == [Ta] * (len(calls) - 1)
    assert all(w["robot0_eef_pos"].shape == (policy.n_obs_steps, 3) for w in calls)
    # the first window repeats the first observation (no history yet)
    assert np.array_equal(calls[0]["object"][0], calls[0]["object"][1])
    assert np.isfinite(np.stack(actions)).all() and np.stack(actions).shape == (20, 7)
    with pytest.raises(KeyError, match="lacks"):
        stepper.act({"robot0_eef_pos": np.zeros(3)})
    with pytest.raises(ValueError, match="action_steps"):
        dpctrl.ChunkStepper(policy, action_steps=policy.horizon)
