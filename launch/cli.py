"""``dpctl``: the command line. Each subcommand is a thin wrapper over a function."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def label_pairs(values: list[str] | None, usage: str) -> dict[str, str]:
    """``LABEL=CHECKPOINT`` arguments as an ordered dict; ValueError with ``usage`` otherwise."""
    if not values or not all("=" in v for v in values):
        raise ValueError(f"{usage} (got {values})")
    return dict(v.split("=", 1) for v in values)


def cmd_collect(args: argparse.Namespace) -> int:
    from launch.collect import collect
    import envs
    cams = envs.parse_cameras(args.cameras)
    rep = collect(args.env, args.episodes, args.out, images=args.images or args.cameras is not None, seed=args.seed,
                  progress=not args.no_progress, cameras=cams, recoveries=args.recoveries)
    print(f"{rep.env}: {rep.episodes} {'recovery ' if args.recoveries else ''}episodes in {rep.out} (+{rep.added} this run); expert success "
          f"{rep.successes}/{rep.attempts} = {rep.success_rate:.1%}; {rep.steps_added} steps in "
          f"{rep.seconds:.1f} s = {rep.steps_per_s:.1f} steps/s")
    _write_json(args.json, rep.as_dict())
    return 0


def _add_warm_start_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warm-start", choices=["off", "rti"], default="off", help="RTI warm starts")
    p.add_argument("--rti-k", type=int, help="warm-start level K' (default: the checkpoint's rti.json, else 2)")
    p.add_argument("--rti-noise", action=argparse.BooleanOptionalAction, default=None,
                   help="forward-diffuse the guess to K' (SDEdit; default: the checkpoint's rti.json, else off)")
    p.add_argument("--rti-tail", choices=["fine", "coarse"],
                   help="steps below K': every level (fine) or the sampler's own grid (coarse); "
                        "default: the checkpoint's rti.json, else fine")
    p.add_argument("--rti-reproduce", action="store_true", help="mimic the published t -> t-1 timestep mismatch")
    p.add_argument("--cache", choices=["off", "bac", "uniform", "teacache"], default="off",
                   help="block caching (bac: the checkpoint's cache_bac.json from `dpctl calibrate cache`)")
    p.add_argument("--cache-budget", type=int, help="update steps per run (uniform; checked against bac's)")


def _apply_warm_start(policy, args) -> None:
    from launch.calibrate import default_rti_config
    if args.warm_start == "rti":
        policy.set_warm_start(default_rti_config(args.checkpoint, policy, k=args.rti_k, noise=args.rti_noise,
                                                 reproduce=args.rti_reproduce, tail=args.rti_tail))
    if args.cache != "off":
        from launch.calibrate import make_cache
        policy.set_cache(make_cache(args.cache, args.checkpoint, policy, budget=args.cache_budget))


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from launch.evaluate import evaluate
    torch.set_num_threads(args.threads)
    policy = _load_policy(args.checkpoint, seed=args.seed_start)
    if args.env.startswith("metaworld:") and hasattr(policy, "set_task"):
        policy.set_task(args.env.split(":", 1)[1])
    if args.sampler or args.steps:
        policy.set_sampler(args.sampler or policy.cfg.sampler, args.steps or policy.cfg.num_inference_steps)
    _apply_warm_start(policy, args)
    res = evaluate(policy, args.env, args.episodes, args.seed_start, batch=args.batch, max_steps=args.max_steps,
                   progress=not args.no_progress, action_steps=args.action_steps)
    if args.video_dir:
        from launch.evaluate import record_video
        Path(args.video_dir).mkdir(parents=True, exist_ok=True)
        res["videos"] = [record_video(policy, args.env, seed, Path(args.video_dir) / f"{args.env}_{seed}.mp4",
                                      max_steps=args.max_steps)
                         for seed in res["seeds"][: args.videos]]
    lat = res["chunk_latency_ms"]
    print(f"{args.env}: success {res['success_rate']:.3f} over {res['episodes']} episodes (seeds "
          f"{args.seed_start}..{args.seed_start + args.episodes - 1}); {res['sampler']}-{res['num_inference_steps']}, "
          f"{res['nfe_per_chunk']} network calls/chunk, latency p50 {lat['p50']:.1f} ms p99 {lat['p99']:.1f} ms")
    _write_json(args.json, {**res, "checkpoint": str(args.checkpoint),
                            "command": "dpctl " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("dpctl") else None})
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    """Tabulate eval JSON reports (each names the command that produced it)."""
    import json as _json

    from launch.results import machine, markdown_table, replace_block
    if args.what in ("drive", "plan", "pad"):
        from launch.drive_cli import drive_table
        from launch.pad import pad_table
        from launch.plan_cli import plan_table
        table = {"drive": drive_table, "plan": plan_table, "pad": pad_table}[args.what](args.files)
        print(table)
        if args.update_readme:
            replace_block(Path(args.update_readme), args.block or args.what, table)
        return 0
    rows = []
    for f in args.files:
        r = _json.loads(Path(f).read_text())
        if "success_rate" not in r or "per_episode" not in r or "sampler" not in r:
            raise ValueError(f"{f} is not a `dpctl eval` report")
        w = r.get("warm_start")
        warm = (f"RTI K'={w['start_t']}" + (f" {w['tail']} tail" if w.get("tail", "fine") != "fine" else "")
                + (" +noise" if w.get("noise") else "")) if w else ""
        cache = r.get("cache") or ""
        variant = " + ".join(x for x in (f"{r['sampler']}-{r['num_inference_steps']}", warm, cache) if x)
        image_keys = r.get("config", {}).get("image_keys")
        env = r["env"] + (f" (images: {' + '.join(k.removesuffix('_image') for k in image_keys)})" if image_keys else "")
        rows.append([env, variant, f"{r['success_rate']:.3f}", r["episodes"], r["nfe_per_chunk"],
                     f"{r['chunk_latency_ms']['p50']:.1f}", f"`{r.get('command') or '?'}`"])
    table = (f"Machine: {machine()}; seeds from 100000 (demonstrations use seeds from 0).\n\n"
             + markdown_table(["env", "variant", "success", "episodes", "network calls/chunk", "latency p50 (ms)",
                               "command"], rows))
    print(table)
    if args.update_readme:
        replace_block(Path(args.update_readme), args.block or "evals", table)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from launch.train import train_task
    torch.set_num_threads(args.threads)
    if args.policy == "pad":
        return _train_pad(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: data parallel
        import torch.distributed as dist
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    import envs
    cams = envs.parse_cameras(args.cameras) if args.cameras is not None else None  # None: the recipe's
    rec = train_task(args.task, args.steps, args.out, images=args.images or args.cameras is not None,
                     cameras=cams, demos=args.demos, recoveries=args.recoveries, seed=args.seed,
                     batch_size=args.batch_size, lr=args.lr, eval_episodes=args.eval_episodes,
                     eval_every=args.eval_every, progress=not args.no_progress, discrete_scale=args.discrete_scale)
    if "rank" in rec:  # a torchrun worker other than rank 0: it reports nothing
        return 0
    ev = rec["final_eval"]
    print(f"{args.task}: trained {args.steps} steps at {rec['samples_per_s']:.0f} samples/s; success "
          f"{ev['success_rate']:.3f} over {ev['episodes']} held-out episodes; checkpoint in {args.out}/checkpoint")
    return 0


def _train_pad(args) -> int:
    from launch.pad import train_pad
    if args.policy != "pad" or not args.task.startswith("metaworld:"):
        raise ValueError("the PAD policy trains on MetaWorld tasks: --task metaworld:<task>[,<task>...] --policy pad")
    tasks = args.task.split(":", 1)[1].split(",")
    rec = train_pad(tasks, args.steps, args.out, demos=args.demos or 50, image_loss=not args.no_image_loss,
                    batch_size=args.batch_size or 64, lr=args.lr, seed=args.seed, state_view=args.pad_state,
                    progress=not args.no_progress)
    print(f"PAD {'(w/o image loss) ' if args.no_image_loss else ''}on {tasks}: {args.steps} steps, "
          f"{rec['ms_per_batch']:.0f} ms per batch of {args.batch_size or 64}, {rec['params'] / 1e6:.2f}M params; "
          f"checkpoint in {args.out}/checkpoint")
    return 0


def _load_policy(name, seed: int = 0):
    """A chunk policy checkpoint of any kind: the core's DiffusionPolicy or PAD."""
    from policy import checkpoint
    cfg = json.loads((checkpoint.resolve(name) / "config.json").read_text())
    if cfg.get("format") == "dpctl-pad":
        from policy.pad import PadPolicy
        return PadPolicy.load(name, seed=seed)
    return checkpoint.load(name, seed=seed)


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from launch.demo import demo, table
    from launch.results import check_block, machine, replace_block
    torch.set_num_threads(2)
    if args.update_readme:
        check_block(Path(args.update_readme), "policy")
    rep = demo(Path(args.out), episodes=args.episodes, progress=not args.no_progress,
               checkpoint_name=args.checkpoint, max_steps=args.max_steps)
    _write_json(args.json, rep)
    if args.update_readme:
        cmd = f"dpctl demo --episodes {args.episodes}" + (f" --checkpoint {args.checkpoint}" if args.checkpoint != "lift" else "")
        replace_block(Path(args.update_readme), "policy", f"Command: `{cmd}` — machine: {machine()}.\n\n"
                      + table(rep["rows"], rep["checkpoint"], args.episodes))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from launch.results import check_block, machine, replace_block
    if args.update_readme:
        # fail before minutes of work, not after (`policy` writes the `bench` block: `policy` is the demo's)
        gpu = _gpu_block(" ".join(["--compile"] * args.compile + ["--quick"] * args.quick))
        check_block(Path(args.update_readme), {"policy": "bench", "gpu": gpu}.get(args.what, args.what))
    if args.what == "loop":
        return _bench_loop(args, machine, replace_block)
    if args.what == "cache":
        return _bench_cache(args)
    if args.what == "deploy":
        return _bench_deploy(args)
    if args.what == "policy":
        return _bench_policy(args)
    if args.what == "gpu":
        return _bench_gpu(args)
    if args.what == "peer":
        return _bench_peer(args)
    from launch.bench_experts import bench_experts, markdown
    rows = bench_experts(args.tasks, args.episodes, args.collect_episodes, progress=not args.no_progress)
    command = (f"dpctl bench experts --episodes {args.episodes} --collect-episodes {args.collect_episodes}"
               + (" --tasks " + " ".join(args.tasks) if args.tasks != ["lift", "stack"] else ""))
    table = markdown(rows, command, machine())
    print(table)
    _write_json(args.json, {"command": command, "machine": machine(), "rows": rows})
    if args.update_readme:
        replace_block(Path(args.update_readme), "experts", table)
    return 0


