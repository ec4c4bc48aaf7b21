"""``dpctrl collect``: a scripted expert's successful episodes into a zarr store (data/collect.py)."""
from __future__ import annotations

import argparse

from dpctrl.launch.options import add_ray_args, write_json


def cmd_collect(args: argparse.Namespace) -> int:
    from dpctrl import envs
    from dpctrl.data.collect import collect
    cams = envs.parse_cameras(args.cameras)
    rep = collect(args.env, args.episodes, args.out, images=args.images or args.cameras is not None, seed=args.seed,
                  progress=not args.no_progress, cameras=cams, recoveries=args.recoveries, workers=args.workers,
                  worker_cpus=args.worker_cpus, ray_address=args.ray_address)
    if not rep.attempts:
        print(f"{rep.env}: {rep.out} already holds {rep.episodes} episodes; nothing to add")
    else:
        print(f"{rep.env}: {rep.episodes} {'recovery ' if args.recoveries else ''}episodes in {rep.out} (+{rep.added} "
              f"this run); expert success {rep.successes}/{rep.attempts} = {rep.success_rate:.1%}; {rep.steps_added} "
              f"steps in {rep.seconds:.1f} s = {rep.steps_per_s:.1f} steps/s")
    write_json(args.json, rep.as_dict())
    return 0


def add_parser(sub) -> None:
    c = sub.add_parser("collect", help="run a scripted expert and store successful episodes (zarr)")
    c.add_argument("--env", required=True, help="task name, e.g. lift or stack")
    c.add_argument("--episodes", type=int, required=True, help="episodes the store should hold (resumes)")
    c.add_argument("--out", required=True, help="zarr directory to create or append to")
    c.add_argument("--images", action="store_true", help="also store 84x84 camera images (--cameras)")
    c.add_argument("--cameras", help="comma-separated robosuite cameras (implies --images; default: agentview), "
                                     "e.g. agentview,robot0_eye_in_hand")
    c.add_argument("--recoveries", action="store_true", help="lift, stack, can: store recovery episodes (first grasp "
                   "missed on purpose, then regrasped; kept from the miss on) in a store of their own")
    c.add_argument("--seed", type=int, default=0, help="first episode seed")
    add_ray_args(c, "the experts run on (this process writes the store)", gpus=False)
    c.add_argument("--json", help="write a machine-readable report here")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_collect)
