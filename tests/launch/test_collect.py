import json
from pathlib import Path

import numpy as np
import pytest

from dpctrl.data import ReplayBuffer
from dpctrl.launch.cli import main
from dpctrl.data.collect import collect


def test_collect_resumes_and_records_metadata(tmp_path):
    out = tmp_path / "lift.zarr"
    rep = collect("lift", 2, out, seed=10, progress=False)
    assert rep.episodes == 2 and rep.added == 2 and rep.steps_added > 0
    rep = collect("lift", 3, out, seed=10, progress=False)  # resume: one more, next seed
    assert rep.added == 1
    rb = ReplayBuffer.open(out)
    assert rb.n_episodes == 3
    assert rb.meta_column("seed").tolist() == [10, 11, 12]
    assert rb.meta_column("success").all()
    assert rb.meta_column("length").tolist() == rb.episode_lengths.tolist()
    assert rb.keys() == ["action", "object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]
    assert collect("lift", 3, out, progress=False).added == 0  # already complete
    with pytest.raises(ValueError, match="stack"):
        collect("stack", 4, out, progress=False)


def test_collect_images(tmp_path):
    rep = collect("lift", 1, tmp_path / "img.zarr", images=True, progress=False)
    ep = ReplayBuffer.open(tmp_path / "img.zarr").episode(0)
    assert ep["agentview_image"].shape == (rep.steps_added, 84, 84, 3)
    assert ep["agentview_image"].dtype == np.uint8


def test_collect_two_cameras_and_refuse_mixing(tmp_path):
    out = tmp_path / "cams.zarr"
    assert main(["collect", "--env", "lift", "--episodes", "1", "--out", str(out), "--no-progress",
                 "--cameras", "agentview,robot0_eye_in_hand"]) == 0  # --cameras implies --images
    rb = ReplayBuffer.open(out)
    ep = rb.episode(0)
    assert ep["agentview_image"].shape == ep["robot0_eye_in_hand_image"].shape == (len(ep["action"]), 84, 84, 3)
    assert not np.array_equal(ep["agentview_image"], ep["robot0_eye_in_hand_image"])
    assert rb.attrs["cameras"] == ["agentview", "robot0_eye_in_hand"]
    with pytest.raises(ValueError, match="cameras"):  # one camera's episodes never join a two-camera store
        collect("lift", 2, out, images=True, progress=False)
    assert ReplayBuffer.open(out).n_episodes == 1


def test_image_store_from_before_cameras_were_recorded_counts_as_agentview(tmp_path):
    out = tmp_path / "old.zarr"
    rb = ReplayBuffer.open_or_create(out)
    rb.set_attrs({"env": "lift", "images": True})
    assert collect("lift", 1, out, images=True, progress=False).added == 1
    with pytest.raises(ValueError, match="cameras"):
        collect("lift", 2, out, images=True, cameras=("robot0_eye_in_hand",), progress=False)


def test_camera_names():
    from dpctrl import envs
    assert envs.cameras_of(["agentview_image", "robot0_eye_in_hand_image"]) == ("agentview", "robot0_eye_in_hand")
    assert envs.cameras_of([]) == envs.DEFAULT_CAMERAS
    assert envs.parse_cameras(" agentview , robot0_eye_in_hand") == ("agentview", "robot0_eye_in_hand")
    with pytest.raises(ValueError, match="<camera>_image"):
        envs.cameras_of(["agentview"])
    for bad in ("", "a,a", " , "):
        with pytest.raises(ValueError, match="--cameras"):
            envs.parse_cameras(bad)
    from dpctrl.launch.train import train_task
    with pytest.raises(ValueError, match="--cameras is for robosuite"):
        train_task("metaworld:reach", 1, "unused", images=True, cameras=("agentview",))
    with pytest.raises(ValueError, match="--cameras is for robosuite"):
        collect("metaworld:reach", 1, "unused.zarr", images=True, cameras=("robot0_eye_in_hand",))
    assert not Path("unused").exists() and not Path("unused.zarr").exists()


def test_cli_collect_json_and_errors(tmp_path, capsys):
    js = tmp_path / "r.json"
    assert main(["collect", "--env", "lift", "--episodes", "1", "--out", str(tmp_path / "a.zarr"),
                 "--json", str(js), "--no-progress"]) == 0
    report = json.loads(js.read_text())
    assert report["episodes"] == 1 and report["steps_per_s"] > 0
    assert "1 episodes" in capsys.readouterr().out
    assert main(["collect", "--env", "nope", "--episodes", "1", "--out", str(tmp_path / "b.zarr")]) == 2
    assert "unknown env 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "b.zarr").exists()


def test_two_camera_image_policy_trains_and_evaluates(tmp_path):
    """The image recipe's cameras (agentview + wrist, the default) reach the data store, the
    policy's image keys, and the evaluation envs; its recovery episodes get a store beside the
    demos' with the same cameras."""
    from dpctrl.launch.train import train_task
    from dpctrl.policy.recipes import IMAGES
    assert IMAGES.recoveries > 0
    rec = train_task("lift", 2, tmp_path / "run", images=True, demos=1, recoveries=1,
                     eval_episodes=1, data_dir=tmp_path, progress=False, batch_size=4)
    assert (tmp_path / "lift_images_agentview+robot0_eye_in_hand.zarr").is_dir()
    recov = ReplayBuffer.open(tmp_path / "lift_images_agentview+robot0_eye_in_hand_recoveries.zarr")
    assert recov.attrs["cameras"] == ["agentview", "robot0_eye_in_hand"] and recov.n_episodes == 1
    assert rec["data"]["recoveries"]["episodes"] == 1
    cfg = json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())["policy"]
    assert cfg["image_keys"] == ["agentview_image", "robot0_eye_in_hand_image"]
    assert rec["final_eval"]["episodes"] == 1
    js = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "checkpoint"), "--env", "lift", "--episodes", "1",
                 "--max-steps", "10", "--threads", "1", "--no-progress", "--json", str(js)]) == 0
    assert json.loads(js.read_text())["per_episode"][0]["length"] == 10


