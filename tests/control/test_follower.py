"""The trajectory follower tracks plans on highway-env's own vehicle model."""
import numpy as np
import pytest

from dpctrl.control.follower import follow


def test_straight_plan_at_constant_speed_needs_no_commands():
    plan = np.stack([20.0 * 0.5 * np.arange(1, 9), np.zeros(8)], axis=1)
    cmd = follow(plan, speed=20.0, n_steps=10, dt=0.1)
    assert cmd.shape == (10, 2)
    np.testing.assert_allclose(cmd, 0.0, atol=1e-6)


def test_slower_plan_brakes_and_left_plan_steers_left():
    slow = np.stack([15.0 * 0.5 * np.arange(1, 9), np.zeros(8)], axis=1)
    assert (follow(slow, speed=20.0, n_steps=3, dt=0.1)[:, 0] < 0).all()
    left = np.stack([20.0 * 0.5 * np.arange(1, 9), -np.minimum(np.arange(1, 9), 4.0)], axis=1)
    assert follow(left, speed=20.0, n_steps=1, dt=0.1)[0, 1] < 0  # -y is left


def test_heading_is_corrected_towards_a_road_aligned_plan():
    plan = np.stack([20.0 * 0.5 * np.arange(1, 9), np.zeros(8)], axis=1)  # straight along the road
    assert follow(plan, 20.0, 1, 0.1, heading=0.1)[0, 1] < 0  # pointing right of the road: steer left
    assert follow(plan, 20.0, 1, 0.1, heading=-0.1)[0, 1] > 0


def test_bad_plans_are_refused():
    with pytest.raises(ValueError):
        follow(np.full((8, 2), np.nan), 20.0, 5, 0.1)
    with pytest.raises(ValueError):
        follow(np.zeros(8), 20.0, 5, 0.1)


def test_tracks_a_lane_change_in_highway_env():
    pytest.importorskip("highway_env")
    from dpctrl.envs.highway import DriveTask, future_in_frame
    env = DriveTask("fork")
    obs, _ = env.reset(seed=5)
    v = float(obs["ego"][1])
    t = 0.5 * np.arange(1, 9)
    s = np.clip(t / 3.0, 0, 1)
    plan = np.stack([v * t, -4 * (3 * s ** 2 - 2 * s ** 3)], axis=1)  # into the left lane in 3 s
    poses = [env.pose()]
    for a in follow(plan, v, 40, 0.1):
        env.step(a)
        poses.append(env.pose())
    driven = future_in_frame(np.asarray(poses), 0)
    assert not env.vehicle.crashed
    assert np.abs(driven - plan).max() < 1.5  # metres, over 4 s at ~25 m/s
    assert env.vehicle.lane_index[2] == 0
