"""``dpctrl bench KIND``: one sub-command per benchmark, each with only its own options.

Every kind prints its table under the command and the machine, and writes ``--json``. Kinds
that time a checkpoint on observation windows read them from the checkpoint's training store
(its recipe's) or ``--data``; where that store does not exist yet, they collect the few expert
episodes they need into it first and say so on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dpctrl.launch.options import publish, write_json
from dpctrl.launch.results import add_update_docs

KINDS = {
    "experts": "scripted-expert success over seeded episodes, and collect speed",
    "loop": "control-loop timing against a synthetic policy and a mock arm",
    "cache": "block caching: action error and speed per base sampler",
    "deploy": "eager vs TorchScript vs ONNX Runtime fp32 and int8 (CPU deploy paths)",
    "policy": "chunk latency of every inference variant",
    "gpu": "CUDA-graph path: latency, precision error, 500 Hz loop (needs a CUDA device)",
    "peer": "next to LeRobot's diffusion policy (needs the lerobot side venv)",
    "delay": "success and boundary jump of each overlap mode vs simulated inference delay",
    "overlap": "per-chunk cost of each overlap mode (rtc, bid, inpaint, prefix) vs the plain sampler",
    "workers": "evaluation throughput on 1, 2, ... Ray workers vs one process, start-up included",
}


def bench_store(args: argparse.Namespace, episodes: int) -> str:
    """Torch threads set; the demo store for a checkpoint benchmark: ``--data``, else the one the
    checkpoint's recipe names, grown to ``episodes`` expert episodes of the recipe's task where it
    holds fewer or does not exist (a line on stderr says so); a missing ``--data`` is an error."""
    import torch

    from dpctrl.policy import checkpoint, registry
    torch.set_num_threads(args.threads)
    if args.data:
        if not Path(args.data).exists():
            raise FileNotFoundError(f"no dataset at {args.data}")
        return args.data
    path = checkpoint.resolve(args.checkpoint)
    recipe_file = path / "recipe.json"
    if not recipe_file.exists():
        raise FileNotFoundError(f"{path} has no recipe.json naming its training data; pass --data STORE.zarr")
    recipe = json.loads(recipe_file.read_text())
    data = recipe["data"]["path"]
    from dpctrl.data import ReplayBuffer
    have = ReplayBuffer.open(data).n_episodes if Path(data).exists() else 0
    if have >= episodes:
        return data
    task = recipe.get("task")
    if task is None:
        raise FileNotFoundError(f"{data} holds {have} of the {episodes} episodes this bench needs and {recipe_file} "
                                f"names no task to collect; pass --data")
    from dpctrl import envs
    from dpctrl.data.collect import collect
    image_keys = registry.load_policy(path).cfg.image_keys
    cams = envs.cameras_of(image_keys)
    print(f"dpctrl bench: {f'no dataset at {data}' if not have else f'{data} holds {have} episodes'}; collecting "
          f"{episodes - have} {task} expert episodes into it (dpctrl collect --env {task} --episodes {episodes} "
          f"--out {data}" + (f" --cameras {','.join(cams)}" if image_keys else "") + ")", file=sys.stderr, flush=True)
    collect(task, episodes, data, images=bool(image_keys), cameras=cams, progress=not args.no_progress)
    return data


def _experts(args) -> int:
    from dpctrl import envs
    from dpctrl.launch.bench.experts import bench_experts, markdown
    from dpctrl.launch.results import machine, replace_block
    rows = bench_experts(args.tasks, args.episodes, args.collect_episodes, progress=not args.no_progress)
    command = (f"dpctrl bench experts --episodes {args.episodes} --collect-episodes {args.collect_episodes}"
               + (" --tasks " + " ".join(args.tasks) if args.tasks != list(envs.ROBOSUITE_TASKS) else ""))
    table = markdown(rows, command, machine())
    print(table)
    write_json(args.json, {"command": command, "machine": machine(), "rows": rows})
    if args.update_docs:
        replace_block(args.update_docs, "experts", table)
    return 0


def _loop(args) -> int:
    from dpctrl.launch.results import machine, markdown_table, replace_block
    from dpctrl.launch.bench.loop import bench_loop
    rows = bench_loop(args.rate, args.latency_ms, args.chunk, args.cycles, status=not args.no_progress,
                      rerun=args.rerun)
    command = (f"dpctrl bench loop --rate {args.rate:g} --latency-ms {args.latency_ms:g} --chunk {args.chunk} "
               f"--cycles {args.cycles}" + (" --rerun" if args.rerun else ""))
    body = markdown_table(
        ["mode", "cycles", "deadline misses", "overruns", "jitter p50 (ms)", "p99 (ms)", "max (ms)"],
        [[r["mode"], r["cycles"], r["deadline_misses"], r["overruns"], f"{r['period_jitter_ms']['p50']:.3f}",
          f"{r['period_jitter_ms']['p99']:.3f}", f"{r['period_jitter_ms']['max']:.2f}"] for r in rows])
    lines = [f"Command: `{command}` — machine: {machine()}; synthetic policy (sleeps), mock arm.", "", body]
    print("\n".join(lines))
    write_json(args.json, {"command": command, "machine": machine(), "rows": rows})
    if args.update_docs:
        replace_block(args.update_docs, "loop", "\n".join(lines))
    return 0


def _cache(args) -> int:
    from dpctrl.launch.bench.cache import bench_cache, markdown
    data = bench_store(args, args.cache_episodes)
    rep = bench_cache(args.checkpoint, data, args.budget, args.cache_episodes, args.chunks, args.timing_chunks,
                      tuple(args.bases), progress=not args.no_progress)
    command = (f"dpctrl bench cache --checkpoint {args.checkpoint} --budget {args.budget} --cache-episodes "
               f"{args.cache_episodes} --chunks {args.chunks} --timing-chunks {args.timing_chunks} "
               f"--threads {args.threads}" + ("" if len(args.bases) == 3 else " --bases " + " ".join(args.bases)))
    return publish(args, "cache", command, f"action error in normalized units vs the same base uncached, same "
                   f"noise; {rep['episodes']} demo episodes x {rep['chunks']} chunks.", markdown(rep), rep)


def _deploy(args) -> int:
    from dpctrl.launch.bench.deploy import bench_deploy, markdown
    rep = bench_deploy(args.checkpoint, bench_store(args, args.cache_episodes), args.chunks, args.cache_episodes)
    command = (f"dpctrl bench deploy --checkpoint {args.checkpoint} --chunks {args.chunks} --cache-episodes "
               f"{args.cache_episodes} --threads {args.threads}")
    return publish(args, "deploy", command, "batch 1, calls alternating between the paths.", markdown(rep), rep)


def _policy(args) -> int:
    from dpctrl.launch.bench.policy import bench_policy, markdown, plot
    batches, models, reps = ((1,), ("lift",), 5) if args.quick else ((1, 8), ("lift", "9M"), args.reps)
    data = bench_store(args, max(batches))
    rep = bench_policy(args.checkpoint, data, batches, models, reps, args.device, progress=not args.no_progress)
    command = (f"dpctrl bench policy --checkpoint {args.checkpoint} --threads {args.threads} --device {args.device}"
               + (" --quick" if args.quick else f" --reps {args.reps}"))
    if args.plot:
        plot(rep, args.plot)
        rep["plot"] = args.plot
    return publish(args, "bench", command, f"p50/p99 over {rep['reps']} chunks per variant, ratios of p50s "
                   "within a model and batch.", markdown(rep), rep)


def gpu_block(command: str) -> str:
    """The results block of a GPU report: the full run's, the compile comparison's or a quick run's."""
    words = command.split()
    return "gpu-compile" if "--compile" in words else "gpu-quick" if "--quick" in words else "gpu"


