"""``dpctrl lerobot export|import|roundtrip``: LeRobot v3.0 datasets (data/lerobot.py,
data/lerobot_import.py), checked against the real ``lerobot`` package in a side venv
(data/lerobot_roundtrip.py)."""
from __future__ import annotations

import json
import sys

from dpctrl.launch.options import write_json
from dpctrl.launch.results import add_update_docs


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
        from dpctrl.data.lerobot_import import import_lerobot
        buf = import_lerobot(args.dataset, args.out, overwrite=args.overwrite, progress=not args.no_progress)
        print(f"{args.out}: {buf.n_episodes} episodes, {buf.n_steps} steps, keys {buf.keys()}")
        return 0
    from dpctrl.data.lerobot_roundtrip import build_venv, roundtrip, venv_python
    python = venv_python(args.venv)
    if python is None:
        if not args.build:
            print(f"no lerobot venv at {args.venv} (and DPCTRL_LEROBOT_PYTHON unset); rerun with --build",
                  file=sys.stderr)
            return 2
        python = build_venv(args.venv)
    report = roundtrip(args.store, args.work, python, episodes=args.episodes, fps=args.fps)
    print(json.dumps(report, indent=2))
    if args.update_docs:
        from dpctrl.launch.results import lerobot_table, replace_block
        command = (f"dpctrl lerobot roundtrip --store {args.store} --episodes {args.episodes} --fps {args.fps}"
                   + (f" --json {args.json}" if args.json else "") + " --update-docs")
        replace_block(args.update_docs, "lerobot", lerobot_table(report, command))
    write_json(args.json, report)
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
    r.add_argument("--venv", default="runs/lerobot-venv")
    r.add_argument("--build", action="store_true", help="create the side venv if it is missing")
    r.add_argument("--json", help="write the report here")
    add_update_docs(r, "round-trip")
    for q in (e, i):
        q.add_argument("--overwrite", action="store_true")
        q.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_lerobot)
