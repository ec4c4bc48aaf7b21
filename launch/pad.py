"""PAD on MetaWorld: training (``dpctrl train --policy pad``), the frame-prediction report
and shipping a checkpoint with its reports.

    dpctrl train --task metaworld:reach --policy pad --steps N --out DIR [--no-image-loss]
    dpctrl eval --checkpoint DIR --env metaworld:reach --episodes 50 --json R.json
    dpctrl pad frames --checkpoint DIR --task reach --json R.json   # PSNR vs copy-last-frame

Demonstrations: MetaWorld's scripted policies, ``demos`` successful episodes per task with
64x64 corner-camera frames, in runs/data/metaworld_<task>.zarr (data/collect.py, collected on
first use). The frame report: envs/frames.py.
"""
from __future__ import annotations

import json
from pathlib import Path

from dpctrl.launch.options import command_line, write_json


def train_pad(tasks: list[str], steps: int, out: str | Path, demos: int = 50, image_loss: bool = True,
              batch_size: int = 64, lr: float = 3e-4, seed: int = 0, width: int = 96, depth: int = 4,
              state_view: str = "all", progress: bool = True) -> dict:
    """``state_view``: which state columns the network sees (envs.metaworld_tasks.STATE_VIEWS;
    "proprio+goal" withholds the objects' poses, so objects are known only from the frames)."""
    from dpctrl.data.samples import FrameActionSamples
    from dpctrl.envs.metaworld_tasks import STATE_VIEWS
    from dpctrl.policy.pad import PadConfig, PadPolicy
    from dpctrl.data.collect import demo_store, store_path
    from dpctrl.policy.train import train_config_model
    if state_view not in STATE_VIEWS:
        raise ValueError(f"unknown state view {state_view!r}; known: {sorted(STATE_VIEWS)}")
    stores = [demo_store(t, demos, progress) for t in tasks]
    cfg = PadConfig(tasks=list(tasks), width=width, depth=depth, image_loss_weight=1.0 if image_loss else 0.0,
                    lambda_start=0.1, lambda_end=1.0, lambda_steps=max(1, steps // 2),
                    state_index=STATE_VIEWS[state_view])
    ds = FrameActionSamples(stores, cfg.image_key, cfg.horizon, cfg.k_future, cfg.frame_stride,
                            episodes=[range(demos)] * len(stores))
    import torch
    torch.manual_seed(seed)
    model = PadPolicy(cfg, seed=seed)
    model.set_stats(ds.state, ds.action)
    recipe = {"command": command_line(),
              "recipe": {"tasks": list(tasks), "demos": demos, "steps": steps, "batch_size": batch_size, "lr": lr,
                         "image_loss": image_loss, "state_view": state_view, "data": [str(store_path(t)) for t in tasks]}}
    return train_config_model(model, ds, out, recipe, steps, batch_size, lr, seed=seed, progress=progress)


def cmd_train_pad(args) -> int:
    if not args.task.startswith("metaworld:"):
        raise ValueError("the PAD policy trains on MetaWorld tasks: --task metaworld:<task>[,<task>...] --policy pad")
    tasks = args.task.split(":", 1)[1].split(",")
    rec = train_pad(tasks, args.steps, args.out, demos=args.demos or 50, image_loss=not args.no_image_loss,
                    batch_size=args.batch_size or 64, lr=args.lr, seed=args.seed, state_view=args.pad_state,
                    progress=not args.no_progress)
    print(f"PAD {'(w/o image loss) ' if args.no_image_loss else ''}on {tasks}: {args.steps} steps, "
          f"{rec['ms_per_batch']:.0f} ms per batch of {args.batch_size or 64}, {rec['params'] / 1e6:.2f}M params; "
          f"checkpoint in {args.out}/checkpoint")
    return 0


def cmd_pad(args) -> int:
    from dpctrl.policy.pad import PadPolicy
    import torch
    torch.set_num_threads(args.threads)
    if args.what == "ship":
        if not (args.name and args.command):
            raise ValueError("pad ship needs --name and --command (the command that trained the checkpoint)")
        from dpctrl.policy.shipping import ship_copy
        print(f"shipped {args.checkpoint} as {args.name!r} in "
              f"{ship_copy(args.checkpoint, args.name, args.command, args.reports, args.to)}")
        return 0
    policy = PadPolicy.load(args.checkpoint)
    from dpctrl.envs.frames import frame_report
    from dpctrl.launch.results import state_view_of
    rep = frame_report(policy, args.task, args.episodes, png=args.png)
    rep["checkpoint"] = str(args.checkpoint)
    rep["image_loss_weight"] = policy.cfg.image_loss_weight
    rep["tasks"] = list(policy.cfg.tasks)
    rep["state_view"] = state_view_of(policy.cfg.to_dict())
    rep["command"] = (f"dpctrl pad frames --checkpoint {args.checkpoint} --task {args.task} --episodes {args.episodes}"
                      + (f" --png {args.png}" if args.png else ""))
    print(json.dumps(rep, indent=1))
    write_json(args.json, rep)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("pad", help="PAD on MetaWorld: `frames` (predicted vs real future frames, PSNR), "
                                    "`ship` (copy a checkpoint into $DPCTRL_HOME/checkpoints with its reports)")
    p.add_argument("what", choices=["frames", "ship"])
    p.add_argument("--name", help="ship: the checkpoint's name (then `--checkpoint NAME` anywhere)")
    p.add_argument("--to", help="ship: a directory to write <name>/ into (default: $DPCTRL_HOME/checkpoints)")
    p.add_argument("--command", help="ship: the command that trained the checkpoint")
    p.add_argument("--reports", nargs="*", default=[], help="ship: eval / frames JSON reports of this checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--task", default="reach")
    p.add_argument("--episodes", type=int, default=10, help="held-out expert episodes")
    p.add_argument("--png", help="write current | real future | predicted frames here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    p.set_defaults(func=cmd_pad)
