"""PAD end to end on a tiny budget: demos -> `dpctrl train --policy pad` -> `dpctrl eval` ->
`dpctrl pad frames` (an untrained policy: the pipeline is under test, not success)."""
import json

import pytest

from dpctrl import envs  # noqa: E402,F401  (sets MUJOCO_GL=egl before metaworld imports mujoco)

pytest.importorskip("metaworld")

from dpctrl.launch.cli import main  # noqa: E402


def test_train_eval_and_frame_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DPCTRL_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "run"
    assert main(["train", "--task", "metaworld:reach", "--policy", "pad", "--steps", "3", "--demos", "2",
                 "--batch-size", "4", "--out", str(out), "--no-progress"]) == 0
    assert "ms per batch" in capsys.readouterr().out
    ck = out / "checkpoint"
    cfg = json.loads((ck / "config.json").read_text())
    assert cfg["format"] == "dpctrl-pad" and cfg["recipe"]["demos"] == 2 and cfg["pad"]["tasks"] == ["reach"]
    ev = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(ck), "--env", "metaworld:reach", "--episodes", "1", "--max-steps", "8",
                 "--json", str(ev), "--no-progress"]) == 0
    res = json.loads(ev.read_text())
    assert res["episodes"] == 1 and res["per_episode"][0]["length"] <= 8 and res["nfe_per_chunk"] == 10
    fr = tmp_path / "frames.json"
    assert main(["pad", "frames", "--checkpoint", str(ck), "--task", "reach", "--episodes", "1",
                 "--png", str(tmp_path / "f.png"), "--json", str(fr)]) == 0
    rep = json.loads(fr.read_text())
    assert rep["frames"] > 10 and rep["psnr_copy_last_db"] > 10 and (tmp_path / "f.png").exists()
    capsys.readouterr()
    assert main(["results", "pad", str(ev), str(fr)]) == 0
    table = capsys.readouterr().out
    assert "| reach | PAD | 0.000 | 1 |" in table or "| reach | PAD | 1.000 | 1 |" in table
    assert f"{rep['psnr_pred_db']:.2f} / {rep['psnr_copy_last_db']:.2f}" in table
    # the baseline: the core's DP-T image policy on the same demonstrations, one task per model
    dpt = tmp_path / "dpt"
    assert main(["train", "--task", "metaworld:reach", "--images", "--steps", "3", "--demos", "2", "--batch-size", "4",
                 "--eval-episodes", "1", "--out", str(dpt), "--no-progress"]) == 0
    dcfg = json.loads((dpt / "checkpoint" / "config.json").read_text())["policy"]
    assert dcfg["image_keys"] == ["corner_image"] and dcfg["image_size"] == 64 and list(dcfg["obs_dims"]) == ["state"]
    ev2 = tmp_path / "eval_dpt.json"
    assert main(["eval", "--checkpoint", str(dpt / "checkpoint"), "--env", "metaworld:reach", "--episodes", "1",
                 "--max-steps", "8", "--json", str(ev2), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["results", "pad", str(ev), str(ev2)]) == 0
    assert "| reach | DP-T (images) |" in capsys.readouterr().out
    assert main(["train", "--task", "metaworld:reach,push", "--images", "--steps", "1", "--out", str(dpt)]) == 2
    with pytest.raises(SystemExit):
        main(["train", "--task", "metaworld:reach", "--policy", "nope", "--steps", "1", "--out", str(out)])
    assert main(["train", "--task", "lift", "--policy", "pad", "--steps", "1", "--out", str(out)]) == 2
    # the objects' poses withheld: the network sees hand, gripper and goal; the eval env still sends all 39
    hid = tmp_path / "hid"
    assert main(["train", "--task", "metaworld:reach", "--policy", "pad", "--pad-state", "proprio+goal", "--steps", "2",
                 "--demos", "2", "--batch-size", "4", "--out", str(hid), "--no-progress"]) == 0
    hcfg = json.loads((hid / "checkpoint" / "config.json").read_text())
    assert hcfg["pad"]["state_index"] == [0, 1, 2, 3, 36, 37, 38] and hcfg["recipe"]["state_view"] == "proprio+goal"
    ev3 = tmp_path / "eval_hid.json"
    assert main(["eval", "--checkpoint", str(hid / "checkpoint"), "--env", "metaworld:reach", "--episodes", "1",
                 "--max-steps", "4", "--json", str(ev3), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["results", "pad", str(ev3)]) == 0
    assert "| reach | PAD, state: proprio+goal |" in capsys.readouterr().out
    readme = tmp_path / "docs" / "results" / "pad.md"  # a second PAD table in a block of its own; the first is left alone
    readme.parent.mkdir(parents=True)
    readme.write_text("<!-- results:pad:begin -->\nold\n<!-- results:pad:end -->\n"
                      "<!-- results:pad-hidden:begin -->\n<!-- results:pad-hidden:end -->\n")
    assert main(["results", "pad", str(ev3), "--update-docs", str(tmp_path / "docs"), "--block", "pad-hidden"]) == 0
    text = readme.read_text()
    assert "\nold\n" in text and text.index("PAD, state: proprio+goal") > text.index("results:pad-hidden:begin")
    assert main(["train", "--task", "metaworld:reach", "--policy", "pad", "--pad-state", "objects", "--steps", "1",
                 "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_pad_table_averages_each_multi_task_run(tmp_path):
    from dpctrl.launch.results import pad_table
    cfg = {"tasks": ["reach", "push"], "image_loss_weight": 1.0, "state_index": [0, 1, 2, 3, 36, 37, 38]}

    def report(task, rate, start, n=50):
        f = tmp_path / f"eval_{task}_{start}_{n}.json"
        f.write_text(json.dumps({"env": f"metaworld:{task}", "checkpoint": "runs/pad/mt/checkpoint", "config": cfg,
                                 "success_rate": rate, "episodes": n, "seeds": list(range(start, start + n)),
                                 "chunk_latency_ms": {"p50": 30.0}, "command": f"dpctrl eval {task} {start}"}))
        return str(f)

    files = [report("reach", 0.9, 100000), report("push", 0.4, 100000)]
    table = pad_table(files)
    assert "| push | PAD (multi-task: reach+push), state: proprio+goal | 0.400 | 50 |" in table
    assert "- `mt`: mean success 0.650 over push, reach (50/50 episodes)" in table
    assert "mean success" not in pad_table(files[:1])  # one task: no average line
    # a second seed range of the same checkpoint and task pools into the row (0.4 * 50 + 0.7 * 100) / 150
    pooled = pad_table(files + [report("push", 0.7, 100050, 100)])
    assert "| push | PAD (multi-task: reach+push), state: proprio+goal | 0.600 | 150 |" in pooled
    assert "`dpctrl eval push 100000`<br>`dpctrl eval push 100050`" in pooled
    assert "mean success 0.750 over push, reach (150/50 episodes)" in pooled
    with pytest.raises(ValueError, match="seeds"):  # the same episodes twice would count twice
        pad_table(files + [report("push", 0.7, 100040, 20)])