def _gpu(args) -> int:
    from dpctrl.launch.bench.gpu import bench_gpu, markdown
    note = ("wall-clock per chunk, host arrays in and out; action error in robot units vs eager fp32 on the "
            "same noise; loop: mock arm (no physical arm here).")
    if args.from_json:  # re-render a saved report (e.g. from a GPU machine) under its own command and machine
        saved = json.loads(Path(args.from_json).read_text())
        text = f"Command: `{saved['command']}` — machine: {saved['machine']}; {note}\n\n{markdown(saved)}"
        print(text)
        if args.update_docs:
            from dpctrl.launch.results import replace_block
            replace_block(args.update_docs, gpu_block(saved["command"]), text)
        return 0
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError("bench gpu needs a CUDA device (torch sees none here); --from-json re-renders a "
                           "report made on a GPU machine")
    from dpctrl.launch.bench.gpu import COMPILE_PATHS, DEFAULT_PATHS
    data = bench_store(args, 8)
    paths = DEFAULT_PATHS + (COMPILE_PATHS if args.compile else ())
    if args.quick:
        rep = bench_gpu(args.checkpoint, data, batches=(1,), models=("9M",), reps=10,
                        variants=("DDIM-10", "RTI", "floor: 1 call"), paths=paths, loop_cycles=500,
                        rate_hz=args.rate_gpu, loop_precision=args.precision, progress=not args.no_progress)
    else:
        rep = bench_gpu(args.checkpoint, data, reps=args.reps, paths=paths, rate_hz=args.rate_gpu,
                        loop_cycles=args.loop_cycles, loop_precision=args.precision, progress=not args.no_progress)
    command = (f"dpctrl bench gpu --checkpoint {args.checkpoint}" + (" --quick" if args.quick else
               f" --reps {args.reps} --loop-cycles {args.loop_cycles}") + f" --rate-gpu {args.rate_gpu:g}"
               + (f" --precision {args.precision}" if args.precision != "fp32" else "")
               + (" --compile" if args.compile else ""))
    return publish(args, gpu_block(command), command, note, markdown(rep), rep)


