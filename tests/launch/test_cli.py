import json

import pytest
import torch

from dpctrl.policy.diffusion_policy import DiffusionPolicy
from dpctrl.launch.cli import main
from dpctrl.launch.results import replace_block


@pytest.fixture(scope="module")
def tiny_lift_run(tmp_path_factory):
    """`dpctrl train` end to end on 3 demos for 30 steps (an untrained policy: the pipeline
    is under test here, not success; the shipped checkpoint's numbers are in docs/results/)."""
    root = tmp_path_factory.mktemp("train")
    from dpctrl.launch.train import train_task
    rec = train_task("lift", steps=30, out=root / "run", demos=3, eval_episodes=2, data_dir=root / "data",
                     batch_size=16, progress=False)
    return root, rec


def test_train_writes_checkpoint_recipe_and_eval(tiny_lift_run):
    root, rec = tiny_lift_run
    ck = root / "run" / "checkpoint"
    assert sorted(p.name for p in ck.iterdir()) == ["config.json", "model.safetensors", "recipe.json"]
    recipe = json.loads((ck / "recipe.json").read_text())
    assert recipe["data"]["episodes"] == 3 and recipe["final_eval"]["episodes"] == 2
    assert recipe["final_eval"]["nfe_per_chunk"] == 10 and len(recipe["commit"]) >= 7
    ev = json.loads((root / "run" / "eval.json").read_text())
    assert ev["seeds"] == [100000, 100001]
    assert {"success_rate", "mean_max_reward", "chunk_latency_ms", "per_episode", "config", "version"} <= set(ev)


def test_eval_cli_json_and_video(tiny_lift_run, tmp_path, capsys):
    root, _ = tiny_lift_run
    js = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(root / "run" / "checkpoint"), "--env", "lift", "--episodes", "2",
                 "--sampler", "dpmpp", "--steps", "4", "--max-steps", "24", "--video-dir", str(tmp_path / "v"),
                 "--videos", "1", "--json", str(js), "--no-progress"]) == 0
    res = json.loads(js.read_text())
    assert res["nfe_per_chunk"] == 4 and res["sampler"] == "dpmpp"
    assert [e["length"] for e in res["per_episode"]] == [24, 24] or all(e["success"] for e in res["per_episode"])
    video = tmp_path / "v" / "lift_100000.mp4"
    assert video.stat().st_size > 1000 and res["videos"][0]["frames"] > 0
    assert "network calls/chunk" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", "no-such", "--env", "lift"]) == 2
    assert "no checkpoint 'no-such'" in capsys.readouterr().err
    # the table of eval reports: one row per report; anything else is refused
    assert main(["results", "evals", str(js)]) == 0
    assert f"| lift, checkpoint {root / 'run' / 'checkpoint'} | dpmpp-4 | " in capsys.readouterr().out
    other = tmp_path / "bench.json"
    other.write_text(json.dumps({"rows": []}))
    assert main(["results", "evals", str(js), str(other)]) == 2
    assert "is not a `dpctrl eval` report" in capsys.readouterr().err


def test_demo_table_plot_video(tiny_lift_run, tmp_path, capsys):
    root, _ = tiny_lift_run
    from dpctrl.launch.demo import demo
    rep = demo(tmp_path, episodes=2, progress=False, checkpoint_name=str(root / "run" / "checkpoint"), max_steps=16)
    out = capsys.readouterr().out
    assert "| DDPM-100 |" in out and "| DDIM-10 |" in out and "| RTI (DDIM, K'=2) |" in out
    assert [r["nfe_per_chunk"] for r in rep["rows"]] == [100, 10, 3]
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "lift_ddim10.mp4").stat().st_size > 1000
    assert json.loads((tmp_path / "demo.json").read_text())["rows"][1]["name"] == "DDIM-10"


def test_replace_block(tmp_path):
    page = tmp_path / "results" / "loop.md"
    page.parent.mkdir()
    page.write_text("top\n<!-- results:loop:begin -->\nold\n<!-- results:loop:end -->\nbottom\n")
    assert replace_block(tmp_path, "loop", "new table") == page
    assert page.read_text() == "top\n<!-- results:loop:begin -->\nnew table\n<!-- results:loop:end -->\nbottom\n"
    page.write_text("no markers here\n")
    with pytest.raises(ValueError, match="markers"):
        replace_block(tmp_path, "loop", "z")
    with pytest.raises(ValueError, match="no results block named 'nope'"):
        replace_block(tmp_path, "nope", "z")


def test_bench_checks_docs_before_running(tmp_path, capsys):
    assert main(["bench", "experts", "--update-docs", str(tmp_path / "missing")]) == 2
    assert "no results page" in capsys.readouterr().err


