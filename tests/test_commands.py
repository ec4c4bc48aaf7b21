"""Every command group the README and the docs show, run as a user runs it: the installed ``dpctrl``
console script in a subprocess, from a temporary working directory, at tiny sizes
(tests/test_docs.py checks that every documented command line parses). A traceback, or an exit
code other than the one expected, fails the test. Training runs are a few steps: the pipeline
is under test here, not success (the shipped checkpoints' numbers are on the results pages, docs/results/).

The tests of one module share a working directory (``work``) and run in file order: later
commands use what earlier ones wrote, as a user's session would.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

DPCTRL = shutil.which("dpctrl")
pytestmark = pytest.mark.skipif(DPCTRL is None, reason="the dpctrl console script is not installed (make setup)")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("user")


def _env(work: Path, **extra: str) -> dict:
    # a user's own checkpoint home; no traceback switch (the user's view of errors)
    env = {k: v for k, v in os.environ.items() if k != "DPCTRL_TRACEBACK"}
    return {**env, "DPCTRL_HOME": str(work / "home"), "MUJOCO_GL": "egl", **extra}


def dpctrl(work: Path, *args: str, expect: int = 0, timeout: float = 600, env: dict | None = None,
           exe: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run ``dpctrl ARGS`` in ``work``; assert no traceback and exit code ``expect``."""
    res = subprocess.run([*(exe or [DPCTRL]), *args], cwd=work, env=env or _env(work), capture_output=True,
                         text=True, timeout=timeout)
    shown = f"dpctrl {' '.join(args)} -> {res.returncode}\nstdout:\n{res.stdout[-2000:]}\nstderr:\n{res.stderr[-4000:]}"
    assert "Traceback" not in res.stderr, shown
    assert res.returncode == expect, shown
    return res


def _commands(parser: argparse.ArgumentParser, prefix=()) -> list[tuple[str, ...]]:
    out = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _commands(sub, (*prefix, name))
    return out


def test_help_of_every_command_and_subcommand(work):
    from dpctrl.launch.cli import build_parser
    commands = _commands(build_parser())
    assert ("bench", "cache") in commands and ("lerobot", "export") in commands and len(commands) > 20
    for cmd in commands:
        res = dpctrl(work, *cmd, "--help", timeout=60)
        assert res.stdout.startswith("usage: dpctrl" + "".join(f" {c}" for c in cmd)), res.stdout[:200]
    dpctrl(work, "no-such-command", expect=2)


# -- the core job: collect, train, eval, run, ship, calibrate, bench, demo ---------------------

def test_collect_then_train(work):
    res = dpctrl(work, "collect", "--env", "lift", "--episodes", "2", "--out", "runs/data/lift.zarr", "--no-progress",
                 "--json", "collect.json")
    assert "lift: 2 episodes" in res.stdout and json.loads((work / "collect.json").read_text())["episodes"] == 2
    dpctrl(work, "collect", "--env", "nope", "--episodes", "1", "--out", "x.zarr", expect=2)
    # train reuses the store (runs/data/lift.zarr is the recipe's) and evaluates on 1 held-out episode
    res = dpctrl(work, "train", "--task", "lift", "--steps", "20", "--demos", "2", "--batch-size", "16",
                 "--eval-episodes", "1", "--threads", "1", "--out", "run", "--no-progress")
    assert "trained 20 steps" in res.stdout and (work / "run" / "checkpoint" / "model.safetensors").exists()
    recipe = json.loads((work / "run" / "checkpoint" / "recipe.json").read_text())
    assert recipe["task"] == "lift" and recipe["command"].startswith("dpctrl train --task lift")
    # fine-tuned for --overlap prefix from that run, then evaluated with a delay its prefixes cover
    res = dpctrl(work, "train", "--task", "lift", "--steps", "10", "--demos", "2", "--batch-size", "16",
                 "--eval-episodes", "1", "--threads", "1", "--out", "run_prefix", "--no-progress",
                 "--prefix-max", "2", "--init-from", "run/checkpoint")
    recipe = json.loads((work / "run_prefix" / "checkpoint" / "recipe.json").read_text())
    assert (recipe["prefix_max"], recipe["init_from"]) == (2, "run/checkpoint")
    res = dpctrl(work, "eval", "--checkpoint", "run_prefix/checkpoint", "--env", "lift", "--episodes", "1",
                 "--max-steps", "24", "--delay", "2", "--overlap", "prefix", "--no-progress")
    assert "overlap prefix" in res.stdout
    res = dpctrl(work, "eval", "--checkpoint", "run_prefix/checkpoint", "--env", "lift", "--delay", "3",
                 "--overlap", "prefix", expect=2)
    assert "trained on prefixes of up to 2 actions" in res.stderr
    res = dpctrl(work, "eval", "--checkpoint", "lift", "--env", "lift", "--delay", "2", "--overlap", "prefix", expect=2)
    assert "dpctrl train --prefix-max" in res.stderr


