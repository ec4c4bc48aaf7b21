"""``dpctrl sweep SPEC``: a grid of checkpoints x inference variants x a seed range, run as one
Ray job (envs/distributed.py ``sweep``), one results table.

A spec (JSON, or YAML with PyYAML installed)::

    env: lift
    seeds: {start: 100000, count: 200}
    checkpoints: [lift]
    variants:                        # name: the dpctrl eval options of that variant
      ddpm-100: --sampler ddpm --steps 100
      ddim-10: ""
      rti: --warm-start rti
    batch: 10                        # optional: envs in lockstep per worker

Each variant's options are parsed by ``dpctrl eval``'s own parser, so a cell is exactly the
``dpctrl eval --checkpoint C --env E <options>`` of the same seeds, per seed (a test checks).
"""
from __future__ import annotations

import argparse
import json
import shlex
from functools import partial
from pathlib import Path

from dpctrl.launch.options import add_ray_args, command_line, write_json
from dpctrl.launch.tables import machine, markdown_table

SPEC_KEYS = {"env", "seeds", "checkpoints", "variants", "batch"}


def read_spec(path: str) -> dict:
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError as err:
            raise ImportError("a YAML sweep spec needs PyYAML: pip install 'dpctrl[ray]'") from err
        spec = yaml.safe_load(text)
    else:
        spec = json.loads(text)
    if not isinstance(spec, dict) or not {"env", "seeds", "checkpoints", "variants"} <= set(spec):
        raise ValueError(f"{path}: a sweep spec needs env, seeds {{start, count}}, checkpoints and variants")
    if set(spec) - SPEC_KEYS:
        raise ValueError(f"{path}: unknown keys {sorted(set(spec) - SPEC_KEYS)}; known: {sorted(SPEC_KEYS)}")
    if not isinstance(spec["variants"], dict) or not spec["variants"]:
        raise ValueError(f"{path}: variants maps a name to its dpctrl eval options")
    return spec


def eval_options(checkpoint: str, env: str, options: str) -> argparse.Namespace:
    """``dpctrl eval``'s parsed options for one cell (its parser's errors name the bad option)."""
    from dpctrl.launch import eval as evaluation
    parser = argparse.ArgumentParser(prog="dpctrl sweep", exit_on_error=False)
    evaluation.add_parser(parser.add_subparsers(dest="command"))
    try:
        return parser.parse_args(["eval", "--checkpoint", checkpoint, "--env", env, *shlex.split(options or "")])
    except (argparse.ArgumentError, SystemExit) as err:
        raise ValueError(f"variant options {options!r}: {err}") from None


def cmd_sweep(args: argparse.Namespace) -> int:
    from dpctrl.envs.distributed import Cell, open_pool, sweep
    from dpctrl.launch.eval import configured_policy
    spec = read_spec(args.spec)
    env, start, count = spec["env"], int(spec["seeds"]["start"]), int(spec["seeds"]["count"])
    cells = []
    for ckpt in spec["checkpoints"]:
        for name, options in spec["variants"].items():
            ev = eval_options(ckpt, env, options)
            configured_policy(ev)  # a bad checkpoint or variant fails here, before Ray starts
            run_opts = {"max_steps": ev.max_steps, "action_steps": ev.action_steps, "delay": ev.delay,
                        "overlap": ev.overlap}
            settings = {"checkpoint": ckpt, "env": env, "options": options or "", "seed_start": start,
                        "episodes": count}
            cells.append(Cell(f"{Path(ckpt).name}__{name}", partial(configured_policy, ev), run_opts, settings))
    pool = open_pool(args.workers, args.worker_cpus, args.worker_gpus, args.threads, args.ray_address)
    try:
        reports = sweep(cells, env, list(range(start, start + count)), args.out, pool,
                        batch=int(spec.get("batch", 10)), progress=not args.no_progress)
    finally:
        pool.close()
    rows = [[c.settings["checkpoint"], c.name.split("__", 1)[1], f"`{c.settings['options']}`",
             f"{r['success_rate']:.3f}", r["nfe_per_chunk"], f"{r['chunk_latency_ms']['p50']:.1f}",
             f"{r['chunk_latency_ms']['p99']:.1f}"] for c, r in zip(cells, reports.values())]
    table = markdown_table(["checkpoint", "variant", "eval options", "success", "network calls",
                            "chunk p50 ms", "chunk p99 ms"], rows)
    print(f"Command: `{command_line()}` — machine: {machine()}; {count} seeds from {start} per cell, "
          f"{args.workers} workers\n\n{table}")
    write_json(args.json, {"command": command_line(), "spec": spec, "cells": reports, "workers": args.workers,
                           "startup_seconds": pool.start_s, "workers_lost": pool.lost})
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("sweep", help="checkpoints x inference variants x seeds as one Ray job, one table")
    s.add_argument("spec", help="the sweep spec, JSON or YAML (see dpctrl.launch.sweep)")
    s.add_argument("--out", required=True, help="folder of finished cells (kept and skipped on rerun)")
    add_ray_args(s, "the cells' seed groups run on")
    s.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    s.add_argument("--json", help="write every cell's report here")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_sweep)
