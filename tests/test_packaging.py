"""The package as users get it: one import root, no bare imports, a wheel that holds only
``dpctrl/``, and an installed wheel that works beside modules named like its sub-packages."""
import ast
import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("policy", "envs", "control", "data", "launch")


def _sources() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    return [ROOT / f for f in tracked] if tracked else [p for p in ROOT.rglob("*.py") if ".triton" not in p.parts]


def test_no_module_imports_a_bare_subpackage():
    """Inside the package and its tests, imports are ``dpctrl.``-absolute or relative: a bare
    ``import data`` would pick up a user's data.py, or ROS 2's ``launch``."""
    bad = []
    for f in _sources():
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            bad += [f"{f.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in SUBPACKAGES]
    assert not bad, "bare imports: " + ", ".join(bad)


def test_pyproject_lists_every_subpackage():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {"dpctrl"} | {"dpctrl." + str(p.parent.relative_to(ROOT)).replace(os.sep, ".")
                            for top in SUBPACKAGES for p in (ROOT / top).rglob("__init__.py")}
    assert set(cfg["packages"]) == on_disk and cfg["package-dir"] == {"dpctrl": "."}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check", "-w",
                    str(out), str(ROOT)], check=True, capture_output=True, text=True)
    (whl,) = out.glob("dpctrl-0.2.0-*.whl")
    return whl


def test_wheel_holds_only_dpctrl(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"dpctrl", "dpctrl-0.2.0.dist-info"}
    for must in ("dpctrl/__init__.py", "dpctrl/policy/checkpoints/lift/model.safetensors",
                 "dpctrl/policy/checkpoints/lift/rti.json", "dpctrl/launch/cli.py", "dpctrl/launch/bench/gpu_check.sh"):
        assert must in names
    assert not [n for n in names if n.startswith("dpctrl/tests/") or "__pycache__" in n]


DECOYS = {"data.py": "raise ImportError('decoy data.py imported')\n",
          "policy.py": "raise ImportError('decoy policy.py imported')\n",
          "envs.py": "raise ImportError('decoy envs.py imported')\n",
          "control/__init__.py": "raise ImportError('decoy control/ imported')\n",
          "launch/__init__.py": "raise ImportError('decoy launch/ imported')\n"}


def test_installed_wheel_beside_decoy_modules(wheel, tmp_path):
    """A fresh venv (this machine's torch through --system-site-packages), the wheel installed,
    and modules named like the sub-packages in the working directory: the demo and the API work."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True, text=True)
    work = tmp_path / "work"
    for name, text in DECOYS.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    env = {**os.environ, "DPCTRL_HOME": str(tmp_path / "home"), "MUJOCO_GL": "egl"}
    api = subprocess.run([str(py), "-c", "import dpctrl; p = dpctrl.load_policy('lift'); "
                          "print(dpctrl.__file__, type(p).__name__)"], cwd=work, env=env, capture_output=True, text=True)
    assert api.returncode == 0, api.stderr
    where, cls = api.stdout.split()
    assert Path(where).is_relative_to(env_dir) and cls == "DiffusionPolicy"
    demo = subprocess.run([str(env_dir / "bin" / "dpctrl"), "demo", "--episodes", "2", "--no-progress"], cwd=work,
                          env=env, capture_output=True, text=True, timeout=1200)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "| DDIM-10 |" in demo.stdout and (work / "runs" / "demo" / "demo.json").exists()
    # a checkpoint a user ships never lands in site-packages
    shipped_lift = Path(where).parent / "policy" / "checkpoints" / "lift"
    ship = subprocess.run([str(env_dir / "bin" / "dpctrl"), "ship", "--from", str(shipped_lift), "--name", "mine",
                           "--to", str(shipped_lift.parent)], cwd=work, env=env, capture_output=True, text=True)
    assert ship.returncode == 2 and "inside an installed package (site-packages)" in ship.stderr
    assert not (shipped_lift.parent / "mine").exists()
