"""highway-env driving tasks: the fork scene, the experts, and the recorded targets."""
import numpy as np
import pytest

pytest.importorskip("highway_env")

from dpctrl.envs.highway import N_AGENTS, N_WAYPOINTS, DriveTask, future_in_frame, record_expert  # noqa: E402


def test_fork_scene_has_a_slow_leader_ahead_and_free_side_lanes():
    env = DriveTask("fork")
    obs, info = env.reset(seed=7)
    assert obs["ego"].shape == (4,) and obs["agents"].shape == (N_AGENTS, 5)
    assert obs["ego"][0] == pytest.approx(4.0) and info["lane"] == 1  # middle of 3 lanes
    present = obs["agents"][obs["agents"][:, 0] > 0]
    assert len(present) == 1  # the leader, nothing in the side lanes
    dx, dy, dvx = present[0, 1:4]
    assert 25 <= dx <= 40 and abs(dy) < 0.1 and dvx < -5  # ahead, same lane, much slower


def test_fork_expert_goes_both_ways_and_never_crashes():
    sides = []
    for seed in range(8):
        data, meta = record_expert("fork", seed)
        assert not meta["crashed"] and len(data["future"]) > 0
        end_y = data["future"][0, -1, 1]  # 4 s after the first frame, ego frame (+y right)
        assert np.sign(end_y) == meta["side"] and abs(end_y) == pytest.approx(4.0, abs=0.5)
        sides.append(meta["side"])
    assert set(sides) == {-1, 1}


def test_future_waypoints_are_relative_and_road_aligned():
    poses = np.zeros((50, 3))
    poses[:, 0] = 100.0 + np.arange(50) * 2.0  # 20 m/s along the road
    poses[:, 1] = 4.0 + np.arange(50) * 0.1  # drifting right at 1 m/s
    poses[:, 2] = 0.05  # the heading does not rotate the frame
    fut = future_in_frame(poses, 9)  # needs 40 steps after it
    assert fut.shape == (N_WAYPOINTS, 2)
    np.testing.assert_allclose(fut[:, 0], 10.0 * np.arange(1, 9), atol=1e-4)  # 0.5 s apart
    np.testing.assert_allclose(fut[:, 1], 0.5 * np.arange(1, 9), atol=1e-4)


def test_traffic_expert_drives_and_records():
    data, meta = record_expert("traffic", 3)
    assert meta["steps"] == 300 and meta["progress_m"] > 400
    if not meta["crashed"]:
        assert data["agents"].shape == (len(data["future"]), N_AGENTS, 5)


def test_bad_actions_are_refused():
    env = DriveTask("fork")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="unknown driving scenario"):
        DriveTask("roundabout")


def test_expert_data_shows_recoveries_from_kicks():
    data, meta = record_expert("fork", 4)
    assert meta["kicks"] == 2
    y = data["ego"][:, 0]
    off = np.abs(y - 4.0 * np.round(y / 4.0)) > 0.25  # away from a lane centre (0, 4, 8 m)...
    end = y + data["future"][:, -1, 1]
    assert off[20:].any()  # ...after the lane change: only the kicks put it there
    recovered = np.abs(end - 4.0 * np.round(end / 4.0)) < 0.3
    assert recovered[20:][off[20:]].all()  # and 4 s later the expert is back on a lane centre
    # the samples whose 4 s future spans a kick are dropped
    clean, _ = record_expert("fork", 4, kicks=False)
    assert len(clean["future"]) > len(data["future"])
