import json

import numpy as np
import pytest

from data import ReplayBuffer
from launch.cli import main
from launch.collect import collect


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
