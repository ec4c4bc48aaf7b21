"""``dpctrl plan``: collect -> train -> closed-loop eval end to end on a tiny budget."""
import json

import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")

from dpctrl.launch import plan as plan_cli  # noqa: E402
from dpctrl.launch.cli import main  # noqa: E402
from dpctrl.control.tracking import reference, track  # noqa: E402


def test_choices_match_the_modules():
    from dpctrl.envs.maze import MAZES
    from dpctrl.policy.planner import METHODS
    assert plan_cli.MAZES == tuple(MAZES) and plan_cli.PLANNERS == METHODS


def test_tracker_interpolates_the_plan_then_holds_the_goal():
    plan = np.array([[0, 0, 1, 0], [1, 0, 1, 0], [2, 0, 0, 0]], np.float64)
    p, v = reference(plan, 4, 2)
    np.testing.assert_allclose(p, [0.5, 0]) and np.testing.assert_allclose(v, [1, 0])
    assert reference(plan, 4, 8) is None
    a = track(np.array([2.0, 0, 0, 0]), np.array([3.0, 0.0]), plan, 4, 10)  # past the plan: towards the goal
    assert a[0] > 0 and abs(a[1]) < 1e-6


def test_train_then_eval_in_the_control_loop(tmp_path):
    data, out = tmp_path / "umaze.zarr", tmp_path / "run"
    assert main(["plan", "train", "--maze", "umaze", "--planner", "trajdiff", "--data", str(data),
                 "--data-steps", "10000", "--steps", "3", "--batch-size", "8", "--out", str(out), "--no-progress"]) == 0
    cfg = json.loads((out / "checkpoint" / "config.json").read_text())
    assert cfg["format"] == "dpctrl-planner" and cfg["command"].startswith("dpctrl plan train")
    res_path = tmp_path / "eval.json"
    assert main(["plan", "eval", "--maze", "umaze", "--planner", "trajdiff", "--checkpoint", str(out / "checkpoint"),
                 "--episodes", "2", "--replan-every", "100", "--json", str(res_path), "--no-progress"]) == 0
    res = json.loads(res_path.read_text())
    assert res["episodes"] == 2 and 0 <= res["success_rate"] <= 1 and res["expert_success_rate"] == 1.0
    assert res["plan_time_ms"]["plans"] == 2 * 3  # steps 0, 100, 200 of 300
    assert 0 <= res["plan_waypoints_in_walls"] <= 1 and res["n_steps"] == 3
    # the checkpoint holds a trajdiff planner: asking for diffuser is an error, not a silent switch
    assert main(["plan", "eval", "--planner", "diffuser", "--checkpoint", str(out / "checkpoint"),
                 "--episodes", "1", "--no-progress"]) == 2
    # and a UMaze planner is not silently used on another maze
    assert main(["plan", "eval", "--maze", "medium", "--planner", "trajdiff", "--checkpoint", str(out / "checkpoint"),
                 "--episodes", "1", "--no-progress"]) == 2


def test_expert_eval_scores_100(tmp_path):
    res_path = tmp_path / "expert.json"
    assert main(["plan", "eval", "--maze", "umaze", "--planner", "expert", "--episodes", "3", "--json", str(res_path),
                 "--no-progress"]) == 0
    res = json.loads(res_path.read_text())
    assert res["success_rate"] == 1.0 and res["normalized_score"] == pytest.approx(100.0)
    assert res["path_length_ratio"] == pytest.approx(1.0) and res["random_score"] < res["expert_score"]
