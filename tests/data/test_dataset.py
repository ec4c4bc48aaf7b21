import numpy as np
import pytest
import torch

from dpctrl.data import ReplayBuffer
from dpctrl.data.dataset import WindowDataset, split_episodes, window_starts


def _buffer(tmp_path, lengths, name="rb.zarr"):
    rb = ReplayBuffer.create(tmp_path / name)
    for i, n in enumerate(lengths):
        t = np.arange(n, dtype=np.float32)
        rb.add_episode({"obs": np.stack([t, np.full(n, i, np.float32)], 1),
                        "action": np.stack([t * 10, np.full(n, i, np.float32)], 1),
                        "img": np.repeat(t.astype(np.uint8)[:, None, None, None], 3, axis=3)})
    return rb


def test_window_padding_matches_diffusion_policy(tmp_path):
    To, T, Ta = 2, 6, 3
    ds = WindowDataset(_buffer(tmp_path, [10, 4]), obs_keys=["obs"], n_obs_steps=To, horizon=T,
                       n_action_steps=Ta, image_keys=["img"])
    # per episode: starts from -(To-1) to L - T + (Ta-1)
    assert len(ds) == (10 - 6 + 2 + 1 + 1) + (4 - 6 + 2 + 1 + 1)
    first = ds[0]
    # first window: obs step 0 repeated (edge pad before), actions 0,0,1,2,3,4
    np.testing.assert_array_equal(first["obs"]["obs"][:, 0], [0, 0])
    np.testing.assert_array_equal(first["action"][:, 0], [0, 0, 10, 20, 30, 40])
    assert first["obs"]["img"].shape == (2, 1, 1, 3) and first["obs"]["img"].dtype == torch.uint8
    last_of_ep0 = ds[7]
    # last window of episode 0 starts at 10-6+2=6: steps 6..11 clipped to 9 (edge pad after)
    np.testing.assert_array_equal(last_of_ep0["action"][:, 0], [60, 70, 80, 90, 90, 90])
    # the last action of the episode is among the executed actions of some window
    executed = ds.steps(7)[To - 1: To - 1 + Ta]
    assert 9 in executed
    # a short episode (shorter than the horizon) still yields windows, all within episode 1
    ep1 = [ds[i] for i in range(8, len(ds))]
    assert all((w["action"][:, 1] == 1).all() for w in ep1)
    np.testing.assert_array_equal(ep1[0]["action"][:, 0], [0, 0, 10, 20, 30, 30])


def test_window_starts_and_split():
    rows = window_starts([5], horizon=3, pad_before=1, pad_after=0)
    assert rows[:, 1].tolist() == [-1, 0, 1, 2]
    train, val = split_episodes(10, 0.2, seed=1)
    assert len(val) == 2 and len(train) == 8 and set(train) | set(val) == set(range(10))
    assert split_episodes(10, 0.2, seed=1)[1].tolist() == val.tolist()


def test_stats_cover_selected_episodes(tmp_path):
    ds = WindowDataset(_buffer(tmp_path, [10, 4, 6]), obs_keys=["obs"], episodes=[1, 2], horizon=4, n_action_steps=2)
    st = ds.stats()
    np.testing.assert_array_equal(st["action"]["min"], [0, 1])
    np.testing.assert_array_equal(st["action"]["max"], [50, 2])


def test_extra_buffers_add_their_episodes(tmp_path):
    """Episodes from a second store (recovery episodes) join the windows and the statistics."""
    main, other = _buffer(tmp_path, [10, 4]), _buffer(tmp_path, [5, 7, 6], name="other.zarr")
    only = WindowDataset(main, obs_keys=["obs"], episodes=[0], horizon=4, n_action_steps=2)
    both = WindowDataset(main, obs_keys=["obs"], episodes=[0], horizon=4, n_action_steps=2, extra=[(other, [2])])
    assert len(both) == len(only) + (6 - 4 + 1 + 1 + 1)
    assert both._lengths.tolist() == [10, 6]
    last = both[len(both) - 1]  # a window of the extra episode: other's episode 2 (second column = 2)
    assert (last["action"][:, 1] == 2).all() and last["action"][-1, 0] == 50
    np.testing.assert_array_equal(both.stats()["action"]["max"], [90, 2])
    with pytest.raises(ValueError, match="other.zarr"):
        WindowDataset(main, obs_keys=["obs"], image_keys=["img"], extra=[(_strip_img(tmp_path), [0])])


def _strip_img(tmp_path):
    rb = ReplayBuffer.create(tmp_path / "other.zarr", overwrite=True)
    rb.add_episode({"obs": np.zeros((3, 2), np.float32), "action": np.zeros((3, 2), np.float32)})
    return rb


def test_bad_configuration(tmp_path):
    rb = _buffer(tmp_path, [5])
    with pytest.raises(ValueError, match="nope"):
        WindowDataset(rb, obs_keys=["nope"])
    with pytest.raises(ValueError, match="n_action_steps"):
        WindowDataset(rb, obs_keys=["obs"], n_obs_steps=2, horizon=4, n_action_steps=4)


def test_get_batch_equals_items(tmp_path):
    ds = WindowDataset(_buffer(tmp_path, [10, 4, 7]), obs_keys=["obs"], n_obs_steps=2, horizon=6,
                       n_action_steps=3, image_keys=["img"])
    idx = np.array([0, 5, len(ds) - 1, 3, 3])
    batch = ds.get_batch(idx)
    for row, i in enumerate(idx):
        item = ds[int(i)]
        torch.testing.assert_close(batch["action"][row], item["action"])
        for k in ("obs", "img"):
            torch.testing.assert_close(batch["obs"][k][row], item["obs"][k])
    assert batch["obs"]["img"].shape == (5, 2, 1, 1, 3)


def test_goal_segments_stop_at_the_goal_and_rest_there(tmp_path):
    from dpctrl.data.samples import GoalSegments
    rb = ReplayBuffer.create(tmp_path / "g.zarr")
    # one run: heading for goal A for steps 0-5 (reached at step 5), then for B until the end
    state = np.zeros((12, 4), np.float32)
    state[:, 0] = np.arange(12)
    goal = np.zeros((12, 2), np.float32)
    goal[:6] = [100.0, 0.0]
    goal[6:] = [200.0, 0.0]
    rb.add_episode({"state": state, "goal": goal})
    ds = GoalSegments(rb, n_points=4, stride=2)
    # starts 0..5 head for A (segment ends with the state after step 5); later steps never reach B
    assert ds.starts.tolist() == [0, 1, 2, 3, 4, 5] and ds.ends.tolist() == [7] * 6
    traj = ds.get_batch(np.array([0, 4]))["traj"].numpy()
    assert traj[0, :, 0].tolist() == [0, 2, 4, 100]  # states 0, 2, 4 (6 < 7 too, but the last point is the goal)
    assert traj[1, :, 0].tolist() == [4, 6, 100, 100] and (traj[1, 2:, 2:] == 0).all()  # then at rest
    assert len(GoalSegments(rb, n_points=2, stride=2)) == 2  # horizon 3 steps: only starts 4 and 5 fit
