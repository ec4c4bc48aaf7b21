"""``dpctrl lerobot export|import|roundtrip``: LeRobot v3.0 datasets, checked against the real
``lerobot`` package in a side venv.

lerobot needs Python >= 3.12 and a torch of its own, so it lives in its own venv (default
``runs/lerobot-venv``; ``--build`` creates it with ``python3.12 -m venv`` and installs
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
import sys
from pathlib import Path

import numpy as np

LEROBOT_VERSION = "0.4.4"
DEFAULT_VENV = Path("runs/lerobot-venv")
SIDE = Path(__file__).with_name("lerobot_side.py")


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


def _side(python: Path, *args: str) -> dict:
    res = subprocess.run([str(python), str(SIDE), *args], capture_output=True, text=True)
    lines = [ln for ln in res.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"lerobot side `{' '.join(args[:1])}` failed (rc {res.returncode}):\n{res.stderr[-3000:]}")
    out = json.loads(lines[-1])
    out["returncode"] = res.returncode
    return out


def _concat(buf, episodes, key) -> np.ndarray:
    return np.concatenate([buf.episode(int(e), [key])[key] for e in episodes])


def roundtrip(store: str, work: str, python: Path, episodes: int = 5, fps: int = 20) -> dict:
    from dpctrl.data.lerobot import _export_dtype, _is_image, export_lerobot, import_lerobot, lerobot_key, zarr_key
    from dpctrl.data.replay_buffer import ReplayBuffer
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
        arr = _concat(buf, ep_ids, k)
        expected[lerobot_key(k, _is_image(arr.shape, arr.dtype))] = arr.astype(_export_dtype(arr.dtype))
    expected["episode_index"] = np.concatenate([np.full(int(buf.episode_lengths[e]), i) for i, e in enumerate(ep_ids)])
    np.savez(work_dir / "exported_expected.npz", **expected)
    report["export_check"] = _side(python, "check", str(work_dir / "exported"), str(work_dir / "exported_expected.npz"))

    # 2. lerobot -> ours: a state vector, the camera and the action of the same episodes
    image_key = next(k for k in buf.keys() if _is_image(buf.get(k).shape, buf.get(k).dtype))
    vec_keys = [k for k in buf.keys() if k != "action" and k != image_key]
    source = {"observation.state": np.concatenate([_concat(buf, ep_ids, k).reshape(-1, int(np.prod(buf.get(k).shape[1:])))
                                                   for k in vec_keys], 1).astype(np.float32),
              "observation.images.front": _concat(buf, ep_ids, image_key),
              "action": _concat(buf, ep_ids, "action").astype(np.float32),
              "episode_index": expected["episode_index"], "fps": np.array(fps)}
    np.savez(work_dir / "recorded_source.npz", **source)
    report["lerobot_write"] = _side(python, "write", str(work_dir / "recorded_source.npz"), str(work_dir / "recorded"),
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
    report["robot_check"] = _side(python, "robot")
    report["ok"] = bool(report["export_check"].get("ok") and report["import_check"]["ok"] and report["robot_check"].get("ok"))
    return report


def results_table(report: dict, command: str) -> str:
    from dpctrl.launch.results import machine, markdown_table
    ex, wr, im, ro = report["export_check"], report["lerobot_write"], report["import_check"], report["robot_check"]
    rows = [["dpctrl export -> `LeRobotDataset` (pyav backend)", f"{ex['lerobot_episodes']} episodes, {ex['lerobot_frames']} frames",
             "; ".join(f"{k}: {v}" for k, v in ex["keys"].items() if k != "episode_index")],
            ["lerobot writer -> `dpctrl lerobot import`", f"{wr['written_episodes']} episodes, {wr['written_frames']} frames",
             "; ".join(f"{k}: {v}" for k, v in im["keys"].items())
             + f" (vs what LeRobotDataset decodes; lerobot's {', '.join(wr['video_codec'].values())} encoding moved "
             f"pixels by {', '.join(f'{v:.2f}' for v in wr['mean_abs_pixel_change_by_lerobot_encoding'].values())} "
             "on average)"],
            ["`LeRobotRobot` adapter -> subclass of `lerobot.robots.Robot`",
             f"{ro['actions_sent']} actions", f"final joint error {ro['max_error']:.3g}, NaN action refused: "
             f"{ro['nan_action_refused']}, disconnected: {ro['disconnected']}"]]
    return (f"Command: `{command}` — lerobot {report['lerobot']} in its side venv (Python 3.12); machine: {machine()}."
            f" Overall: {'pass' if report['ok'] else 'FAIL'}.\n\n"
            + markdown_table(["direction", "data", "result"], rows))


def cmd_lerobot(args) -> int:
    if args.action == "export":
        from dpctrl.data.lerobot import export_lerobot
        from dpctrl.data.replay_buffer import ReplayBuffer
        info = export_lerobot(ReplayBuffer.open(args.store), args.out, fps=args.fps, task=args.task,
                              robot_type=args.robot_type, overwrite=args.overwrite, progress=not args.no_progress)
        print(f"{args.out}: LeRobot {info['codebase_version']}, {info['total_episodes']} episodes, "
              f"{info['total_frames']} frames at {info['fps']} fps; features {sorted(info['features'])}")
        return 0
    if args.action == "import":
        from dpctrl.data.lerobot import import_lerobot
        buf = import_lerobot(args.dataset, args.out, overwrite=args.overwrite, progress=not args.no_progress)
        print(f"{args.out}: {buf.n_episodes} episodes, {buf.n_steps} steps, keys {buf.keys()}")
        return 0
    python = venv_python(args.venv)
    if python is None:
        if not args.build:
            print(f"no lerobot venv at {args.venv} (and DPCTRL_LEROBOT_PYTHON unset); rerun with --build",
                  file=sys.stderr)
            return 2
        python = build_venv(args.venv)
    report = roundtrip(args.store, args.work, python, episodes=args.episodes, fps=args.fps)
    print(json.dumps(report, indent=2))
    if args.update_readme:
        from dpctrl.launch.results import replace_block
        command = (f"dpctrl lerobot roundtrip --store {args.store} --episodes {args.episodes} --fps {args.fps}"
                   + (f" --json {args.json}" if args.json else "") + f" --update-readme {args.update_readme}")
        replace_block(Path(args.update_readme), "lerobot", results_table(report, command))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def add_parser(sub) -> None:
    p = sub.add_parser("lerobot", help="LeRobot v3.0 datasets: export, import, round trip against real lerobot")
    a = p.add_subparsers(dest="action", required=True)
    e = a.add_parser("export", help="write a zarr store's episodes as a LeRobot v3.0 dataset")
    e.add_argument("store", help="zarr episode store")
    e.add_argument("out", help="dataset directory to create")
    e.add_argument("--fps", type=int, default=20, help="recording rate (robosuite tasks: 20)")
    e.add_argument("--task", default="", help="natural-language task of every episode")
    e.add_argument("--robot-type", default=None)
    i = a.add_parser("import", help="copy a local LeRobot v3.0 dataset into a zarr store")
    i.add_argument("dataset", help="LeRobot dataset directory (meta/info.json inside)")
    i.add_argument("out", help="zarr store to create")
    r = a.add_parser("roundtrip", help="export + import checked by the real lerobot package (side venv)")
    r.add_argument("--store", default="runs/data/lift_images.zarr", help="recorded episodes with a camera")
    r.add_argument("--episodes", type=int, default=5)
    r.add_argument("--fps", type=int, default=20)
    r.add_argument("--work", default="runs/lerobot_roundtrip")
    r.add_argument("--venv", default=str(DEFAULT_VENV))
    r.add_argument("--build", action="store_true", help="create the side venv if it is missing")
    r.add_argument("--json", help="write the report here")
    r.add_argument("--update-readme", metavar="README", help="rewrite this README's lerobot results block")
    for q in (e, i):
        q.add_argument("--overwrite", action="store_true")
        q.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_lerobot)