def test_eval_and_results(work):
    res = dpctrl(work, "eval", "--checkpoint", "run/checkpoint", "--env", "lift", "--episodes", "2", "--batch", "2",
                 "--max-steps", "16", "--threads", "1", "--json", "evals/tiny.json", "--no-progress")
    assert "success" in res.stdout and "network calls/chunk" in res.stdout
    dpctrl(work, "eval", "--checkpoint", "lift", "--env", "lift", "--episodes", "1", "--max-steps", "16",
           "--warm-start", "rti", "--json", "evals/lift_rti.json", "--no-progress")
    assert json.loads((work / "evals" / "lift_rti.json").read_text())["command"].startswith("dpctrl eval")
    res = dpctrl(work, "eval", "--checkpoint", "lift", "--env", "lift", "--episodes", "1", "--max-steps", "24",
                 "--delay", "2", "--execute", "8", "--overlap", "blend", "--json", "evals/lift_delay.json", "--no-progress")
    rep = json.loads((work / "evals" / "lift_delay.json").read_text())
    assert (rep["delay"], rep["action_steps"], rep["overlap"]) == (2, 8, "blend") and "boundary jump" in res.stdout
    assert rep["boundary_jump"]["switches"] == 2 and set(rep["per_episode"][0]) >= {"seed", "success", "length",
                                                                                      "boundary_jump"}
    res = dpctrl(work, "eval", "--checkpoint", "lift", "--env", "lift", "--delay", "9", expect=2)
    assert "--delay must be in 0..--execute" in res.stderr
    res = dpctrl(work, "results", "evals", "evals/tiny.json", "evals/lift_rti.json", "evals/lift_delay.json")
    assert "| lift, checkpoint run/checkpoint | ddim-10 |" in res.stdout and "RTI K'=" in res.stdout and "delay 2, execute 8, blend" in res.stdout
    res = dpctrl(work, "eval", "--checkpoint", "no-such", "--env", "lift", expect=2)
    assert "no checkpoint 'no-such'" in res.stderr and "'lift'" in res.stderr and "user ones" in res.stderr
    res = dpctrl(work, "eval", "--checkpoint", "lift", "--env", "lift", "--episodes", "1", "--max-steps", "12",
                 "--classify-failures", "--json", "evals/lift_failures.json", "--no-progress")
    failures = json.loads((work / "evals" / "lift_failures.json").read_text())["failures"]
    assert failures["failed"] == failures["reproduced"] == sum(failures["counts"].values()) == 1  # 12 steps: too few
    assert "failures: 1 of 1 (1 reproduced in a rerun)" in res.stdout
    res = dpctrl(work, "results", "train", "run/checkpoint/recipe.json")
    assert "| lift | 2 | " in res.stdout and "samples/s" in res.stdout  # the tiny run of test_collect_then_train
    res = dpctrl(work, "results", "train", "evals/tiny.json", expect=2)
    assert "is not a `dpctrl train` run's recipe.json" in res.stderr
    res = dpctrl(work, "eval", "--checkpoint", "lift", "--env", "metaworld:reach", "--classify-failures", expect=2)
    assert "failure classes read an object's height" in res.stderr
    res = dpctrl(work, "eval", "--checkpoint", "lift", "--env", "can", "--episodes", "1", "--json", "x.json", expect=2)
    assert "the policy reads object (10,), but 'can' gives" in res.stderr and "object (14,)" in res.stderr
    assert not (work / "x.json").exists()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_run(work, mode):
    res = dpctrl(work, "run", "--checkpoint", "lift", "--robot", "sim:lift", "--episodes", "1", "--rate", "40",
                 *(["--async"] if mode == "async" else []), "--json", f"run_{mode}.json", "--no-progress")
    rep = json.loads((work / f"run_{mode}.json").read_text())
    assert rep["episodes"] == 1 and rep["async"] == (mode == "async") and rep["cycles"] > 0
    assert "boundary_jump" in rep and "jerk" in rep and "delay_cycles" in rep and "length" in rep["per_episode"][0]
    assert f"({mode})" in res.stdout if mode == "sync" else "(async, inference in a process)" in res.stdout
    assert rep["inference"] == ("process" if mode == "async" else "loop thread")