def _bench_loop(args, machine, replace_block) -> int:
    from launch.run import bench_loop
    rows = bench_loop(args.rate, args.latency_ms, args.chunk, args.cycles, status=not args.no_progress)
    command = (f"dpctl bench loop --rate {args.rate:g} --latency-ms {args.latency_ms:g} --chunk {args.chunk} "
               f"--cycles {args.cycles}")
    from launch.results import markdown_table
    body = markdown_table(
        ["mode", "cycles", "deadline misses", "overruns", "jitter p50 (ms)", "p99 (ms)", "max (ms)"],
        [[r["mode"], r["cycles"], r["deadline_misses"], r["overruns"], f"{r['period_jitter_ms']['p50']:.3f}",
          f"{r['period_jitter_ms']['p99']:.3f}", f"{r['period_jitter_ms']['max']:.2f}"] for r in rows])
    lines = [f"Command: `{command}` — machine: {machine()}; synthetic policy (sleeps), mock arm.", "", body]
    print("\n".join(lines))
    _write_json(args.json, {"command": command, "machine": machine(), "rows": rows})
    if args.update_readme:
        replace_block(Path(args.update_readme), "loop", "\n".join(lines))
    return 0


def _bench_data(args) -> str:
    """Torch threads set; the demo store for a checkpoint benchmark (its recipe's by default)."""
    import torch

    from policy import checkpoint
    torch.set_num_threads(args.threads)
    data = args.data or json.loads((checkpoint.resolve(args.checkpoint) / "recipe.json").read_text())["data"]["path"]
    if not Path(data).exists():
        raise FileNotFoundError(f"no dataset at {data}; collect one with `dpctl collect --env lift --episodes 20 "
                                f"--out {data}` or pass --data")
    return data


