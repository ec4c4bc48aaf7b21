import numpy as np
import pytest

from dpctrl import envs
from dpctrl.envs.rollout import expert_episode, run_episode


@pytest.fixture(scope="module")
def lift():
    env = envs.make("lift")
    yield env
    env.close()


def test_observation_matches_space_and_seeding(lift):
    obs, info = lift.reset(seed=7)
    assert set(obs) == set(lift.observation_space.spaces)
    for k, v in obs.items():
        assert v.shape == lift.observation_space[k].shape, k
    assert info == {"success": False}
    again, _ = lift.reset(seed=7)
    other, _ = lift.reset(seed=8)
    np.testing.assert_array_equal(obs["object"], again["object"])
    assert not np.allclose(obs["object"][:3], other["object"][:3])
    obs, reward, terminated, truncated, info = lift.step(np.zeros(7))
    assert reward == 0.0 and not terminated and not truncated and info == {"success": False}


def test_bad_actions_and_names(lift):
    lift.reset(seed=0)
    with pytest.raises(ValueError, match="non-finite"):
        lift.step(np.array([np.nan, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="shape"):
        lift.step(np.zeros(6))
    with pytest.raises(ValueError, match="unknown env 'push'"):
        envs.make("push")


def test_truncation_at_max_steps():
    env = envs.make("lift", max_steps=3)
    env.reset(seed=0)
    flags = [env.step(np.zeros(7))[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_images_are_84px_and_right_way_up():
    env = envs.make("lift", images=True)
    obs, _ = env.reset(seed=0)
    img = obs["agentview_image"]
    assert img.shape == (84, 84, 3) and img.dtype == np.uint8
    # agentview looks at the robot across the table: the bright table fills the bottom of an
    # upright image, the robot and the dark backdrop the top. An OpenGL (bottom-up) buffer
    # would show the opposite.
    assert img[-10:].mean() > img[:10].mean() + 40
    env.close()


@pytest.mark.parametrize("task, min_success", [("lift", 10), ("stack", 8), ("can", 9), ("square", 9)])
def test_expert_success_few_seeds(task, min_success):
    env = envs.make(task)
    expert = envs.expert(task)
    eps = [expert_episode(env, expert, seed) for seed in range(10)]
    assert sum(e.success for e in eps) >= min_success
    assert all(e.steps["action"].shape == (e.length, 7) for e in eps)
    grip = np.concatenate([e.steps["action"][:, 6] for e in eps])
    assert set(np.unique(grip)) <= {-1.0, 1.0}  # binary gripper dimension
    env.close()


def test_expert_paths_vary_for_the_same_scene(lift):
    """Same object placement, different expert seeds: different paths that both succeed."""
    paths = []
    for expert_seed in (1, 2):
        expert = envs.expert("lift")
        ep = run_episode(lift, expert.act, seed=5, reset_policy=lambda _s, e=expert, k=expert_seed: e.reset(k))
        assert ep.success
        paths.append(ep.steps["robot0_eef_pos"])
    n = min(len(p) for p in paths)
    assert np.abs(paths[0][:n] - paths[1][:n]).max() > 0.01


@pytest.mark.slow
@pytest.mark.parametrize("task, min_rate", [("lift", 0.95), ("stack", 0.80), ("can", 0.95), ("square", 0.95)])
def test_expert_success_100_seeds(task, min_rate):
    env = envs.make(task)
    expert = envs.expert(task)
    rate = np.mean([expert_episode(env, expert, seed).success for seed in range(100)])
    print(f"{task} expert success over 100 seeded episodes: {rate:.2f}")
    assert rate >= min_rate


@pytest.mark.parametrize("task, beside", [("lift", 0.03), ("stack", 0.03), ("can", 0.045)])
def test_missing_expert_closes_beside_the_object_then_regrasps(task, beside):
    """A recovery demonstration: the first close catches nothing (the object has not moved when
    the recovery part starts), the expert notices, reopens, and takes the object on the second
    try; the regular expert of the same seed takes it on its first try."""
    from dpctrl.envs.robosuite_tasks import OBJECT_POSE
    env, i = envs.make(task), OBJECT_POSE[task]
    try:
        for seed in (50_000, 50_001, 50_002):
            missing = envs.expert(task, miss=True)
            ep = expert_episode(env, missing, seed)
            assert ep.success and missing.regrasps == 1
            start = missing.recovery_start
            obj, eef = ep.steps["object"][:, i:i + 3], ep.steps["robot0_eef_pos"]
            assert np.abs(obj[start] - obj[0]).max() < 0.012  # the miss did not push the object
            assert np.linalg.norm(eef[start, :2] - obj[start, :2]) > beside  # the gripper is beside it
            assert ep.steps["action"][start, -1] == 1.0  # closing
            reopened = np.flatnonzero(ep.steps["action"][start:, -1] < 0)
            assert reopened.size, "the expert never reopened the gripper after the miss"
            regular = envs.expert(task)
            assert expert_episode(env, regular, seed).success and regular.regrasps == 0
            assert regular.recovery_start is None
    finally:
        env.close()


def test_recoveries_only_where_the_expert_can_miss():
    assert envs.recovery_tasks() == ("lift", "stack", "can")
    envs.check_recoveries("robosuite:can", 3)
    envs.check_recoveries("square", 0)  # none asked: nothing to refuse
    for name in ("square", "robosuite:square", "metaworld:reach"):
        with pytest.raises(ValueError, match="exist for lift, stack, can only"):
            envs.check_recoveries(name, 1)
    with pytest.raises(ValueError, match=">= 0"):
        envs.check_recoveries("lift", -1)


@pytest.mark.parametrize("task, pose_key", [("can", "Can"), ("square", "SquareNut")])
def test_can_and_square_object_layout(task, pose_key):
    """robomimic's low-dim keys; ``object`` is robosuite's object-state, its world pose at
    OBJECT_POSE; the experts' fixed targets are where the task's success test looks."""
    from dpctrl.envs.experts import CAN_BIN, SQUARE_PEG
    from dpctrl.envs.robosuite_tasks import OBJECT_POSE
    env = envs.make(task)
    try:
        obs, _ = env.reset(seed=3)
        obs, *_ = env.step(np.zeros(7))
        assert obs["object"].shape == (14,)
        i = OBJECT_POSE[task]
        np.testing.assert_allclose(obs["object"][i:i + 3], env.raw_obs[f"{pose_key}_pos"])
        np.testing.assert_allclose(obs["object"][i + 3:i + 7], env.raw_obs[f"{pose_key}_quat"])
        np.testing.assert_allclose(obs["object"][:3], env.raw_obs[f"{pose_key}_to_robot0_eef_pos"], atol=1e-6)
        rs = env._env
        if task == "can":  # the can's quarter of bin 2: not_in_bin is False there (below the rim)
            assert not rs.not_in_bin(np.r_[CAN_BIN, 0.86], rs.object_to_id["can"])
            assert rs.not_in_bin(np.r_[CAN_BIN, 0.86], rs.object_to_id["milk"])
        else:
            np.testing.assert_allclose(rs.sim.data.body_xpos[rs.peg1_body_id][:2], SQUARE_PEG)
    finally:
        env.close()


def test_square_expert_regrasps_after_closing_on_air():
    """Knock the nut away from under the closing fingers: the expert sees them shut on nothing
    and starts over, then puts the nut on the peg."""
    env, expert = envs.make("square"), envs.expert("square")
    try:
        obs, _ = env.reset(seed=0)
        expert.reset(0)
        moved, success = False, False
        for _ in range(400):
            if expert._phase == 2 and not moved:  # the fingers start closing: move the nut 10 cm away
                rs = env._env
                joint = rs.sim.model.get_joint_qpos_addr(rs.nuts[0].joints[0])[0]
                rs.sim.data.qpos[joint] += 0.1
                rs.sim.forward()
                moved = True
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            if terminated or truncated:
                success = info["success"]
                break
        assert moved and expert.regrasps >= 1 and success
    finally:
        env.close()