def test_run_async_inference_in_a_thread_and_bid(work):
    res = dpctrl(work, "run", "--checkpoint", "lift", "--robot", "sim:lift", "--episodes", "1", "--rate", "40",
                 "--async", "--inference", "thread", "--overlap", "bid", "--json", "run_thread.json", "--no-progress")
    rep = json.loads((work / "run_thread.json").read_text())
    assert rep["inference"] == "thread" and rep["overlap"] == "bid" and rep["policy_errors"] == 0
    assert "(async, inference in a thread)" in res.stdout
    res = dpctrl(work, "results", "runs", "run_sync.json", "run_async.json", "run_thread.json")
    assert "| sim:lift | ddim-10 | async, process | replace | 1 |" in res.stdout
    assert "| sim:lift | ddim-10 | async, thread | bid | 1 |" in res.stdout and "`dpctrl run --checkpoint lift" in res.stdout
    res = dpctrl(work, "run", "--checkpoint", "lift", "--overlap", "bid", expect=2)
    assert "add --async" in res.stderr


def test_bench_overlap(work):
    res = dpctrl(work, "bench", "overlap", "--rounds", "2", "--prefix-checkpoint", "run_prefix/checkpoint",
                 "--json", "overlap.json")
    rows = json.loads((work / "overlap.json").read_text())["rows"]
    assert [(r["base"], r["mode"]) for r in rows][:4] == [("DDIM-10", "plain"), ("DDIM-10", "rtc"), ("DDIM-10", "bid"),
                                                          ("DDIM-10", "inpaint")]
    assert {r["mode"] for r in rows if r["checkpoint"] == "run_prefix/checkpoint"} == {"plain", "prefix"}
    assert all(r["p50_ms"] > 0 and r["network_calls"] >= 1 for r in rows) and "10 + 10 backward" in res.stdout
    res = dpctrl(work, "bench", "overlap", "--prefix-checkpoint", "lift", expect=2)
    assert "--prefix-max" in res.stderr


def test_bench_delay_resumes_and_writes_the_docs(work):
    docs = work / "delay_docs"
    (docs / "results").mkdir(parents=True, exist_ok=True)
    (docs / "assets").mkdir(exist_ok=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "docs" / "results" / "delay.md", docs / "results")
    args = ["bench", "delay", "--env", "lift", "--episodes", "2", "--batch", "2", "--delays", "0,2",
            "--variants", "replace,bid", "--threads", "1", "--out", "delay_cells", "--no-progress"]
    res = dpctrl(work, *args, "--json", "delay.json")
    assert "| replace |" in res.stdout and "| bid |" in res.stdout and "Target (up to D=4)" in res.stdout
    cells = json.loads((work / "delay.json").read_text())["cells"]
    assert [(c["variant"], c["delay"]) for c in cells] == [("replace", 0), ("replace", 2), ("bid", 0), ("bid", 2)]
    assert sorted(p.name for p in (work / "delay_cells").iterdir()) == ["bid_d0.json", "bid_d2.json",
                                                                         "replace_d0.json", "replace_d2.json"]
    res = dpctrl(work, *args, "--update-docs", "delay_docs")  # a rerun keeps every finished cell
    assert res.stderr.count("kept from") == 4
    page = (docs / "results" / "delay.md").read_text()
    assert "Command: `dpctrl bench delay --checkpoint lift --env lift --episodes 2" in page
    assert (docs / "assets" / "delay-lift.png").read_bytes()[:4] == b"\x89PNG"
    res = dpctrl(work, *args[:5], "3", *args[6:], expect=2)  # other settings, same --out
    assert "was run with" in res.stderr
    res = dpctrl(work, "bench", "delay", "--delays", "0,9", "--out", "x", expect=2)
    assert "--delay must be in 0..--execute" in res.stderr
    res = dpctrl(work, "bench", "delay", "--variants", "replace,fancy", "--out", "x", expect=2)
    assert "rti+MODE" in res.stderr
    res = dpctrl(work, "bench", "delay", "--variants", "replace,prefix", "--out", "x", expect=2)
    assert "pass --prefix-checkpoint" in res.stderr
    res = dpctrl(work, "bench", "delay", "--variants", "prefix", "--prefix-checkpoint", "lift", "--out", "x", expect=2)
    assert "--prefix-max" in res.stderr  # the shipped policy was not trained for it


