"""The fused decoder kernels (policy/accel/fused.py), tested in a process of their own.

Triton and Mesa's software EGL (the headless renderer of the simulators) cannot share a
process here: each bundles LLVM, and whichever loads second crashes (rendering after
``import triton`` raises an EGLError; ``import triton`` after rendering segfaults). torch
imports Triton on its own whenever Triton is installed (``torch._dynamo``, e.g. at optimizer
construction), so Triton must not be in the environment the package runs in. ``make
setup-test`` installs it into ``.triton/`` instead, and this test runs the cases in
tests/policy/fused_cases.py in a subprocess with ``.triton`` on its path (no rendering
there). On a GPU machine whose torch brings Triton, the same subprocess runs the compiled
kernels. The ``slow`` cases run under ``make test-all``.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).with_name("fused_cases.py")
PRIVATE = ROOT / ".triton"


def _env() -> dict:
    env = dict(os.environ)
    if importlib.util.find_spec("triton") is None:
        if not (PRIVATE / "triton").is_dir():
            pytest.skip("Triton is not installed: `make setup-test` puts it in .triton/ "
                        "(pip install --target .triton triton==3.7.0)")
        env["PYTHONPATH"] = os.pathsep.join([str(PRIVATE), env.get("PYTHONPATH", "")])
    return env


def _run(marker: str) -> None:
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker, str(CASES)],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1800)
    print(res.stdout[-4000:])
    assert res.returncode == 0, f"fused kernel cases failed (rc {res.returncode}):\n{res.stdout[-6000:]}\n{res.stderr[-2000:]}"
    assert " passed" in res.stdout


def test_fused_kernel_cases():
    _run("not slow")


@pytest.mark.slow
def test_fused_kernel_slow_cases():
    _run("slow")
