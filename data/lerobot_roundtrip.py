"""LeRobot v3.0 datasets checked against the real ``lerobot`` package in a side venv
(``dpctrl lerobot roundtrip``).

lerobot needs Python >= 3.12 and a torch of its own, so it lives in its own venv (default
``runs/lerobot-venv``; ``build_venv`` creates it with ``python3.12 -m venv`` and installs
``lerobot==0.4.4``: about 8 GB, torch comes as a CUDA build from PyPI). The round trip:

1. export recorded episodes of a zarr store here -> dataset A; ``lerobot_side.py check``
   loads A with ``LeRobotDataset`` and compares every frame and action with the store;
2. ``lerobot_side.py write`` records episodes with lerobot's own writer (AV1 video) -> B and
   dumps what ``LeRobotDataset`` reads back; B is imported here and compared with that dump;
3. ``lerobot_side.py robot``: the robot adapter drives a lerobot ``Robot`` subclass.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from dpctrl.data.lerobot import export_dtype, export_lerobot, is_image, lerobot_key, zarr_key
from dpctrl.data.lerobot_import import import_lerobot
from dpctrl.data.replay_buffer import ReplayBuffer

LEROBOT_VERSION = "0.4.4"
DEFAULT_VENV = Path("runs/lerobot-venv")
SIDE = Path(__file__).parents[1] / "control" / "lerobot_side.py"  # run by the side venv's python


def venv_python(venv: str | os.PathLike | None = None) -> Path | None:
    """The side venv's python if it exists and imports lerobot (``DPCTRL_LEROBOT_PYTHON`` wins)."""
    candidates = [os.environ.get("DPCTRL_LEROBOT_PYTHON")] if os.environ.get("DPCTRL_LEROBOT_PYTHON") else []
    candidates.append(str(Path(venv or DEFAULT_VENV) / "bin" / "python"))
    for c in candidates:
        if c and Path(c).is_file() and subprocess.run([c, "-c", "import lerobot"], capture_output=True).returncode == 0:
            return Path(c)
    return None


def build_venv(venv: str | os.PathLike) -> Path:
    py312 = shutil.which("python3.12") or next(
        (str(p) for p in sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))), None)
    if py312 is None:
        raise RuntimeError("lerobot needs Python >= 3.12 and no python3.12 was found (pyenv install 3.12)")
    venv = Path(venv)
    print(f"building {venv} with {py312} (lerobot=={LEROBOT_VERSION}; several GB) ...", flush=True)
    subprocess.run([py312, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, f"lerobot=={LEROBOT_VERSION}"], check=True)
    return venv / "bin" / "python"


def side(python: Path, *args: str) -> dict:
    res = subprocess.run([str(python), str(SIDE), *args], capture_output=True, text=True)
    lines = [ln for ln in res.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"lerobot side `{' '.join(args[:1])}` failed (rc {res.returncode}):\n{res.stderr[-3000:]}")
    out = json.loads(lines[-1])
    out["returncode"] = res.returncode
    return out


def concat_episodes(buf, episodes, key) -> np.ndarray:
    return np.concatenate([buf.episode(int(e), [key])[key] for e in episodes])


def roundtrip(store: str, work: str, python: Path, episodes: int = 5, fps: int = 20) -> dict:
    """Export ``episodes`` of ``store`` and check them with ``LeRobotDataset``; record them with
    lerobot's writer and import that; drive a lerobot ``Robot`` subclass through the adapter.
    ``python``: the side venv's interpreter. Returns the three checks and ``ok``."""
    work_dir = Path(work)
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    buf = ReplayBuffer.open(store)
    ep_ids = list(range(min(episodes, buf.n_episodes)))
    report: dict = {"store": store, "episodes": len(ep_ids), "lerobot": LEROBOT_VERSION}

    # 1. ours -> lerobot
    export_lerobot(buf, work_dir / "exported", fps=fps, task="lift the cube", robot_type="sim", episodes=ep_ids,
                   progress=False)
    expected = {}
    for k in buf.keys():
        arr = concat_episodes(buf, ep_ids, k)
        expected[lerobot_key(k, is_image(arr.shape, arr.dtype))] = arr.astype(export_dtype(arr.dtype))
    expected["episode_index"] = np.concatenate([np.full(int(buf.episode_lengths[e]), i) for i, e in enumerate(ep_ids)])
    np.savez(work_dir / "exported_expected.npz", **expected)
    report["export_check"] = side(python, "check", str(work_dir / "exported"), str(work_dir / "exported_expected.npz"))

    # 2. lerobot -> ours: a state vector, the camera and the action of the same episodes
    image_key = next(k for k in buf.keys() if is_image(buf.get(k).shape, buf.get(k).dtype))
    vec_keys = [k for k in buf.keys() if k != "action" and k != image_key]
    source = {"observation.state": np.concatenate([concat_episodes(buf, ep_ids, k).reshape(-1, int(np.prod(buf.get(k).shape[1:])))
                                                   for k in vec_keys], 1).astype(np.float32),
              "observation.images.front": concat_episodes(buf, ep_ids, image_key),
              "action": concat_episodes(buf, ep_ids, "action").astype(np.float32),
              "episode_index": expected["episode_index"], "fps": np.array(fps)}
    np.savez(work_dir / "recorded_source.npz", **source)
    report["lerobot_write"] = side(python, "write", str(work_dir / "recorded_source.npz"), str(work_dir / "recorded"),
                                    str(work_dir / "recorded_lerobot_read.npz"))
    imported = import_lerobot(work_dir / "recorded", work_dir / "recorded.zarr", progress=False)
    seen = dict(np.load(work_dir / "recorded_lerobot_read.npz"))
    keys = {}
    for name in ("observation.state", "observation.images.front", "action"):
        have = np.concatenate([imported.episode(i, [zarr_key(name)])[zarr_key(name)] for i in range(imported.n_episodes)])
        keys[name] = "identical" if have.shape == seen[name].shape and np.array_equal(have, seen[name]) else (
            f"differs (max abs {float(np.abs(have.astype(float) - seen[name]).max()):.3g})")
    report["import_check"] = {"episodes": imported.n_episodes, "keys": keys,
                              "ok": all(v == "identical" for v in keys.values())}

    # 3. the robot adapter against lerobot's Robot class
    report["robot_check"] = side(python, "robot")
    report["ok"] = bool(report["export_check"].get("ok") and report["import_check"]["ok"] and report["robot_check"].get("ok"))
    return report