def test_ship_then_use_by_name(work):
    res = dpctrl(work, "ship", "--from", "run/checkpoint", "--name", "tiny")
    assert "use it as --checkpoint tiny" in res.stdout
    assert (work / "home" / "checkpoints" / "tiny" / "model.safetensors").exists()
    dpctrl(work, "eval", "--checkpoint", "tiny", "--env", "lift", "--episodes", "1", "--max-steps", "8",
           "--no-progress")
    dpctrl(work, "ship", "--from", "run/checkpoint", "--name", "a/b", expect=2)


def test_calibrate(work):
    res = dpctrl(work, "calibrate", "rti", "--checkpoint", "tiny", "--env", "lift", "--windows", "4",
                 "--candidates", "0,2", "--json", "rti.json")
    assert "recommended K'" in res.stdout and (work / "home" / "checkpoints" / "tiny" / "rti.json").exists()
    res = dpctrl(work, "calibrate", "cache", "--checkpoint", "tiny", "--env", "lift", "--budget", "3", "--windows", "2",
                 "--sampler", "ddim", "--steps", "10")
    assert "BAC schedule for ddim-10" in res.stdout
    assert (work / "home" / "checkpoints" / "tiny" / "cache_bac.json").exists()


def test_bench_kinds_that_run_on_a_cpu(tmp_path_factory):
    """In a directory with no dataset: the checkpoint benches collect the episodes they need."""
    fresh = tmp_path_factory.mktemp("fresh")
    res = dpctrl(fresh, "bench", "policy", "--quick", "--threads", "1", "--json", "policy.json", "--no-progress")
    assert "no dataset at runs/data/lift.zarr; collecting 1 lift expert episodes" in res.stderr
    assert "| DDIM-10 |" in res.stdout or "DDIM-10" in res.stdout
    res = dpctrl(fresh, "bench", "cache", "--bases", "DDIM-10", "--cache-episodes", "2", "--chunks", "2",
                 "--timing-chunks", "2", "--threads", "1", "--json", "cache.json", "--no-progress")
    assert "holds 1 episodes; collecting 1 lift expert episodes" in res.stderr  # grown to what this bench needs
    assert json.loads((fresh / "cache.json").read_text())["episodes"] == 2
    res = dpctrl(fresh, "bench", "deploy", "--chunks", "2", "--cache-episodes", "2", "--threads", "1",
                 "--json", "deploy.json")
    assert "collecting" not in res.stderr and "| onnxruntime int8 |" in res.stdout
    rows = json.loads((fresh / "deploy.json").read_text())["rows"]
    assert [(r["base"][:3], r["path"]) for r in rows] == [(b, p) for b in ("DDI", "RTI") for p in (
        "eager", "torchscript", "onnxruntime fp32", "onnxruntime int8")]
    diff = {(r["base"][:3], r["path"]): r["max_abs_action_diff"] for r in rows}
    assert all(diff[b, "onnxruntime fp32"] <= 1e-5 < diff[b, "onnxruntime int8"] for b in ("DDI", "RTI"))
    res = dpctrl(fresh, "bench", "loop", "--rate", "200", "--latency-ms", "2", "--chunk", "8", "--cycles", "40",
                 "--json", "loop.json", "--no-progress")
    assert {r["mode"] for r in json.loads((fresh / "loop.json").read_text())["rows"]} >= {"sync", "async"}
    res = dpctrl(fresh, "bench", "experts", "--tasks", "lift", "--episodes", "1", "--collect-episodes", "1",
                 "--json", "experts.json", "--no-progress")
    assert json.loads((fresh / "experts.json").read_text())["rows"][0]["task"] == "lift"
    # kinds that need what this machine lacks say so and exit 2
    if not _cuda():
        assert "needs a CUDA device" in dpctrl(fresh, "bench", "gpu", "--quick", expect=2).stderr
    assert "no lerobot venv" in dpctrl(fresh, "bench", "peer", "--venv", "none", expect=2).stderr
    # each kind parses only its own options
    assert "unrecognized arguments: --cycles" in dpctrl(fresh, "bench", "policy", "--cycles", "3", expect=2).stderr


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def test_demo(work):
    docs = work / "docs"  # a copy of the results page the demo writes, as `--update-docs` in a checkout
    (docs / "results").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "docs" / "results" / "evals.md", docs / "results")
    res = dpctrl(work, "demo", "--episodes", "1", "--max-steps", "24", "--out", "demo", "--no-progress",
                 "--update-docs", "docs")
    assert "| DDPM-100 |" in res.stdout and "| DDIM-10 |" in res.stdout
    assert (work / "demo" / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert (docs / "assets" / "latency.png").read_bytes() == (work / "demo" / "latency.png").read_bytes()
    page = (docs / "results" / "evals.md").read_text()
    assert "Command: `dpctrl demo --episodes 1 --max-steps 24`" in page and "<!-- results:evals:begin -->" in page


# -- the robot side: policy server and robot clients over loopback -----------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_and_robots_over_loopback(work):
    port = str(_free_port())
    env = _env(work, DPCTRL_TOKEN="t0ken")
    server = subprocess.Popen([DPCTRL, "serve", "--checkpoint", "lift", "--port", port, "--warm-start", "rti",
                               "--threads", "1"], cwd=work, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()  # printed once it listens
        assert line.startswith(f"serving lift on tcp://127.0.0.1:{port} (token required)"), \
            line + server.stderr.read() if server.poll() is not None else line
        res = dpctrl(work, "robot", "--server", f"127.0.0.1:{port}", "--robot", "mock", "--rate", "20", "--episodes",
                     "1", "--max-cycles", "30", "--json", "robot.json", "--no-progress", env=env)
        rep = json.loads((work / "robot.json").read_text())
        assert rep["cycles"] == 30 and rep["requests"] >= 1 and rep["failed_requests"] == 0
        assert "via 127.0.0.1:" in res.stdout
        res = dpctrl(work, "robot", "--server", f"127.0.0.1:{port}", "--robot", "mock", "--episodes", "1",
                     "--max-cycles", "5", "--token", "wrong", "--no-progress", env=env, expect=2)
        assert "unauthorized" in res.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0 and "Traceback" not in err, err
    assert "served" in out and "'unauthorized': 1" in out


def test_server_load_test_module(work):
    res = dpctrl(work, "--clients", "1", "--rate", "20", "--seconds", "1", "--threads", "1", "--json", "serve.json",
                 exe=[sys.executable, "-m", "dpctrl.launch.bench.serve"], timeout=300)
    assert json.loads((work / "serve.json").read_text())["clients"] == 1, res.stdout


# -- LeRobot datasets --------------------------------------------------------------------------

def test_lerobot_export_import(work):
    res = dpctrl(work, "lerobot", "export", "runs/data/lift.zarr", "lerobot_lift", "--fps", "20", "--task",
                 "lift the cube", "--no-progress")
    assert "LeRobot v3.0, 2 episodes" in res.stdout
    res = dpctrl(work, "lerobot", "import", "lerobot_lift", "back.zarr", "--no-progress")
    assert "back.zarr: 2 episodes" in res.stdout
    res = dpctrl(work, "lerobot", "roundtrip", "--venv", "none", expect=2)
    assert "no lerobot venv" in res.stderr


# -- driving, planning, PAD --------------------------------------------------------------------

def test_drive(work):
    dpctrl(work, "drive", "collect", "--scenario", "fork", "--demos", "3", "--no-progress")
    dpctrl(work, "drive", "train", "--scenario", "fork", "--method", "anchored", "--demos", "3", "--steps", "4",
           "--batch-size", "16", "--out", "drive_run", "--no-progress")
    dpctrl(work, "drive", "eval", "--scenario", "fork", "--checkpoint", "drive_run/checkpoint", "--episodes", "1",
           "--json", "drive/eval_tiny.json", "--no-progress")
    dpctrl(work, "drive", "eval", "--checkpoint", "drive-fork", "--episodes", "1", "--json", "drive/eval_shipped.json",
           "--no-progress")
    dpctrl(work, "drive", "bench", "--episodes", "2", "--bench", "anchored=drive_run/checkpoint",
           "--json", "drive/bench.json", "--no-progress")
    res = dpctrl(work, "results", "drive", "drive/bench.json", "drive/eval_tiny.json", "drive/eval_shipped.json")
    assert "|" in res.stdout


def test_plan(work):
    dpctrl(work, "plan", "collect", "--maze", "umaze", "--data-steps", "10000", "--no-progress")
    dpctrl(work, "plan", "train", "--maze", "umaze", "--planner", "trajdiff", "--data-steps", "10000", "--steps", "3",
           "--batch-size", "8", "--out", "plan_run", "--no-progress")
    dpctrl(work, "plan", "eval", "--maze", "umaze", "--planner", "trajdiff", "--checkpoint", "plan_run/checkpoint",
           "--episodes", "1", "--replan-every", "100", "--json", "plan/eval_tiny.json", "--no-progress")
    dpctrl(work, "plan", "bench", "--maze", "umaze", "--episodes", "2", "--bench", "shipped=plan-umaze-trajdiff",
           "tiny=plan_run/checkpoint", "--json", "plan/bench.json", "--no-progress")
    res = dpctrl(work, "results", "plan", "plan/bench.json", "plan/eval_tiny.json")
    assert "|" in res.stdout


def test_pad(work):
    dpctrl(work, "collect", "--env", "metaworld:reach", "--images", "--episodes", "2", "--out",
           "runs/data/metaworld_reach.zarr", "--no-progress")
    dpctrl(work, "train", "--task", "metaworld:reach", "--policy", "pad", "--steps", "3", "--demos", "2",
           "--batch-size", "4", "--threads", "1", "--out", "pad_run", "--no-progress")
    dpctrl(work, "train", "--task", "metaworld:reach", "--images", "--steps", "3", "--demos", "2", "--batch-size", "4",
           "--eval-episodes", "1", "--threads", "1", "--out", "pad_dpt", "--no-progress")
    dpctrl(work, "eval", "--checkpoint", "pad_run/checkpoint", "--env", "metaworld:reach", "--episodes", "1",
           "--max-steps", "8", "--json", "pad/eval_reach.json", "--no-progress")
    dpctrl(work, "pad", "frames", "--checkpoint", "pad_run/checkpoint", "--task", "reach", "--episodes", "1",
           "--png", "pad/frames.png", "--json", "pad/frames_reach.json")
    res = dpctrl(work, "results", "pad", "pad/eval_reach.json", "pad/frames_reach.json")
    assert "reach" in res.stdout
    res = dpctrl(work, "pad", "ship", "--checkpoint", "pad_run/checkpoint", "--name", "pad-tiny", "--command",
                 "dpctrl train --task metaworld:reach --policy pad --steps 3", "--reports", "pad/eval_reach.json")
    assert (work / "home" / "checkpoints" / "pad-tiny" / "recipe.json").exists()
    dpctrl(work, "eval", "--checkpoint", "pad-tiny", "--env", "metaworld:reach", "--episodes", "1", "--max-steps", "4",
           "--no-progress")


# -- a missing extra names the install that adds it --------------------------------------------

@pytest.mark.parametrize("extra,module,args", [
    ("metaworld", "metaworld", ["collect", "--env", "metaworld:reach", "--episodes", "1", "--out", "mw.zarr"]),
    ("highway", "highway_env", ["drive", "eval", "--method", "expert", "--episodes", "1"]),
    ("maze", "gymnasium_robotics", ["plan", "eval", "--planner", "expert", "--episodes", "1"]),
    ("lerobot", "pyarrow", ["lerobot", "export", "runs/data/lift.zarr", "lr_out"]),
])
def test_missing_extra_names_its_install(work, extra, module, args):
    code = (f"import sys; sys.modules[{module!r}] = None; sys.argv[0] = 'dpctrl'; "
            "from dpctrl.launch.cli import main; sys.exit(main())")
    res = dpctrl(work, *args, exe=[sys.executable, "-c", code], expect=2)
    assert f"pip install 'dpctrl[{extra}]'" in res.stderr


def test_readme_python_example_runs(work):
    """The README's "In your own code" block, as a script in the user's directory."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## In your own code", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    (work / "example.py").write_text(code)
    res = dpctrl(work, "example.py", exe=[sys.executable], timeout=300)
    assert res.stdout.startswith("success: True after "), res.stdout