def test_ship_fp16_with_recipe(tiny_lift_run, tmp_path, monkeypatch):
    """`ship` writes under $DPCTRL_HOME, never into the package; the name then resolves."""
    root, _ = tiny_lift_run
    from dpctrl.launch.calibrate import dataset
    from dpctrl.policy import checkpoint
    from dpctrl.policy.shipping import ship_policy
    monkeypatch.setenv("DPCTRL_HOME", str(tmp_path / "home"))
    shipped_before = checkpoint.shipped()
    src = root / "run" / "checkpoint"
    windows = dataset(DiffusionPolicy.load(src), json.loads((src / "recipe.json").read_text())["data"]["path"])
    info = ship_policy(src, "tiny", windows.spaced_windows(64))
    assert info.pop("path") == str(tmp_path / "home" / "checkpoints" / "tiny")
    assert checkpoint.list_checkpoints() == {"shipped": shipped_before, "user": ["tiny"]}
    assert info["dtype"] == "float16" and info["max_abs_action_diff_vs_fp32"] < 0.05
    assert json.loads((tmp_path / "home" / "checkpoints" / "tiny" / "recipe.json").read_text())["shipped"] == info
    assert DiffusionPolicy.load("tiny").cfg.sampler == "ddim"


@pytest.mark.parametrize("async_inference", [False, True])
def test_run_sim_lift_records_episodes(tiny_lift_run, tmp_path, async_inference):
    root, _ = tiny_lift_run
    from dpctrl.control.session import run_loop, sim_task
    from dpctrl.data import ReplayBuffer
    from dpctrl.data.replay_buffer import loop_recorder
    policy = DiffusionPolicy.load(root / "run" / "checkpoint", seed=100000)
    res = run_loop(policy, "sim:lift", 40.0, async_inference, episodes=2, seed_start=100000,
                   on_episode_end=loop_recorder(tmp_path / "rec.zarr"), status=False, max_steps=20)
    assert res["episodes"] == 2 and res["cycles"] == 40 and res["stopped"] == ["done", "done"]
    assert {"p50", "p99", "max"} <= set(res["period_jitter_ms"]) and res["chunk_latency_ms"]["p50"] > 0
    rb = ReplayBuffer.open(tmp_path / "rec.zarr")
    assert rb.n_episodes == 2 and rb.episode_lengths.tolist() == [20, 20]
    assert {"action", "t", "held", "object", "robot0_eef_pos"} <= set(rb.keys())
    assert rb.meta_column("seed").tolist() == [100000, 100001]
    with pytest.raises(ValueError, match="sim:<env>"):
        sim_task("real:arm")


def test_run_with_the_torchscript_denoiser_and_an_early_replan(tiny_lift_run):
    root, _ = tiny_lift_run
    from dpctrl.control.session import run_loop
    policy = DiffusionPolicy.load(root / "run" / "checkpoint", seed=100000)
    policy.set_deploy("torchscript")
    res = run_loop(policy, "sim:lift", 40.0, True, episodes=1, seed_start=100000, status=False, max_steps=16,
                   replan_at=6)
    assert policy.describe()["deploy"] == "torchscript" and res["replan_at"] == 6 and res["cycles"] == 16
    assert res["policy_errors"] == 0 and res["stopped"] == ["done"]


def test_compare_with_eval_uses_the_same_seeds(tmp_path):
    from dpctrl.control.session import compare_with_eval
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps({"per_episode": [{"seed": s, "success": s % 2 == 0} for s in range(10, 20)]}))
    run_rep = {"per_episode": [{"seed": s, "success": True} for s in (10, 11, 12, 13)]}
    cmp = compare_with_eval(run_rep, str(ev))
    assert cmp["seeds"] == 4 and cmp["eval_success_rate"] == 0.5 and cmp["run_success_rate"] == 1.0
    assert cmp["difference_points"] == 50.0
    with pytest.raises(ValueError, match="no episodes for seeds \\[30\\]"):
        compare_with_eval({"per_episode": [{"seed": 30, "success": True}]}, str(ev))


