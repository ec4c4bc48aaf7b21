"""Delay-injected evaluation (envs/evaluate.py): which chunk's which action runs at every step,
what the policy is told, and the smoothness measures, on a policy whose actions are labels."""
import gymnasium as gym
import numpy as np
import pytest

from dpctrl.envs.evaluate import rollout_group
from dpctrl.policy.chunking import boundary_jumps, check_delay, mean_squared_jerk


class LabelPolicy:
    """Chunk r (the r-th request) has action [r, h] at horizon index h."""
    n_obs_steps, horizon, n_action_steps = 2, 16, 8
    overlap_modes = ("inpaint", "rtc")

    def __init__(self):
        self.requests, self.nfe_last, self.executed, self.committed = 0, 1, [], []

    def expected_obs(self):
        return {"x": (2, 1)}

    def describe(self):
        return {"sampler": "label", "num_inference_steps": 1, "warm_start": None, "cache": None, "deploy": None,
                "config": {}}

    def reset(self, ids=None, seeds=None):
        pass

    def note_executed(self, n, ids=None):
        self.executed.append(n)

    def predict_batch(self, obs, committed=None, ids=None):
        B = obs["x"].shape[0]
        a = np.zeros((B, self.horizon, 2), np.float32)
        a[:, :, 0], a[:, :, 1] = self.requests, np.arange(self.horizon)
        self.requests += 1
        self.committed.append(committed)
        return a

    def predict_chunk(self, obs_window, committed=None):
        return self.predict_batch({k: np.asarray(v)[None] for k, v in obs_window.items()}, committed)[0]


class CountEnv(gym.Env):
    """Observes its step count; records the actions; ends after ``length`` steps."""

    def __init__(self, length):
        self.length = length
        self.action_space = gym.spaces.Box(-100, 100, (2,), np.float32)

    def reset(self, seed=None, options=None):
        self.t, self.actions = 0, []
        return {"x": np.array([0.0])}, {}

    def step(self, action):
        self.actions.append(np.array(action))
        self.t += 1
        return {"x": np.array([float(self.t)])}, 0.0, False, self.t >= self.length, {"success": False}


def expected_label(t, delay, execute):
    """(chunk, horizon index) of the action run at step t: the first chunk covers steps
    0 .. S+D-1; chunk k >= 1 is requested at k*S and runs from k*S + D."""
    if t < execute + delay:
        return 0, 1 + t
    k = (t - delay) // execute
    return k, 1 + t - k * execute


@pytest.mark.parametrize("delay,execute", [(0, 8), (1, 8), (2, 8), (4, 8), (6, 8), (3, 4), (0, 1), (1, 1)])
def test_each_step_runs_the_protocols_action(delay, execute):
    policy, envs = LabelPolicy(), [CountEnv(45), CountEnv(30)]
    res = rollout_group(policy, envs, [0, 1], action_steps=execute, delay=delay)
    for env in envs:
        got = [tuple(int(v) for v in a) for a in env.actions]
        assert got == [expected_label(t, delay, execute) for t in range(env.length)]
    # a warm start is told the S steps between consecutive observations, never a guess
    assert set(policy.executed) == {execute}
    assert [r["length"] for r in res] == [45, 30]
    # one boundary jump per chunk switch that happened inside the episode
    switches = [len([k for k in range(1, 100) if k * execute + delay < env.length]) for env in envs]
    assert [len(r["boundary_jumps"]) for r in res] == switches


def test_replace_jump_is_the_skip_blend_is_gradual():
    policy, env = LabelPolicy(), CountEnv(40)
    (rep,) = rollout_group(policy, [env], [0], delay=2, action_steps=8)
    # replace at a switch: old chunk's index 1+S+D-1 = 10 -> new chunk's index 1+D = 3
    assert rep["boundary_jumps"][0] == pytest.approx(7.0)
    policy, env = LabelPolicy(), CountEnv(40)
    (blend,) = rollout_group(policy, [env], [0], delay=2, action_steps=8, overlap="blend")
    assert max(blend["boundary_jumps"]) < 7.0
    labels = np.stack(env.actions)[:, 0]
    assert np.all(np.diff(labels) >= 0) and np.any((labels % 1) > 0)  # between old and new, moving to new


