"""``dpctrl view``, ``dpctrl run --rerun`` and the training curves, run the way a user runs them
(console script, subprocess, a temporary directory, tiny sizes); what they wrote is read back
with Rerun's and TensorBoard's own readers."""
import json

import pytest

pytest.importorskip("rerun")
pytest.importorskip("tensorboard")

from test_commands import dpctrl, pytestmark, work  # noqa: E402,F401  (the same harness and skip)

from dpctrl.data.view import read_rrd  # noqa: E402
from dpctrl.policy.curves import read_curves  # noqa: E402


def test_view_a_demo_store_and_refuse_a_bad_index(work):
    dpctrl(work, "collect", "--env", "lift", "--episodes", "2", "--out", "demos.zarr", "--no-progress")
    res = dpctrl(work, "view", "demos.zarr", "--episodes", "1", "--out", "demos.rrd", "--json", "view.json")
    summary = json.loads((work / "view.json").read_text())
    assert "1 episodes" in res.stdout and summary["episodes"] == [1] and not summary["loop_record"]
    got = read_rrd(work / "demos.rrd")
    assert len(got["/episode_1/action"]["step"]) == summary["steps"] > 0
    assert {"/episode_1/obs/object", "/episode_1/obs/robot0_eef_pos", "/episode_1/meta"} <= set(got)
    res = dpctrl(work, "view", "demos.zarr", "--episodes", "0,7", "--out", "bad.rrd", expect=2)
    assert "episode 7 is out of range" in res.stderr and "holds episodes 0..1" in res.stderr
    assert not (work / "bad.rrd").exists()


def test_run_records_the_live_loop_and_its_store_views_the_same(work):
    dpctrl(work, "run", "--checkpoint", "lift", "--robot", "sim:lift", "--episodes", "1", "--async", "--rate", "40",
           "--record", "rec.zarr", "--rerun", "live.rrd", "--json", "run.json", "--no-progress")
    rep = json.loads((work / "run.json").read_text())
    live = read_rrd(work / "live.rrd")
    prefix = "/episode_seed100000"
    assert len(live[f"{prefix}/action"]["step"]) == rep["cycles"]
    assert len(live[f"{prefix}/loop/chunk"]["step"]) == rep["per_episode"][0]["chunks"] > 0
    dpctrl(work, "view", "rec.zarr", "--out", "rec.rrd")
    stored = read_rrd(work / "rec.rrd")
    assert stored["/episode_0/loop/chunk"]["step"] == live[f"{prefix}/loop/chunk"]["step"]
    assert stored["/episode_0/loop/held"]["Scalars:scalars"] == live[f"{prefix}/loop/held"]["Scalars:scalars"]


def test_train_writes_tensorboard_curves(work):
    """The user-level run; the EMA eval curve (--eval-every, ten episodes per evaluation, slow for
    an untrained policy) is checked on the trainer in tests/policy/test_train.py."""
    dpctrl(work, "train", "--task", "lift", "--steps", "20", "--demos", "2", "--batch-size", "16",
           "--eval-episodes", "1", "--threads", "1", "--out", "run_tb", "--no-progress")
    curves = read_curves(work / "run_tb" / "tb")
    assert set(curves) == {"train/loss", "train/lr", "train/grad_norm", "train/samples_per_s"}
    log = [json.loads(line) for line in (work / "run_tb" / "log.jsonl").read_text().splitlines()]
    assert curves["train/loss"] == [(r["step"], pytest.approx(r["loss"])) for r in log if r["event"] == "train"]
    assert [s for s, _ in curves["train/loss"]] == [20]  # log_every 100: the last step only