def _bench_deploy(args) -> int:
    from launch.bench_deploy import bench_deploy, markdown
    rep = bench_deploy(args.checkpoint, _bench_data(args), args.chunks, args.cache_episodes)
    command = (f"dpctl bench deploy --checkpoint {args.checkpoint} --chunks {args.chunks} --cache-episodes "
               f"{args.cache_episodes} --threads {args.threads}")
    return _publish(args, "deploy", command, "batch 1, calls alternating between the paths.", markdown(rep), rep)


def _bench_policy(args) -> int:
    from launch.bench_policy import bench_policy, markdown, plot
    data = _bench_data(args)
    batches, models, reps = ((1,), ("lift",), 5) if args.quick else ((1, 8), ("lift", "9M"), args.reps)
    rep = bench_policy(args.checkpoint, data, batches, models, reps, args.device, progress=not args.no_progress)
    command = (f"dpctl bench policy --checkpoint {args.checkpoint} --threads {args.threads} --device {args.device}"
               + (" --quick" if args.quick else f" --reps {args.reps}"))
    if args.plot:
        plot(rep, args.plot)
        rep["plot"] = args.plot
    return _publish(args, "bench", command, f"p50/p99 over {rep['reps']} chunks per variant, ratios of p50s "
                    "within a model and batch.", markdown(rep), rep)


