"""The checkpoint that ships with the package: it loads by name, is small, and works."""
import json

import pytest

from dpctrl.policy.diffusion_policy import DiffusionPolicy
from dpctrl.envs.evaluate import evaluate
from dpctrl.policy import checkpoint


def test_shipped_lift_is_small_and_documented():
    assert "lift" in checkpoint.shipped()
    d = checkpoint.SHIPPED_DIR / "lift"
    assert (d / "model.safetensors").stat().st_size <= 5 * 1024 * 1024
    recipe = json.loads((d / "recipe.json").read_text())
    assert recipe["command"].startswith("dpctrl train --task lift") and recipe["shipped"]["dtype"] == "float16"


def test_shipped_lift_solves_held_out_seeds():
    policy = DiffusionPolicy.load("lift")
    assert policy.cfg.discrete_action_dims == [6]
    res = evaluate(policy, "lift", episodes=6, seed_start=100_000, batch=6, progress=False)
    assert res["success_rate"] >= 4 / 6 and res["nfe_per_chunk"] == 10


# over 200 seeds from 100000: 0.970, 0.935, 0.660; seeds 100000..100003: 4, 4 and 2 successes
@pytest.mark.parametrize("task, min_success", [("stack", 3), ("can", 3), ("square", 2)])
def test_shipped_benchmark_task_policies(task, min_success):
    """Stack and robomimic's Can and Square, low-dim: small, trained by the recipe's command,
    calibrated for RTI and BAC, and solving held-out seeds."""
    d = checkpoint.SHIPPED_DIR / task
    assert (d / "model.safetensors").stat().st_size <= 5 * 1024 * 1024
    recipe = json.loads((d / "recipe.json").read_text())
    assert recipe["command"].startswith(f"dpctrl train --task {task}") and recipe["shipped"]["dtype"] == "float16"
    assert json.loads((d / "rti.json").read_text())["recommended_k"] >= 0
    assert json.loads((d / "cache_bac.json").read_text())["schedules"]
    policy = DiffusionPolicy.load(task)
    res = evaluate(policy, task, episodes=4, seed_start=100_000, batch=4, progress=False)
    assert res["success_rate"] >= min_success / 4 and res["nfe_per_chunk"] == 10


def test_shipped_drive_fork_keeps_both_lanes_among_its_top_3():
    pytest.importorskip("highway_env")
    from dpctrl.envs.highway import DriveTask
    from dpctrl.policy.drive import DrivePlanner
    from dpctrl.policy.trajectories import lateral_side
    d = checkpoint.SHIPPED_DIR / "drive-fork"
    assert (d / "model.safetensors").stat().st_size <= 5 * 1024 * 1024
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["command"].startswith("dpctrl drive train --scenario fork --method anchored")
    planner = DrivePlanner.load("drive-fork")
    task = DriveTask("fork")
    both = 0
    for seed in range(100_000, 100_010):
        obs, _ = task.reset(seed=seed)
        plan = planner.plan({k: v[None] for k, v in obs.items()})
        both += {-1, 1} <= set(lateral_side(plan.top(3)[0]).tolist())
    assert both >= 8


def test_shipped_umaze_planners_solve_held_out_seeds():
    pytest.importorskip("gymnasium_robotics")
    from dpctrl.launch.plan import evaluate
    for method in ("diffuser", "trajdiff"):
        name = f"plan-umaze-{method}"
        d = checkpoint.SHIPPED_DIR / name
        assert (d / "model.safetensors").stat().st_size <= 5 * 1024 * 1024
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["command"].startswith(f"dpctrl plan train --maze umaze --planner {method}")
        res = evaluate("umaze", method, episodes=4, checkpoint=name, progress=False)
        assert res["success_rate"] >= 3 / 4 and res["plan_waypoints_in_walls"] <= 0.1, (name, res["success_rate"])


def test_shipped_pad_reach_solves_held_out_seeds_in_the_control_loop():
    pytest.importorskip("metaworld")
    from dpctrl.control.session import run_loop
    from dpctrl.policy.pad import PadPolicy
    d = checkpoint.SHIPPED_DIR / "pad-reach"
    assert (d / "model.safetensors").stat().st_size <= 5 * 1024 * 1024
    recipe = json.loads((d / "recipe.json").read_text())
    assert recipe["command"].startswith("dpctrl train --task metaworld:reach --policy pad")
    policy = PadPolicy.load("pad-reach")
    policy.set_task("reach")
    res = evaluate(policy, "metaworld:reach", episodes=4, seed_start=100_000, batch=4, progress=False)
    assert res["success_rate"] >= 3 / 4
    # the same checkpoint as a fixed-rate controller (simulated robot, async inference)
    rep = run_loop(policy, "sim:metaworld:reach", rate_hz=20.0, async_inference=True, episodes=1, seed_start=100_000,
                   status=False, images=True)
    assert rep["episodes"] == 1 and rep["policy_errors"] == 0 and rep["cycles"] > 0
