"""``dpctrl eval``: closed-loop evaluation of a chunk policy over seeded episodes (envs/evaluate.py)."""
from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from dpctrl.launch.options import add_ray_args, add_warm_start_args, apply_warm_start, command_line, write_json

OVERLAPS = ("replace", "blend", "inpaint", "rtc", "bid", "prefix")  # policy/chunking.py's (tests/launch/test_cli.py checks)


def configured_policy(args: argparse.Namespace):
    """The policy ``dpctrl eval`` runs, as its options configure it (each Ray worker builds its own)."""
    from dpctrl.policy import registry
    from dpctrl.policy.onnx_policy import OnnxPolicy, is_export
    if is_export(args.checkpoint):
        if args.sampler or args.steps or args.warm_start != "off" or args.cache != "off":
            raise ValueError(f"{args.checkpoint} is an exported policy: its sampler, warm start and cache were fixed "
                             "at export (dpctrl export); drop --sampler/--steps/--warm-start/--cache")
        return OnnxPolicy(args.checkpoint, threads=args.threads or 1)
    policy = registry.load_policy(args.checkpoint)
    if args.env.startswith("metaworld:") and hasattr(policy, "set_task"):
        policy.set_task(args.env.split(":", 1)[1])
    if args.sampler or args.steps:
        policy.set_sampler(args.sampler or policy.cfg.sampler, args.steps or policy.cfg.num_inference_steps)
    apply_warm_start(policy, args)
    return policy


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from dpctrl.envs.evaluate import check_overlap, evaluate, record_video
    from dpctrl.policy.chunking import check_delay
    if args.workers < 1:
        raise ValueError("--workers must be >= 1")
    if args.classify_failures:
        from dpctrl.envs.failures import classify_failures, failure_line, object_height_index
        object_height_index(args.env)  # a task it cannot read is refused before the evaluation
    torch.set_num_threads(args.threads or (1 if args.workers > 1 else 2))
    if args.deploy == "onnxruntime":  # export once, then every worker runs the exported directory
        import tempfile

        from dpctrl.launch.export import export_checkpoint
        export_dir = tempfile.TemporaryDirectory(prefix="dpctrl-export-")  # removed when cmd_eval returns
        out = str(Path(export_dir.name) / "export")
        export_checkpoint(args, out)
        args.source_checkpoint, args.checkpoint = args.checkpoint, out
        args.sampler = args.steps = None
        args.warm_start, args.cache = "off", "off"
    policy = configured_policy(args)  # in the driver too: bad options fail here, before any worker starts
    kw = dict(max_steps=args.max_steps, progress=not args.no_progress, action_steps=args.action_steps,
              delay=args.delay, overlap=args.overlap, batch=args.batch)
    if args.workers > 1 or args.ray_address:
        from dpctrl.envs.distributed import evaluate_distributed
        check_delay(args.delay, args.action_steps or policy.n_action_steps, policy.horizon, policy.n_obs_steps)
        check_overlap(policy, args.overlap, args.delay)
        res = evaluate_distributed(partial(configured_policy, args), args.env, args.episodes, args.seed_start,
                                   workers=args.workers, cpus=args.worker_cpus, gpus=args.worker_gpus,
                                   threads=args.threads or 1, address=args.ray_address, **kw)
    else:
        res = evaluate(policy, args.env, args.episodes, args.seed_start, **kw)
    if args.video_dir:
        Path(args.video_dir).mkdir(parents=True, exist_ok=True)
        res["videos"] = [record_video(policy, args.env, seed, Path(args.video_dir) / f"{args.env}_{seed}.mp4",
                                      max_steps=args.max_steps)
                         for seed in res["seeds"][: args.videos]]
    if args.classify_failures:
        res["failures"] = classify_failures(policy, args.env, res, args.max_steps, not args.no_progress)
        print(failure_line(res["failures"]))
    lat = res["chunk_latency_ms"]
    print(f"{args.env}: success {res['success_rate']:.3f} over {res['episodes']} episodes (seeds "
          f"{args.seed_start}..{args.seed_start + args.episodes - 1}); {res['sampler']}-{res['num_inference_steps']}, "
          f"{res['nfe_per_chunk']} network calls/chunk, latency p50 {lat['p50']:.1f} ms p99 {lat['p99']:.1f} ms")
    jump = res["boundary_jump"]
    print(f"delay {res['delay']}, execute {res['action_steps']}, overlap {res['overlap']}: boundary jump mean "
          f"{jump['mean']:.4f} p95 {jump['p95']:.4f} over {jump['switches']} chunk switches; jerk {res['jerk']:.5f}")
    if "per_worker" in res:
        print(f"{args.workers} Ray workers: episodes per worker {res['per_worker']}, {len(res['workers_lost'])} lost, "
              f"cluster start-up {res['startup_seconds']:.1f} s, rollouts {res['rollout_seconds']:.1f} s")
    write_json(args.json, {**res, "checkpoint": str(getattr(args, "source_checkpoint", args.checkpoint)),
                           "command": command_line()})
    return 0


def add_parser(sub) -> None:
    e = sub.add_parser("eval", help="closed-loop evaluation of a checkpoint")
    e.add_argument("--checkpoint", required=True, help="checkpoint directory or shipped name (e.g. lift)")
    e.add_argument("--env", required=True)
    e.add_argument("--episodes", type=int, default=50)
    e.add_argument("--seed-start", type=int, default=100_000, help="first seed (demos use seeds from 0)")
    e.add_argument("--sampler", choices=["ddpm", "ddim", "dpmpp", "flow"])
    e.add_argument("--steps", type=int, help="denoising steps (network calls) per chunk")
    e.add_argument("--batch", type=int, default=10, help="envs run in lockstep per network pass")
    e.add_argument("--execute", "--action-steps", dest="action_steps", type=int, metavar="S",
                   help="execution horizon: a new chunk is requested every S steps (default: the policy's Ta)")
    e.add_argument("--delay", type=int, default=0, metavar="D",
                   help="simulated inference delay in control steps: the chunk requested at step k is used from "
                        "step k + D, the previous chunk runs meanwhile (0: synchronous)")
    e.add_argument("--overlap", choices=OVERLAPS, default="replace",
                   help="how a late chunk meets the one running: replace, blend (temporal ensembling), "
                        "inpaint (the running chunk's remaining actions replace the new prefix), rtc (real-time "
                        "chunking: they guide the sampling under a soft mask; eager path only), bid (8 candidates, "
                        "the most coherent with the running chunk kept), prefix (a policy trained with --prefix-max "
                        "gets the D frozen actions clean)")
    add_warm_start_args(e)
    e.add_argument("--deploy", choices=["eager", "onnxruntime"], default="eager",
                   help="onnxruntime: export the configured policy (dpctrl export) and run it with ONNX Runtime")
    e.add_argument("--max-steps", type=int, help="cap episode length (default: the task's)")
    e.add_argument("--threads", type=int, help="torch threads (default 2 in-process, 1 per worker)")
    add_ray_args(e, "the seeds are spread over")
    e.add_argument("--video-dir", help="write mp4 videos of the first --videos seeds here")
    e.add_argument("--videos", type=int, default=3)
    e.add_argument("--classify-failures", action="store_true",
                   help="rerun each failed seed alone and give it a class (envs/failures.py)")
    e.add_argument("--json", help="write the full report here")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_eval)