def _bench_peer(args) -> int:
    from launch.bench_peer import bench_peer, markdown
    from launch.lerobot_roundtrip import venv_python
    python = venv_python(args.venv)
    if python is None:
        raise FileNotFoundError(f"no lerobot venv at {args.venv} (and DPCTL_LEROBOT_PYTHON unset); build it with "
                                f"`dpctl lerobot roundtrip --build` or pass --venv")
    rep = bench_peer(args.checkpoint, _bench_data(args), python, reps=args.peer_reps, threads=args.threads)
    command = f"dpctl bench peer --checkpoint {args.checkpoint} --peer-reps {args.peer_reps} --threads {args.threads}"
    note = (f"lerobot {rep['lerobot']} (torch {rep['lerobot_torch']}) in its side venv next to dpctl (torch "
            f"{rep['torch']}), {rep['threads']} torch threads each, batch 1, p50/p99 over {rep['reps']} chunks; "
            "random LeRobot weights (timing only).")
    return _publish(args, "peer", command, note, markdown(rep), rep)


def _bench_gpu(args) -> int:
    from launch.bench_gpu import bench_gpu, markdown
    note = ("wall-clock per chunk, host arrays in and out; action error in robot units vs eager fp32 on the "
            "same noise; loop: mock arm (no physical arm here).")
    if args.from_json:  # re-render a saved report (e.g. from a GPU machine) under its own command and machine
        saved = json.loads(Path(args.from_json).read_text())
        text = f"Command: `{saved['command']}` — machine: {saved['machine']}; {note}\n\n{markdown(saved)}"
        print(text)
        if args.update_readme:
            from launch.results import replace_block
            replace_block(Path(args.update_readme), _gpu_block(saved["command"]), text)
        return 0
    from launch.bench_gpu import COMPILE_PATHS, DEFAULT_PATHS
    data = _bench_data(args)
    paths = DEFAULT_PATHS + (COMPILE_PATHS if args.compile else ())
    if args.quick:
        rep = bench_gpu(args.checkpoint, data, batches=(1,), models=("9M",), reps=10,
                        variants=("DDIM-10", "RTI", "floor: 1 call"), paths=paths, loop_cycles=500,
                        rate_hz=args.rate_gpu, loop_precision=args.precision, progress=not args.no_progress)
    else:
        rep = bench_gpu(args.checkpoint, data, reps=args.reps, paths=paths, rate_hz=args.rate_gpu,
                        loop_cycles=args.loop_cycles, loop_precision=args.precision, progress=not args.no_progress)
    command = (f"dpctl bench gpu --checkpoint {args.checkpoint}" + (" --quick" if args.quick else
               f" --reps {args.reps} --loop-cycles {args.loop_cycles}") + f" --rate-gpu {args.rate_gpu:g}"
               + (f" --precision {args.precision}" if args.precision != "fp32" else "")
               + (" --compile" if args.compile else ""))
    return _publish(args, _gpu_block(command), command, note, markdown(rep), rep)


def _gpu_block(command: str) -> str:
    """README block of a GPU report: the full run's, the compile comparison's or a quick run's."""
    words = command.split()
    return "gpu-compile" if "--compile" in words else "gpu-quick" if "--quick" in words else "gpu"


def _publish(args, block: str, command: str, note: str, table: str, rep: dict) -> int:
    """Print a benchmark's table under its command and machine; write --json and the README block."""
    from launch.results import machine, replace_block
    text = f"Command: `{command}` — machine: {machine()}; {note}\n\n{table}"
    print(text)
    _write_json(args.json, {"command": command, "machine": machine(), **rep})
    if args.update_readme:
        replace_block(Path(args.update_readme), block, text)
    return 0


def _bench_cache(args) -> int:
    from launch.bench_cache import bench_cache, markdown
    data = _bench_data(args)
    rep = bench_cache(args.checkpoint, data, args.budget, args.cache_episodes, args.chunks, args.timing_chunks,
                      tuple(args.bases), progress=not args.no_progress)
    command = (f"dpctl bench cache --checkpoint {args.checkpoint} --budget {args.budget} --cache-episodes "
               f"{args.cache_episodes} --chunks {args.chunks} --timing-chunks {args.timing_chunks} "
               f"--threads {args.threads}" + ("" if len(args.bases) == 3 else " --bases " + " ".join(args.bases)))
    return _publish(args, "cache", command, f"action error in normalized units vs the same base uncached, same "
                    f"noise; {rep['episodes']} demo episodes x {rep['chunks']} chunks.", markdown(rep), rep)