def test_calibrate_rti_and_cache_then_accelerated_eval(tiny_lift_run, tmp_path, capsys):
    root, _ = tiny_lift_run
    import shutil
    ck = tmp_path / "ck"
    shutil.copytree(root / "run" / "checkpoint", ck)
    data = str(root / "data" / "lift.zarr")
    assert main(["calibrate", "rti", "--checkpoint", str(ck), "--env", "lift", "--data", data, "--windows", "8"]) == 0
    rti = json.loads((ck / "rti.json").read_text())
    assert rti["recommended_k"] in [r["k"] for r in rti["candidates"]]
    assert all(r["network_calls"] == r["k"] + 1 for r in rti["candidates"])
    assert main(["calibrate", "cache", "--checkpoint", str(ck), "--env", "lift", "--data", data, "--budget", "10",
                 "--windows", "8"]) == 0
    cal = json.loads((ck / "cache_bac.json").read_text())
    assert cal["windows"] == 8
    assert len(cal["schedules"]) == 12 and all(99.0 in v and 0.0 in v for v in cal["schedules"].values())
    assert cal["block_updates"] >= cal["block_updates_before_bu"] >= 12 * 10
    js = tmp_path / "e.json"
    assert main(["eval", "--checkpoint", str(ck), "--env", "lift", "--episodes", "2", "--max-steps", "24",
                 "--warm-start", "rti", "--cache", "bac", "--no-progress", "--json", str(js)]) == 0
    res = json.loads(js.read_text())
    assert res["nfe_per_chunk"] == rti["recommended_k"] + 1 and res["nfe_mean"] > res["nfe_per_chunk"]
    assert main(["eval", "--checkpoint", str(ck), "--env", "lift", "--episodes", "1", "--cache", "bac",
                 "--cache-budget", "5"]) == 2
    assert "budget 10, not 5" in capsys.readouterr().err
    # the cache benchmark on the same calibrated checkpoint: uncached rows are exact,
    # every cached row counts fewer block executions than 12 blocks x network calls
    js = tmp_path / "bench.json"
    assert main(["bench", "cache", "--checkpoint", str(ck), "--data", data, "--cache-episodes", "2", "--chunks", "2",
                 "--timing-chunks", "2", "--threads", "1", "--no-progress", "--json", str(js)]) == 0
    rows = json.loads(js.read_text())["rows"]
    assert {r["base"].split(" ")[0] for r in rows} == {"DDPM-100", "DDIM-10", "RTI"}
    for r in rows:
        if r["cache"] == "none":
            # the uncached twin timed against itself: a ratio near 1 (how noisy the timing is)
            assert r["action_err"] == 0.0 and r["block_exec"] == 12 * r["nfe"] and r["speedup"] > 0
        else:
            assert 0 < r["block_exec"] <= 12 * r["nfe"] and r["action_err"] >= 0.0
        if r["cache"].startswith("uniform") and r["block_exec"] == 12 * r["nfe"]:
            # nothing is reused, not even in a warm-started run's cold first chunk: exact
            assert r["action_err"] == 0.0 and r["gripper_flips"] == 0.0, r
    ddpm = {r["cache"]: r for r in rows if r["base"] == "DDPM-100"}
    assert ddpm["bac"]["block_exec"] == cal["block_updates"]
    assert ddpm["uniform (M=10)"]["block_exec"] == 12 * 11  # every 10th of 100 steps, and the last
    # the all-variants latency benchmark (quick: batch 1, this model only) counts real calls
    js, png = tmp_path / "policy.json", tmp_path / "policy.png"
    assert main(["bench", "policy", "--checkpoint", str(ck), "--data", data, "--quick", "--threads", "1",
                 "--no-progress", "--json", str(js), "--plot", str(png)]) == 0
    rows = {r["name"]: r for r in json.loads(js.read_text())["rows"]}
    assert {k: rows[k]["nfe"] for k in ("DDPM-100", "DDIM-10", "DPM-Solver++-10", "floor: 1 call")} == {
        "DDPM-100": 100, "DDIM-10": 10, "DPM-Solver++-10": 10, "floor: 1 call": 1}
    assert rows["RTI"]["nfe"] == rows["RTI+BAC"]["nfe"] == rti["recommended_k"] + 1
    assert rows["DDPM-100"]["vs_ddpm100"] == 1.0 and rows["floor: 1 call"]["vs_floor"] == 1.0
    assert png.stat().st_size > 0
    # the action-error objective (autograd through the run) schedules every block too, and
    # reports name the objective of the cache they ran with
    assert main(["calibrate", "cache", "--checkpoint", str(ck), "--env", "lift", "--data", data, "--budget", "10",
                 "--windows", "4", "--objective", "action"]) == 0
    cal = json.loads((ck / "cache_bac.json").read_text())
    assert cal["objective"] == "action" and len(cal["schedules"]) == 12
    assert all(len(v) >= 10 and 99.0 in v and 0.0 in v for v in cal["schedules"].values())
    js = tmp_path / "e2.json"
    assert main(["eval", "--checkpoint", str(ck), "--env", "lift", "--episodes", "1", "--max-steps", "16",
                 "--sampler", "ddpm", "--steps", "100", "--cache", "bac", "--no-progress", "--json", str(js)]) == 0
    assert json.loads(js.read_text())["cache"] == "bac (action)"