def _peer(args) -> int:
    from dpctrl.launch.bench.peer import bench_peer, markdown
    from dpctrl.data.lerobot_roundtrip import venv_python
    python = venv_python(args.venv)
    if python is None:
        raise FileNotFoundError(f"no lerobot venv at {args.venv} (and DPCTRL_LEROBOT_PYTHON unset); build it with "
                                f"`dpctrl lerobot roundtrip --build` or pass --venv")
    rep = bench_peer(args.checkpoint, bench_store(args, 2), python, reps=args.peer_reps, threads=args.threads)
    command = f"dpctrl bench peer --checkpoint {args.checkpoint} --peer-reps {args.peer_reps} --threads {args.threads}"
    note = (f"lerobot {rep['lerobot']} (torch {rep['lerobot_torch']}) in its side venv next to dpctrl (torch "
            f"{rep['torch']}), {rep['threads']} torch threads each, batch 1, p50/p99 over {rep['reps']} chunks; "
            "random LeRobot weights (timing only).")
    return publish(args, "peer", command, note, markdown(rep), rep)


def _delay(args) -> int:
    from dpctrl.launch.bench import delay
    delays = [int(d) for d in args.delays.split(",")]
    variants = args.variants.split(",")
    settings = {"checkpoint": str(args.checkpoint), "env": args.env, "episodes": args.episodes,
                "seed_start": args.seed_start, "execute": args.execute, "batch": args.batch}
    out = Path(args.out or f"runs/bench-delay/{Path(str(args.checkpoint)).name}-{args.env}")
    cells = delay.sweep(settings, variants, delays, out, args.threads, progress=not args.no_progress,
                        log=lambda m: print(m, file=sys.stderr, flush=True), prefix_checkpoint=args.prefix_checkpoint)
    command = (f"dpctrl bench delay --checkpoint {args.checkpoint} --env {args.env} --episodes {args.episodes} "
               f"--delays {args.delays} --execute {args.execute} --variants {args.variants} --out {out}"
               + (f" --prefix-checkpoint {args.prefix_checkpoint}" if args.prefix_checkpoint else ""))
    note = (f"{args.episodes} seeds from {args.seed_start} per cell, execution horizon S={args.execute}, "
            f"{cells[0]['sampler']}-{cells[0]['num_inference_steps']}; cells: success / mean boundary jump (robot "
            "units). Simulated time: the chunk requested at step k is used from step k + D.")
    rep = {"cells": [{k: v for k, v in c.items() if k != "per_episode"} for c in cells], "out": str(out)}
    if args.update_docs:
        plot_path = Path(args.update_docs) / "assets" / f"delay-{args.env}.png"
        delay.plot(cells, delays, str(plot_path), f"{args.env} (checkpoint {args.checkpoint}), S={args.execute}")
        note += f"\n\n![success and boundary jump vs delay](../assets/{plot_path.name})"
    return publish(args, f"delay-{args.env}", command, note, delay.markdown(cells, delays), rep)