def cmd_ship(args: argparse.Namespace) -> int:
    from launch.train import ship
    info = ship(args.source, args.name, fp16=not args.fp32,
                discrete_dims=[int(d) for d in args.discrete_dims.split(",")] if args.discrete_dims else None)
    print(f"shipped {args.source} as {args.name!r}: {info['dtype']}, {info['size_bytes'] / 1e6:.2f} MB, max action "
          f"difference vs fp32 {info['max_abs_action_diff_vs_fp32']:.2e} on {info['windows_checked']} windows")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import json as _json

    from launch.calibrate import calibrate_from_dataset
    from policy import checkpoint
    data = args.data
    if data is None:
        recipe = checkpoint.resolve(args.checkpoint) / "recipe.json"
        data = _json.loads(recipe.read_text())["data"]["path"] if recipe.exists() else f"runs/data/{args.env}.zarr"
    if args.what == "cache":
        from launch.calibrate import calibrate_cache_from_dataset
        sampler, steps = args.sampler or "ddpm", args.steps or 100
        res = calibrate_cache_from_dataset(args.checkpoint, data, args.budget, args.objective, args.bu_top_n,
                                           sampler, steps, n_windows=args.windows or 16)
        print(f"BAC schedule for {sampler}-{steps}, budget {args.budget}, objective {args.objective}: "
              f"{res['block_updates']} block updates of {len(res['schedules']) * steps} "
              f"({res['block_updates_before_bu']} before Bubbling Union on {res['bu_blocks']}); saved {res['saved']}")
        _write_json(args.json, res)
        return 0
    cands = tuple(int(k) for k in args.candidates.split(",")) if args.candidates else (0, 1, 2, 3, 5, 8, 12, 20)
    res = calibrate_from_dataset(args.checkpoint, data, n_windows=args.windows or 64, target=args.target,
                                 tail=args.tail, noise=args.noise, candidates=cands,
                                 sampler=args.sampler, steps=args.steps, max_calls=args.max_calls)
    print("| K' | network calls | contraction | error vs full |\n|---|---|---|---|")
    for r in res["candidates"]:
        print(f"| {r['k']} | {r['network_calls']} | {r['contraction']:.3f} | {r['error_vs_full']:.4f} |")
    print(f"recommended K' = {res['recommended_k']} ({res['network_calls']} calls); saved {res['saved']}")
    _write_json(args.json, res)
    return 0


def _configure_run(policy, args) -> None:
    """``dpctl run``'s policy set-up: warm start, device, deploy path (checked before loading)."""
    _apply_warm_start(policy, args)
    if args.device != "cpu":
        policy.to(args.device)
    if args.deploy == "cuda_graph":
        policy.set_deploy("cuda_graph", batch=1, precision=args.precision, fused=args.fused)
    elif args.deploy != "eager":
        policy.set_deploy(args.deploy, batch=1)


def _check_run_device(args) -> None:
    """Refuse a device/deploy combination that cannot run, before a simulator starts."""
    import torch
    gpu = args.deploy == "cuda_graph" or args.fused or args.precision != "fp32"
    if gpu and (args.device != "cuda" or args.deploy != "cuda_graph"):
        raise ValueError("--precision tf32|bf16 and --fused are options of the GPU path: "
                         "--device cuda --deploy cuda_graph")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device here")
    if args.deploy == "torchscript" and args.device != "cpu":
        raise ValueError("--deploy torchscript is the CPU deploy path; on a GPU use --deploy cuda_graph")


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from launch.run import run
    torch.set_num_threads(args.threads)
    _check_run_device(args)
    res = run(args.checkpoint, args.robot, args.rate, args.async_inference, args.episodes, args.seed_start,
              record=args.record, overlap=args.overlap, status=not args.no_progress,
              configure=lambda policy: _configure_run(policy, args), action_steps=args.action_steps,
              replan_at=args.replan_at)
    j = res["period_jitter_ms"]
    print(f"{args.robot}: success {res['success_rate']:.3f} over {res['episodes']} episodes at {res['rate_hz']:g} Hz "
          f"({'async' if args.async_inference else 'sync'}); {res['deadline_misses']} deadline misses in "
          f"{res['cycles']} cycles; jitter p99 {j['p99']:.2f} ms; chunk latency p50 "
          f"{res['chunk_latency_ms']['p50']:.0f} ms")
    _compare_and_write(res, args)
    return 0


