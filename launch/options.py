"""Options and output helpers shared by the command modules (``dpctrl ...``); no command logic."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def write_json(path: str | None, payload: dict) -> None:
    """Write ``payload`` to ``path`` (parents created) if a path was given."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def command_line() -> str | None:
    """The ``dpctrl ...`` command that is running, for reports; None when not started as ``dpctrl``."""
    return "dpctrl " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[0].endswith("dpctrl") else None


def label_pairs(values: list[str] | None, usage: str) -> dict[str, str]:
    """``LABEL=CHECKPOINT`` arguments as an ordered dict; ValueError with ``usage`` otherwise."""
    if not values or not all("=" in v for v in values):
        raise ValueError(f"{usage} (got {values})")
    return dict(v.split("=", 1) for v in values)


def add_warm_start_args(p: argparse.ArgumentParser) -> None:
    """The inference-variant options of every command that runs a policy (eval, run, serve)."""
    p.add_argument("--warm-start", choices=["off", "rti"], default="off", help="RTI warm starts")
    p.add_argument("--rti-k", type=int, help="warm-start level K' (default: the checkpoint's rti.json, else 2)")
    p.add_argument("--rti-noise", action=argparse.BooleanOptionalAction, default=None,
                   help="forward-diffuse the guess to K' (SDEdit; default: the checkpoint's rti.json, else off)")
    p.add_argument("--rti-tail", choices=["fine", "coarse"],
                   help="steps below K': every level (fine) or the sampler's own grid (coarse); "
                        "default: the checkpoint's rti.json, else fine")
    p.add_argument("--rti-reproduce", action="store_true", help="mimic the published t -> t-1 timestep mismatch")
    p.add_argument("--cache", choices=["off", "bac", "uniform", "teacache"], default="off",
                   help="block caching (bac: the checkpoint's cache_bac.json from `dpctrl calibrate cache`)")
    p.add_argument("--cache-budget", type=int, help="update steps per run (uniform; checked against bac's)")


def add_ray_args(p: argparse.ArgumentParser, what: str, gpus: bool = True) -> None:
    """``--workers N`` and where they run (envs/distributed.py)."""
    p.add_argument("--workers", type=int, default=1, help=f"Ray workers {what} (1: in this process, no Ray)")
    p.add_argument("--ray-address", help="a running Ray cluster (ray start --head); default: a local one "
                                         "started on demand and stopped at the end")
    p.add_argument("--worker-cpus", type=float, default=1, help="CPUs Ray reserves per worker")
    if gpus:
        p.add_argument("--worker-gpus", type=float, default=0, help="GPUs Ray reserves per worker")


def apply_warm_start(policy, args: argparse.Namespace) -> None:
    """Set the warm start and block cache that ``add_warm_start_args`` parsed."""
    from dpctrl.policy.accel.cache import cache_for
    from dpctrl.policy.accel.warmstart import rti_for
    if args.warm_start == "rti":
        chosen = getattr(args, "sampler", None) or getattr(args, "steps", None)  # else rti.json's grid
        policy.set_warm_start(rti_for(args.checkpoint, policy, grid=not chosen, k=args.rti_k, noise=args.rti_noise,
                                      reproduce=args.rti_reproduce, tail=args.rti_tail))
    if args.cache != "off":
        policy.set_cache(cache_for(args.cache, args.checkpoint, policy, budget=args.cache_budget))


def compare_and_write(res: dict, args: argparse.Namespace) -> None:
    """``--compare-eval``: add and print the synchronous eval's success on the same seeds; then ``--json``."""
    if args.compare_eval:
        from dpctrl.control.session import compare_with_eval
        res["vs_eval"] = cmp = compare_with_eval(res, args.compare_eval)
        print(f"same {cmp['seeds']} seeds in {args.compare_eval}: eval {cmp['eval_success_rate']:.3f}, this run "
              f"{cmp['run_success_rate']:.3f} ({cmp['difference_points']:+.1f} points)")
    write_json(args.json, res)


def publish(args: argparse.Namespace, block: str, command: str, note: str, table: str, rep: dict) -> int:
    """Print a benchmark's table under its command and machine; write --json and the results block."""
    from dpctrl.launch.results import machine, replace_block
    text = f"Command: `{command}` — machine: {machine()}; {note}\n\n{table}"
    print(text)
    write_json(args.json, {"command": command, "machine": machine(), **rep})
    if getattr(args, "update_docs", None):
        replace_block(args.update_docs, block, text)
    return 0
