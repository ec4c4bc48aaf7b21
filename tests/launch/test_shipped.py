"""The checkpoint that ships with the package: it loads by name, is small, and works."""
import json

from launch.evaluate import evaluate
from policy import checkpoint


def test_shipped_lift_is_small_and_documented():
    assert "lift" in checkpoint.shipped()
    d = checkpoint.SHIPPED_DIR / "lift"
    assert (d / "model.safetensors").stat().st_size <= 5 * 1024 * 1024
    recipe = json.loads((d / "recipe.json").read_text())
    assert recipe["command"].startswith("dpctl train --task lift") and recipe["shipped"]["dtype"] == "float16"


def test_shipped_lift_solves_held_out_seeds():
    policy = checkpoint.load("lift")
    assert policy.cfg.discrete_action_dims == [6]
    res = evaluate(policy, "lift", episodes=6, seed_start=100_000, batch=6, progress=False)
    assert res["success_rate"] >= 4 / 6 and res["nfe_per_chunk"] == 10