def _overlap(args) -> int:
    import torch

    from dpctrl.launch.bench.overlap import bench_overlap, markdown
    torch.set_num_threads(args.threads)
    rows = bench_overlap(args.checkpoint, args.rounds, args.prefix_checkpoint)
    command = (f"dpctrl bench overlap --checkpoint {args.checkpoint} --rounds {args.rounds} --threads {args.threads}"
               + (f" --prefix-checkpoint {args.prefix_checkpoint}" if args.prefix_checkpoint else ""))
    note = (f"batch 1, {args.rounds - 1} timed chunks per row, modes interleaved; committed actions 0.3 away from "
            "the free chunk, delay 2, execute 8; max change of the 8 executed actions (robot units) on the "
            "same noise.")
    return publish(args, "overlap", command, note, markdown(rows), {"rows": rows})


def _workers(args) -> int:
    from dpctrl.launch.bench.workers import bench_workers, markdown
    counts = [int(c) for c in args.workers.split(",")]
    rows = bench_workers(args.checkpoint, args.env, [int(n) for n in args.episodes.split(",")], counts,
                         args.seed_start, args.batch, progress=not args.no_progress)
    command = (f"dpctrl bench workers --checkpoint {args.checkpoint} --env {args.env} --episodes {args.episodes} "
               f"--workers {args.workers} --batch {args.batch}")
    note = (f"seeds {args.seed_start}.. , {args.batch} envs in lockstep per worker, 1 torch thread per worker; "
            "wall time from the start (policy load, envs, Ray start-up) to the report.")
    return publish(args, "workers", command, note, markdown(rows), {"rows": rows})


def _check_docs(args, block: str) -> None:
    """Fail before minutes of work, not after, when --update-docs names no page or block."""
    if args.update_docs:
        from dpctrl.launch.results import check_block
        check_block(args.update_docs, block)


def _run(func, block):
    def run(args) -> int:
        _check_docs(args, block(args) if callable(block) else block)
        return func(args)
    return run


def _common(p: argparse.ArgumentParser, docs_block: str | None = "") -> None:
    p.add_argument("--json", help="write the report here")
    if docs_block is not None:
        add_update_docs(p)
    p.add_argument("--no-progress", action="store_true")


def _checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default="lift", help="checkpoint directory or name")
    p.add_argument("--data", help="zarr store of demo episodes (default: the checkpoint recipe's; collected "
                                  "if it does not exist)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")