def _compare_and_write(res: dict, args: argparse.Namespace) -> None:
    """``--compare-eval``: add and print the synchronous eval's success on the same seeds; then ``--json``."""
    if args.compare_eval:
        from launch.run import compare_with_eval
        res["vs_eval"] = cmp = compare_with_eval(res, args.compare_eval)
        print(f"same {cmp['seeds']} seeds in {args.compare_eval}: eval {cmp['eval_success_rate']:.3f}, this run "
              f"{cmp['run_success_rate']:.3f} ({cmp['difference_points']:+.1f} points)")
    _write_json(args.json, res)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dpctl", description="Diffusion policies as fixed-rate robot controllers.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("collect", help="run a scripted expert and store successful episodes (zarr)")
    c.add_argument("--env", required=True, help="task name, e.g. lift or stack")
    c.add_argument("--episodes", type=int, required=True, help="episodes the store should hold (resumes)")
    c.add_argument("--out", required=True, help="zarr directory to create or append to")
    c.add_argument("--images", action="store_true", help="also store 84x84 camera images (--cameras)")
    c.add_argument("--cameras", help="comma-separated robosuite cameras (implies --images; default: agentview), "
                                     "e.g. agentview,robot0_eye_in_hand")
    c.add_argument("--recoveries", action="store_true",
                   help="lift: store recovery episodes (first grasp missed on purpose, then regrasped; "
                        "kept from the miss on) in a store of their own")
    c.add_argument("--seed", type=int, default=0, help="first episode seed")
    c.add_argument("--json", help="write a machine-readable report here")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_collect)

    e = sub.add_parser("eval", help="closed-loop evaluation of a checkpoint")
    e.add_argument("--checkpoint", required=True, help="checkpoint directory or shipped name (e.g. lift)")
    e.add_argument("--env", required=True)
    e.add_argument("--episodes", type=int, default=50)
    e.add_argument("--seed-start", type=int, default=100_000, help="first seed (demos use seeds from 0)")
    e.add_argument("--sampler", choices=["ddpm", "ddim", "dpmpp", "flow"])
    e.add_argument("--steps", type=int, help="denoising steps (network calls) per chunk")
    e.add_argument("--batch", type=int, default=10, help="envs run in lockstep per network pass")
    e.add_argument("--action-steps", type=int, help="actions executed per chunk (default: the policy's Ta)")
    _add_warm_start_args(e)
    e.add_argument("--max-steps", type=int, help="cap episode length (default: the task's)")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--video-dir", help="write mp4 videos of the first --videos seeds here")
    e.add_argument("--videos", type=int, default=3)
    e.add_argument("--json", help="write the full report here")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_eval)

    t = sub.add_parser("train", help="collect demos (or reuse), train, evaluate, save")
    t.add_argument("--task", required=True,
                   help="lift | stack | metaworld:<task>[,<task>...] (several tasks: --policy pad; the "
                        "core's DP-T: one task, with --images)")
    t.add_argument("--policy", default="dpt", choices=["dpt", "pad"],
                   help="dpt: the core's transformer policy; pad: joint image-action DiT (MetaWorld)")
    t.add_argument("--no-image-loss", action="store_true", help="pad: the w/o-image ablation (same network)")
    t.add_argument("--pad-state", default="all",
                   help="pad: the state columns the network sees (envs.metaworld_tasks.STATE_VIEWS: all | "
                        "proprio+goal, which withholds the objects' poses: objects only in the frames)")
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--images", action="store_true", help="image policy: proprioception + 84x84 camera images")
    t.add_argument("--cameras", help="comma-separated robosuite cameras for --images (implies it; default: "
                                     "agentview,robot0_eye_in_hand), e.g. agentview")
    t.add_argument("--demos", type=int, help="demonstrations (default: the recipe's)")
    t.add_argument("--recoveries", type=int, help="lift: recovery episodes added to the demos (dpctl collect "
                                                  "--recoveries; default: 100 with --images, 0 for low-dim)")
    t.add_argument("--batch-size", type=int, default=None, help="default: 128 (low-dim), 64 (images)")
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--discrete-scale", type=float, default=1.0,
                   help="train the gripper dims at +-1/f (RTI's scale mode; 1 = off)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eval-episodes", type=int, default=50)
    t.add_argument("--eval-every", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)

    rs = sub.add_parser("results", help="tabulate eval JSON reports into the README")
    rs.add_argument("what", choices=["evals", "drive", "plan", "pad"],
                    help="dpctl eval, drive eval, plan eval reports, or PAD eval + `dpctl pad frames` reports")
    rs.add_argument("files", nargs="+")
    rs.add_argument("--update-readme", metavar="README")
    rs.add_argument("--block", help="the README block to rewrite (<!-- results:BLOCK:begin -->; default: `what`), "
                                    "for a second table of the same kind")
    rs.set_defaults(func=cmd_results)

    sh = sub.add_parser("ship", help="copy a trained checkpoint into policy/checkpoints/<name> (fp16)")
    sh.add_argument("--from", dest="source", required=True, help="a run's checkpoint directory")
    sh.add_argument("--name", required=True)
    sh.add_argument("--fp32", action="store_true", help="keep float32 weights")
    sh.add_argument("--discrete-dims", help="comma-separated binary action dims, for older runs")
    sh.set_defaults(func=cmd_ship)

    cal = sub.add_parser("calibrate", help="offline calibration: `rti` picks the warm-start level K'")
    cal.add_argument("what", choices=["rti", "cache"])
    cal.add_argument("--budget", type=int, default=10, help="cache: update steps per block")
    cal.add_argument("--objective", choices=["adjacent", "cached", "action"], default="adjacent",
                     help="cache: ACS objective (paper: adjacent; published code: cached; action, an extension: "
                          "the first-order action error of each stale segment, from autograd)")
    cal.add_argument("--bu-top-n", type=int, default=3, help="cache: Bubbling Union blocks (0: off)")
    cal.add_argument("--sampler", help="sampler to calibrate on (cache default: ddpm; rti: the checkpoint's)")
    cal.add_argument("--steps", type=int, help="its steps (cache default: 100; rti: the checkpoint's)")
    cal.add_argument("--checkpoint", required=True)
    cal.add_argument("--env", required=True)
    cal.add_argument("--data", help="zarr store of observations (default: the checkpoint's training data)")
    cal.add_argument("--windows", type=int, help="dataset windows to calibrate on (default: rti 64, cache 16)")
    cal.add_argument("--target", type=float, default=0.5, help="rti: contraction ratio to reach")
    cal.add_argument("--tail", choices=["fine", "coarse"], default="fine", help="rti: steps below K' (see eval)")
    cal.add_argument("--noise", action="store_true", help="rti: forward-diffuse the guess to K'")
    cal.add_argument("--max-calls", type=int, help="rti: recommend the lowest-error K' within this many network calls")
    cal.add_argument("--candidates", help="rti: comma-separated K' values (default 0,1,2,3,5,8,12,20)")
    cal.add_argument("--json")
    cal.set_defaults(func=cmd_calibrate)

    r = sub.add_parser("run", help="a checkpoint as a real-time controller (fixed-rate loop)")
    r.add_argument("--checkpoint", required=True, help="checkpoint directory or shipped name")
    r.add_argument("--robot", default="sim:lift", help="sim:<env>")
    r.add_argument("--rate", type=float, help="loop rate in Hz (default: the robot's control rate)")
    r.add_argument("--async", dest="async_inference", action="store_true", help="compute chunks in a worker thread")
    r.add_argument("--overlap", choices=["replace", "blend", "inpaint"], default="replace",
                   help="new chunk vs queued actions: replace, blend (exp weights), inpaint (guide the prefix)")
    r.add_argument("--episodes", type=int, default=10)
    r.add_argument("--seed-start", type=int, default=100_000)
    r.add_argument("--record", help="zarr store for what was observed and sent")
    r.add_argument("--action-steps", type=int, help="actions per chunk before the next one is due (default Ta)")
    r.add_argument("--compare-eval", metavar="JSON",
                   help="a `dpctl eval` report: print its success on this run's seeds next to this run's")
    r.add_argument("--deploy", choices=["eager", "torchscript", "cuda_graph"], default="eager",
                   help="denoiser path: eager, a frozen TorchScript trace (CPU), or whole chunks as CUDA "
                        "graphs (--device cuda)")
    r.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the policy runs")
    r.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default="fp32",
                   help="cuda_graph: the network's precision")
    r.add_argument("--fused", action="store_true",
                   help="cuda_graph: the decoder as fused Triton kernels (fp32 or tf32; not with a block cache)")
    r.add_argument("--replan-at", type=int,
                   help="async: request the next chunk when this many actions are left (default: half the chunk)")
    _add_warm_start_args(r)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--json", help="write stats here")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("bench", help="benchmarks: `experts` (expert success, collect speed), `loop` (timing), "
                                     "`cache` (block caching: action error and speed per sampler), `deploy` "
                                     "(eager vs TorchScript denoiser), `policy` (latency of every inference variant), "
                                     "`gpu` (CUDA-graph path: latency, precision error, 500 Hz loop), `peer` (next to LeRobot's "
                                     "diffusion policy)")
    b.add_argument("what", choices=["experts", "loop", "cache", "deploy", "policy", "gpu", "peer"])
    b.add_argument("--quick", action="store_true", help="policy: lift only, batch 1, 5 chunks (under a minute); gpu: 9M, batch 1, "
                   "DDIM-10/RTI/floor, 10 chunks, 500 loop cycles")
    b.add_argument("--reps", type=int, default=20, help="policy: timed chunks per variant")
    b.add_argument("--device", default="cpu", help="policy: cpu or cuda")
    b.add_argument("--plot", help="policy: write a PNG of the latencies here")
    b.add_argument("--rate-gpu", type=float, default=500.0, help="gpu: control-loop rate in Hz")
    b.add_argument("--loop-cycles", type=int, default=2500, help="gpu: loop cycles per variant")
    b.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"], help="gpu: the loop's precision")
    b.add_argument("--venv", default="runs/lerobot-venv", help="peer: the lerobot side venv")
    b.add_argument("--peer-reps", type=int, default=5, help="peer: timed chunks per row")
    b.add_argument("--compile", action="store_true", help="gpu: also time the graph over a torch.compile'd network")
    b.add_argument("--from-json", help="gpu: re-render a saved report (its own command and machine) instead of running")
    b.add_argument("--checkpoint", default="lift", help="cache/deploy: checkpoint directory or shipped name")
    b.add_argument("--data", help="cache: zarr store with demo episodes (default: the checkpoint recipe's)")
    b.add_argument("--budget", type=int, default=10, help="cache: per-block update steps (BAC's calibration)")
    b.add_argument("--cache-episodes", type=int, default=8, help="cache: demo episodes replayed as a batch")
    b.add_argument("--chunks", type=int, default=12, help="cache: chunks per episode")
    b.add_argument("--timing-chunks", type=int, default=30, help="cache: batch-1 chunks timed per variant")
    b.add_argument("--threads", type=int, default=2, help="cache: torch threads")
    b.add_argument("--bases", nargs="+", default=["DDPM-100", "DDIM-10", "RTI"], choices=["DDPM-100", "DDIM-10", "RTI"],
                   help="cache: base samplers")
    b.add_argument("--rate", type=float, default=50.0, help="loop: rate in Hz")
    b.add_argument("--latency-ms", type=float, default=30.0, help="loop: synthetic policy latency")
    b.add_argument("--chunk", type=int, default=16, help="loop: actions per chunk")
    b.add_argument("--cycles", type=int, default=10_000, help="loop: cycles per mode")
    b.add_argument("--tasks", nargs="+", default=["lift", "stack"])
    b.add_argument("--episodes", type=int, default=100, help="seeded episodes per task for success")
    b.add_argument("--collect-episodes", type=int, default=20, help="episodes per collect-speed run")
    b.add_argument("--json", help="write rows here")
    b.add_argument("--update-readme", metavar="README", help="rewrite this README's results block for `what`")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=cmd_bench)

    from launch.drive_cli import add_parser as add_drive_parser
    from launch.lerobot_roundtrip import add_parser as add_lerobot_parser
    from launch.pad import add_parser as add_pad_parser
    from launch.plan_cli import add_parser as add_plan_parser
    from launch.remote import add_parsers as add_remote_parsers
    add_drive_parser(sub)
    add_lerobot_parser(sub)
    add_plan_parser(sub)
    add_pad_parser(sub)
    add_remote_parsers(sub, _add_warm_start_args)

    d = sub.add_parser("demo", help="the main job: the shipped Lift policy closed loop, DDPM-100 vs DDIM-10")
    d.add_argument("--out", default="runs/demo", help="output directory")
    d.add_argument("--episodes", type=int, default=20, help="held-out episodes per sampler")
    d.add_argument("--checkpoint", default="lift", help="checkpoint directory or shipped name")
    d.add_argument("--max-steps", type=int, help="cap episode length (default: the task's)")
    d.add_argument("--update-readme", metavar="README", help="rewrite this README's policy results block")
    d.add_argument("--json", help="write a machine-readable report here")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as e:
        if os.environ.get("DPCTL_TRACEBACK"):
            raise
        print(f"dpctl {args.command}: error: {e}  (DPCTL_TRACEBACK=1 shows where)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