def test_collect_recoveries_keeps_the_part_from_the_miss_on(tmp_path):
    out = tmp_path / "rec.zarr"
    rep = collect("lift", 2, out, seed=50_000, recoveries=True, progress=False)
    assert rep.episodes == 2 and rep.successes == 2
    rb = ReplayBuffer.open(out)
    assert rb.attrs["recoveries"] is True and "missed" in rb.attrs["collector"]
    from dpctrl import envs
    from dpctrl.envs.rollout import expert_episode
    env = envs.make("lift")
    for i, seed in enumerate(rb.meta_column("seed")):
        expert = envs.expert("lift", miss=True)
        full = expert_episode(env, expert, int(seed))  # the same seed again: the stored part is its tail
        stored = rb.episode(i)
        # (two env instances agree to ~1e-3, not bit for bit, so compare the start and the shape)
        np.testing.assert_allclose(stored["robot0_eef_pos"][0], full.steps["robot0_eef_pos"][expert.recovery_start],
                                   atol=5e-3)
        assert abs(len(stored["action"]) - (full.length - expert.recovery_start)) <= 2
        assert stored["action"][0, -1] == 1.0 and (stored["action"][:, -1] < 0).any()  # closing, later reopens
        assert np.linalg.norm(stored["robot0_eef_pos"][0, :2] - stored["object"][0, :2]) > 0.03
    # recovery episodes never join a store of regular demonstrations, nor the reverse
    with pytest.raises(ValueError, match="recoveries"):
        collect("lift", 3, out, progress=False)
    collect("lift", 1, tmp_path / "demos.zarr", progress=False)
    with pytest.raises(ValueError, match="recoveries"):
        collect("lift", 2, tmp_path / "demos.zarr", recoveries=True, progress=False)
    with pytest.raises(ValueError, match="lift, stack, can only"):
        collect("square", 1, tmp_path / "s.zarr", recoveries=True, progress=False)
    assert ReplayBuffer.open(out).n_episodes == 2 and not (tmp_path / "s.zarr").exists()


def test_train_with_recoveries_reads_both_stores(tmp_path):
    from dpctrl.launch.train import train_task
    rec = train_task("lift", 2, tmp_path / "run", demos=1, recoveries=1, eval_episodes=1, data_dir=tmp_path,
                     progress=False, batch_size=4)
    demo = ReplayBuffer.open(tmp_path / "lift.zarr")
    recov = ReplayBuffer.open(tmp_path / "lift_recoveries.zarr")
    assert rec["data"]["steps"] == demo.n_steps + recov.n_steps
    assert rec["data"]["recoveries"]["episodes"] == 1
    with pytest.raises(ValueError, match="lift, stack, can only"):
        train_task("square", 2, tmp_path / "s", recoveries=1, data_dir=tmp_path, progress=False)
