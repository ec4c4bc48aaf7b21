"""``dpctrl view PATH``: an episode store's episodes on Rerun's timelines (data/view.py), or a
training run's TensorBoard curves as a picture (policy/curves.py)."""
from __future__ import annotations

import argparse

from dpctrl.launch.options import write_json


def cmd_view(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dpctrl.data.view import plot_recording, view_store
    if (Path(args.store) / "tb").is_dir():  # a training run's folder
        from dpctrl.policy.curves import plot_curves
        if not args.plot:
            raise ValueError(f"{args.store} is a training run: --plot F.png draws its curves, or run "
                             f"`tensorboard --logdir {args.store}/tb`")
        counts = plot_curves(Path(args.store) / "tb", args.plot, title=f"dpctrl train: {args.store}")
        print(f"{args.store}: curves {', '.join(f'{k} ({n} points)' for k, n in counts.items())} -> {args.plot}")
        return 0
    episodes = [int(e) for e in args.episodes.split(",")] if args.episodes else None
    if args.plot and not args.out:
        raise ValueError("--plot draws from the recording: give --out F.rrd too")
    res = view_store(args.store, episodes, args.out, args.spawn)
    if args.plot:
        res["plot"] = plot_recording(args.out, args.plot)
    kind = "a control-loop record" if res["loop_record"] else "an episode store"
    print(f"{args.store} ({kind}): {len(res['episodes'])} episodes, {res['steps']} steps"
          + (f" -> {args.out} (open it with `rerun {args.out}`)" if args.out else " -> the viewer"))
    write_json(args.json, res)
    return 0


def add_parser(sub) -> None:
    v = sub.add_parser("view", help="an episode store (demos or a run's --record) as a Rerun recording, "
                                    "or a training run's curves")
    v.add_argument("store", help="a zarr episode store, or a dpctrl train output folder (with --plot)")
    v.add_argument("--episodes", help="episode indices, comma-separated (default: all)")
    v.add_argument("--out", help="write the recording to this .rrd file")
    v.add_argument("--spawn", action="store_true", help="show it in a Rerun viewer (needs a display)")
    v.add_argument("--plot", metavar="F.png", help="a picture read back from the recording (its first episode), "
                                                  "or a training run's curves")
    v.add_argument("--json", help="write a summary here")
    v.set_defaults(func=cmd_view)