def add_parser(sub) -> None:
    from dpctrl.envs import ROBOSUITE_TASKS
    b = sub.add_parser("bench", help="benchmarks: " + ", ".join(KINDS) + " (dpctrl bench KIND --help)",
                       description="Benchmarks; each prints its table under its command and the machine.")
    kinds = b.add_subparsers(dest="what", required=True, metavar="KIND")

    p = kinds.add_parser("experts", help=KINDS["experts"])
    p.add_argument("--tasks", nargs="+", default=list(ROBOSUITE_TASKS))
    p.add_argument("--episodes", type=int, default=100, help="seeded episodes per task for success")
    p.add_argument("--collect-episodes", type=int, default=20, help="episodes per collect-speed run")
    _common(p)
    p.set_defaults(func=_run(_experts, "experts"))

    p = kinds.add_parser("loop", help=KINDS["loop"])
    p.add_argument("--rate", type=float, default=50.0, help="rate in Hz")
    p.add_argument("--latency-ms", type=float, default=30.0, help="synthetic policy latency")
    p.add_argument("--chunk", type=int, default=16, help="actions per chunk")
    p.add_argument("--cycles", type=int, default=10_000, help="cycles per mode")
    p.add_argument("--rerun", action="store_true", help="also async with a live Rerun recording of every cycle")
    _common(p)
    p.set_defaults(func=_run(_loop, "loop"))

    p = kinds.add_parser("cache", help=KINDS["cache"])
    _checkpoint_args(p)
    p.add_argument("--budget", type=int, default=10, help="per-block update steps (BAC's calibration)")
    p.add_argument("--cache-episodes", type=int, default=8, help="demo episodes replayed as a batch")
    p.add_argument("--chunks", type=int, default=12, help="chunks per episode")
    p.add_argument("--timing-chunks", type=int, default=30, help="batch-1 chunks timed per variant")
    p.add_argument("--bases", nargs="+", default=["DDPM-100", "DDIM-10", "RTI"], choices=["DDPM-100", "DDIM-10", "RTI"],
                   help="base samplers")
    _common(p)
    p.set_defaults(func=_run(_cache, "cache"))

    p = kinds.add_parser("deploy", help=KINDS["deploy"])
    _checkpoint_args(p)
    p.add_argument("--chunks", type=int, default=12, help="chunks per episode")
    p.add_argument("--cache-episodes", type=int, default=8, help="demo episodes the windows come from")
    _common(p)
    p.set_defaults(func=_run(_deploy, "deploy"))

    p = kinds.add_parser("delay", help=KINDS["delay"])
    p.add_argument("--checkpoint", default="lift", help="checkpoint directory or name")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--env", default="lift")
    p.add_argument("--episodes", type=int, default=200, help="seeded episodes per cell")
    p.add_argument("--seed-start", type=int, default=100_000)
    p.add_argument("--delays", default="0,1,2,3,4,6", help="comma-separated delays D in control steps")
    p.add_argument("--execute", type=int, default=8, help="execution horizon S: a request every S steps")
    p.add_argument("--variants", default="replace,blend,inpaint,rtc,bid,rti+rtc",
                   help="comma-separated overlap modes, each optionally rti+MODE (RTI warm start)")
    p.add_argument("--prefix-checkpoint", help="the policy trained with --prefix-max that prefix variants run")
    p.add_argument("--batch", type=int, default=10, help="envs in lockstep per network pass")
    p.add_argument("--out", help="directory of finished cells (resumed on rerun; default runs/bench-delay/CKPT-ENV)")
    _common(p)
    p.set_defaults(func=_run(_delay, lambda a: f"delay-{a.env}"))

    p = kinds.add_parser("overlap", help=KINDS["overlap"])
    p.add_argument("--checkpoint", default="lift", help="checkpoint directory or name")
    p.add_argument("--prefix-checkpoint", help="a policy trained with --prefix-max, for the prefix rows")
    p.add_argument("--rounds", type=int, default=40, help="chunks per mode (the first warms up)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    _common(p)
    p.set_defaults(func=_run(_overlap, "overlap"))

    p = kinds.add_parser("workers", help=KINDS["workers"])
    p.add_argument("--checkpoint", default="lift", help="checkpoint directory or name")
    p.add_argument("--env", default="lift")
    p.add_argument("--episodes", default="40", help="comma-separated episode counts, each run with every worker count")
    p.add_argument("--seed-start", type=int, default=100_000)
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts, one row each (1: no Ray)")
    p.add_argument("--batch", type=int, default=10, help="envs in lockstep per worker")
    _common(p)
    p.set_defaults(func=_run(_workers, "workers"))

    p = kinds.add_parser("policy", help=KINDS["policy"])
    _checkpoint_args(p)
    p.add_argument("--quick", action="store_true", help="lift only, batch 1, 5 chunks (under a minute)")
    p.add_argument("--reps", type=int, default=20, help="timed chunks per variant")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--plot", help="write a PNG of the latencies here")
    _common(p)
    p.set_defaults(func=_run(_policy, "bench"))

    p = kinds.add_parser("gpu", help=KINDS["gpu"])
    _checkpoint_args(p)
    p.add_argument("--quick", action="store_true", help="9M, batch 1, DDIM-10/RTI/floor, 10 chunks, 500 loop cycles")
    p.add_argument("--reps", type=int, default=20, help="timed chunks per variant")
    p.add_argument("--rate-gpu", type=float, default=500.0, help="control-loop rate in Hz")
    p.add_argument("--loop-cycles", type=int, default=2500, help="loop cycles per variant")
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"], help="the loop's precision")
    p.add_argument("--compile", action="store_true", help="also time the graph over a torch.compile'd network")
    p.add_argument("--from-json", help="re-render a saved report (its own command and machine) instead of running")
    _common(p)
    p.set_defaults(func=_run(_gpu, lambda a: gpu_block(" ".join(["--compile"] * a.compile + ["--quick"] * a.quick))))

    p = kinds.add_parser("peer", help=KINDS["peer"])
    _checkpoint_args(p)
    p.add_argument("--venv", default="runs/lerobot-venv", help="the lerobot side venv")
    p.add_argument("--peer-reps", type=int, default=5, help="timed chunks per row")
    _common(p)
    p.set_defaults(func=_run(_peer, "peer"))