def test_calibrate_rti_within_a_call_budget_sets_the_eval_default(tiny_lift_run, tmp_path):
    """--max-calls picks the lowest-error K' within the budget; tail and noise are saved and
    become what --warm-start rti uses, and --no-rti-noise overrides the saved noise."""
    root, _ = tiny_lift_run
    import shutil
    ck = tmp_path / "ck"
    shutil.copytree(root / "run" / "checkpoint", ck)
    data = str(root / "data" / "lift.zarr")
    assert main(["calibrate", "rti", "--checkpoint", str(ck), "--env", "lift", "--data", data, "--windows", "8",
                 "--tail", "coarse", "--noise", "--candidates", "5,15,20,25", "--max-calls", "3"]) == 0
    rti = json.loads((ck / "rti.json").read_text())
    calls = {r["k"]: r["network_calls"] for r in rti["candidates"]}
    assert calls == {5: 2, 15: 3, 20: 3, 25: 4}  # DDIM-10's grid below K': 25 -> 20, 10, 0
    within = [r for r in rti["candidates"] if r["network_calls"] <= 3]
    assert rti["recommended_k"] == min(within, key=lambda r: r["error_vs_full"])["k"]
    assert rti["tail"] == "coarse" and rti["noise"] is True
    for extra, noise in (([], True), (["--no-rti-noise"], False)):
        js = tmp_path / "e.json"
        assert main(["eval", "--checkpoint", str(ck), "--env", "lift", "--episodes", "1", "--max-steps", "24",
                     "--warm-start", "rti", *extra, "--no-progress", "--json", str(js)]) == 0
        res = json.loads(js.read_text())
        assert res["nfe_per_chunk"] == calls[rti["recommended_k"]]
        assert res["warm_start"]["tail"] == "coarse" and res["warm_start"]["noise"] is noise


def test_calibrate_rti_over_grids_puts_eval_on_the_winning_grid(tiny_lift_run, tmp_path, capsys):
    """--steps 4,10 calibrates each DDIM grid within the budget and keeps the most accurate
    (grid, K'); --warm-start rti then runs on that grid, unless --steps names another."""
    root, _ = tiny_lift_run
    import shutil
    ck = tmp_path / "ck"
    shutil.copytree(root / "run" / "checkpoint", ck)
    data = str(root / "data" / "lift.zarr")
    base = ["calibrate", "rti", "--checkpoint", str(ck), "--env", "lift", "--data", data, "--windows", "8",
            "--tail", "coarse", "--noise", "--candidates", "0,20,50"]
    assert main([*base, "--steps", "4,10"]) == 2 and "--max-calls" in capsys.readouterr().err
    assert not (ck / "rti.json").exists()
    assert main([*base, "--steps", "4,10", "--max-calls", "3"]) == 0
    rti = json.loads((ck / "rti.json").read_text())
    grids = {g["steps"]: g for g in rti["grids"]}
    assert set(grids) == {4, 10} and all(g["network_calls"] <= 3 for g in grids.values())
    assert grids[4]["recommended_k"] == 50 and grids[10]["recommended_k"] == 20  # the highest K' in 3 calls
    win = min(grids.values(), key=lambda g: g["error_vs_full"])
    assert (rti["steps"], rti["recommended_k"]) == (win["steps"], win["recommended_k"])
    for extra, steps in (([], win["steps"]), (["--steps", "5"], 5)):
        js = tmp_path / "e.json"
        assert main(["eval", "--checkpoint", str(ck), "--env", "lift", "--episodes", "1", "--max-steps", "16",
                     "--warm-start", "rti", *extra, "--no-progress", "--json", str(js)]) == 0
        assert json.loads(js.read_text())["num_inference_steps"] == steps


@pytest.mark.parametrize("flags,message", [
    (["--fused"], "options of the GPU path"),
    (["--device", "cuda", "--deploy", "eager", "--precision", "tf32"], "options of the GPU path"),
    (["--device", "cuda", "--deploy", "torchscript"], "CPU deploy path" if torch.cuda.is_available() else "no CUDA"),
    (["--device", "cuda", "--deploy", "cuda_graph", "--fused"], None if torch.cuda.is_available() else "no CUDA"),
])
def test_run_refuses_gpu_options_it_cannot_honour_before_starting(flags, message, capsys):
    """``dpctrl run``'s GPU flags: a combination that cannot run fails at once with a message
    naming what to pass, before a checkpoint is loaded or a simulator started."""
    if message is None:
        pytest.skip("runs on a CUDA machine (the real loop; covered by `dpctrl bench gpu`)")
    from dpctrl.launch.cli import main
    rc = main(["run", "--checkpoint", "does-not-exist", "--robot", "sim:lift", "--episodes", "1", *flags])
    assert rc == 2 and message in capsys.readouterr().err


def test_eval_overlap_choices_are_the_evaluators():
    from dpctrl.policy.chunking import OVERLAPS
    from dpctrl.launch import eval as evaluation
    assert evaluation.OVERLAPS == OVERLAPS
