"""``dpctrl drive``: collect -> train -> closed-loop eval end to end, on a tiny budget."""
import json

import pytest

pytest.importorskip("highway_env")

from dpctrl.launch import drive as drive_cli  # noqa: E402
from dpctrl.launch.cli import main  # noqa: E402


def test_choices_match_the_modules():
    from dpctrl.envs.highway import SCENARIOS
    from dpctrl.policy.drive import METHODS
    assert drive_cli.SCENARIOS == SCENARIOS and drive_cli.PLANNERS == METHODS


def test_train_then_eval_in_the_control_loop(tmp_path):
    data, out = tmp_path / "fork.zarr", tmp_path / "run"
    assert main(["drive", "train", "--scenario", "fork", "--method", "anchored", "--demos", "3", "--steps", "4",
                 "--batch-size", "16", "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    cfg = json.loads((out / "checkpoint" / "config.json").read_text())
    assert cfg["format"] == "dpctrl-drive" and cfg["demos"] == 3 and cfg["command"].startswith("dpctrl drive train")
    res_path = tmp_path / "eval.json"
    assert main(["drive", "eval", "--scenario", "fork", "--checkpoint", str(out / "checkpoint"), "--episodes", "2",
                 "--json", str(res_path), "--no-progress"]) == 0
    res = json.loads(res_path.read_text())
    assert res["episodes"] == 2 and 0 <= res["collision_rate"] <= 1 and 0 <= res["top3_both_lanes"] <= 1
    assert res["plan_latency_ms"]["plans"] >= 2 and res["n_steps"] == 2 and 0 <= res["diversity"] < 1
    assert sum(res["lane_change"].values()) == 2
    assert main(["results", "drive", str(res_path)]) == 0  # tabulates it
    assert main(["results", "drive", str(out / "checkpoint" / "config.json")]) == 2  # not an eval report
    # the checkpoint holds an anchored planner: asking for another method is an error, not a silent switch
    assert main(["drive", "eval", "--method", "vanilla", "--checkpoint", str(out / "checkpoint"),
                 "--episodes", "1", "--no-progress"]) == 2


def test_expert_eval_never_crashes_on_the_fork(tmp_path):
    res_path = tmp_path / "expert.json"
    assert main(["drive", "eval", "--method", "expert", "--episodes", "4", "--json", str(res_path),
                 "--no-progress"]) == 0
    res = json.loads(res_path.read_text())
    assert res["collision_rate"] == 0 and res["lane_change"]["keep"] == 0 and "plan_latency_ms" not in res
