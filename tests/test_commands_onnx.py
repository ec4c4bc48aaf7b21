"""``dpctrl export`` and the ONNX Runtime deploy path, run the way a user runs them (console script,
subprocess, a temporary directory, tiny sizes)."""
import json

import pytest

pytest.importorskip("onnxruntime")

from test_commands import dpctrl, pytestmark, work  # noqa: E402,F401  (the same harness and skip)


def test_export_then_eval_matches_deploy_onnxruntime(work):
    res = dpctrl(work, "export", "--checkpoint", "lift", "--warm-start", "rti", "--out", "lift_rti_onnx",
                 "--json", "lift_rti_onnx.json")
    assert "warm chunk" in res.stdout and (work / "lift_rti_onnx" / "deploy.json").exists()
    manifest = json.loads((work / "lift_rti_onnx.json").read_text())
    assert set(manifest["graphs"]) == {"cold", "warm", "cold_b1", "warm_b1"}
    common = ["--env", "lift", "--episodes", "2", "--max-steps", "24", "--threads", "1", "--no-progress"]
    dpctrl(work, "eval", "--checkpoint", "lift_rti_onnx", *common, "--json", "evals/export.json")
    dpctrl(work, "eval", "--checkpoint", "lift", "--warm-start", "rti", "--deploy", "onnxruntime", *common,
           "--json", "evals/deploy.json")
    a, b = (json.loads((work / "evals" / f).read_text()) for f in ("export.json", "deploy.json"))
    assert [e["actions_sha1"] for e in a["per_episode"]] == [e["actions_sha1"] for e in b["per_episode"]]
    assert b["checkpoint"] == "lift"  # the report names what the user asked for, not the temporary export
    dpctrl(work, "export", "--checkpoint", "lift", "--warm-start", "rti", "--precision", "int8", "--out", "lift_int8")
    dpctrl(work, "eval", "--checkpoint", "lift_int8", *common, "--json", "evals/int8.json")
    c = json.loads((work / "evals" / "int8.json").read_text())
    assert c["deploy"] == "onnxruntime" and c["precision"] == "int8" and c["episodes"] == 2


def test_export_bad_input_is_a_clear_error(work):
    dpctrl(work, "export", "--checkpoint", "lift", "--out", "lift_onnx")
    res = dpctrl(work, "eval", "--checkpoint", "lift_onnx", "--env", "lift", "--warm-start", "rti", expect=2)
    assert "fixed at export" in res.stderr
    res = dpctrl(work, "export", "--checkpoint", "lift", "--out", "lift_onnx", expect=2)  # never overwrites
    assert "lift_onnx" in res.stderr
    graph = work / "lift_onnx" / "cold.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])  # a truncated copy
    res = dpctrl(work, "eval", "--checkpoint", "lift_onnx", "--env", "lift", "--episodes", "1", expect=2)
    assert "cold.onnx" in res.stderr


def test_run_an_export_in_the_real_time_loop(work):
    dpctrl(work, "export", "--checkpoint", "lift", "--out", "lift_run_onnx")
    res = dpctrl(work, "run", "--checkpoint", "lift_run_onnx", "--robot", "sim:lift", "--episodes", "1",
                 "--rate", "40", "--async", "--json", "run_onnx.json", "--no-progress")
    rep = json.loads((work / "run_onnx.json").read_text())
    assert rep["episodes"] == 1 and rep["cycles"] > 0 and "(async, inference in a process)" in res.stdout
    res = dpctrl(work, "run", "--checkpoint", "lift_run_onnx", "--robot", "sim:lift", "--warm-start", "rti", expect=2)
    assert "fixed at export" in res.stderr


NO_TORCH = ("import sys; [sys.modules.__setitem__(m, None) for m in ('torch', 'dpctrl.policy.diffusion_policy', "
            "'dpctrl.policy.nets', 'dpctrl.policy.train')]; from dpctrl.launch.cli import main; sys.exit(main())")


def test_serve_an_export_without_torch(work):
    """A deployed export is served by a process that cannot import torch (importing it would raise)."""
    import signal
    import subprocess
    import sys

    from test_commands import _env, _free_port
    dpctrl(work, "export", "--checkpoint", "lift", "--warm-start", "rti", "--out", "lift_serve_onnx")
    port, env = str(_free_port()), _env(work, DPCTRL_TOKEN="t0ken")
    server = subprocess.Popen([sys.executable, "-c", NO_TORCH, "serve", "--checkpoint", "lift_serve_onnx", "--port",
                               port, "--threads", "1"], cwd=work, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert line.startswith("serving lift_serve_onnx on tcp://"), line + (server.stderr.read() if server.poll()
                                                                             is not None else "")
        dpctrl(work, "robot", "--server", f"127.0.0.1:{port}", "--robot", "mock", "--rate", "20", "--episodes", "1",
               "--max-cycles", "30", "--json", "robot_onnx.json", "--no-progress", env=env)
        rep = json.loads((work / "robot_onnx.json").read_text())
        assert rep["cycles"] == 30 and rep["requests"] >= 1 and rep["failed_requests"] == 0
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0 and "Traceback" not in err, err
    res = dpctrl(work, "serve", "--checkpoint", "lift_serve_onnx", "--warm-start", "rti", expect=2)
    assert "fixed at export" in res.stderr