@pytest.mark.parametrize("mode", ["inpaint", "rtc"])
def test_guided_modes_get_each_rows_remaining_actions(mode):
    policy = LabelPolicy()
    rollout_group(policy, [CountEnv(20), CountEnv(20)], [0, 1], delay=3, action_steps=8, overlap=mode)
    assert policy.committed[0] is None  # the first chunk has nothing to agree with
    prefix = policy.committed[1]
    assert (prefix.mode, prefix.delay, prefix.execute) == (mode, 3, 8)
    c = prefix.actions
    assert c.shape == (2, 15 - 8, 2)  # of 15 usable actions, 8 ran before the request
    assert np.array_equal(c[0, :, 1], np.arange(9, 16)) and np.all(c[:, :, 0] == 0)


def test_a_guided_mode_the_policy_lacks_is_refused():
    from dpctrl.envs.evaluate import evaluate

    class Plain(LabelPolicy):
        overlap_modes = ()
    with pytest.raises(ValueError, match="offers no such mode"):
        evaluate(Plain(), "no-such-env", 2, overlap="rtc")


@pytest.mark.parametrize("delay,execute,match", [(9, 8, "--delay"), (-1, 8, "--delay"), (0, 16, "--execute"),
                                                 (0, 0, "--execute"), (8, 8, "needs 16 actions")])
def test_bad_delay_or_execute_is_refused(delay, execute, match):
    with pytest.raises(ValueError, match=match):
        check_delay(delay, execute, horizon=16, n_obs_steps=2)


def test_evaluate_refuses_before_building_an_env():
    from dpctrl.envs.evaluate import evaluate
    with pytest.raises(ValueError, match="--delay"):
        evaluate(LabelPolicy(), "no-such-env", 2, delay=12)
    with pytest.raises(ValueError, match="overlap"):
        evaluate(LabelPolicy(), "no-such-env", 2, overlap="average")


def test_a_policy_is_refused_on_an_env_without_its_observations():
    """A low-dim policy on a task whose object vector has another size, and an image policy on
    a task without its camera: each refused naming the keys, before an episode runs."""
    import torch
    from dpctrl import envs
    from dpctrl.envs.evaluate import evaluate
    from dpctrl.policy.diffusion_policy import DiffusionPolicy, PolicyConfig
    from dpctrl.policy.normalizer import Normalizer
    from dpctrl.policy.recipes import LOW_DIM_KEYS
    torch.manual_seed(0)
    dims = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "object": 10}
    stats = {k: {"min": np.zeros(d), "max": np.ones(d)} for k, d in {**dims, "action": 7}.items()}
    lift_like = DiffusionPolicy(PolicyConfig(obs_dims=dims, action_dim=7, n_layer=1, n_emb=16),
                                Normalizer.from_stats(stats))
    assert list(dims) == list(LOW_DIM_KEYS)
    with pytest.raises(ValueError, match=r"reads object \(10,\), but 'square' gives .*object \(14,\)"):
        evaluate(lift_like, "square", 1, progress=False)
    cam = DiffusionPolicy(PolicyConfig(obs_dims={"state": 39}, action_dim=4, image_keys=["agentview_image"],
                                       image_size=64, image_crop=58, n_layer=1, n_emb=16),
                          Normalizer.from_stats({"state": {"min": np.zeros(39), "max": np.ones(39)},
                                                 "action": {"min": -np.ones(4), "max": np.ones(4)}}))
    with pytest.raises(ValueError, match=r"reads agentview_image \(64, 64, 3\), but 'metaworld:reach' gives"):
        evaluate(cam, "metaworld:reach", 1, progress=False)
    assert envs.make("square").observation_space["object"].shape == (14,)


def test_smoothness_measures():
    a = np.array([[0, 5], [1, 5], [2, 5], [7, 5], [8, 1]], float)
    assert boundary_jumps(a, [3, 4], [0]) == [5.0, 1.0]
    assert boundary_jumps(a, [4], [0, 1]) == [4.0]
    line = np.arange(10.0)[:, None] * np.array([[1.0, 2.0]])
    assert mean_squared_jerk(line, [0, 1]) == 0.0  # constant velocity: no jerk
    assert np.isnan(mean_squared_jerk(line[:3], [0]))
