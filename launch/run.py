"""``dpctrl run``: a checkpoint as a real-time controller of a (simulated) robot."""
from __future__ import annotations

import argparse
from functools import partial

from dpctrl.launch.eval import OVERLAPS
from dpctrl.launch.options import add_warm_start_args, apply_warm_start, command_line, compare_and_write


def configure(policy, args: argparse.Namespace) -> None:
    """The policy's warm start, cache, device and deploy path from the command line."""
    apply_warm_start(policy, args)
    if args.device != "cpu":
        policy.to(args.device)
    if args.deploy == "cuda_graph":
        policy.set_deploy("cuda_graph", batch=1, precision=args.precision, fused=args.fused)
    elif args.deploy != "eager":
        policy.set_deploy(args.deploy, batch=1)


def check_device(args: argparse.Namespace) -> None:
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


def load_configured(args: argparse.Namespace):
    """The checkpoint as the command line configures it (module-level: a policy process's factory)."""
    from dpctrl.policy.onnx_policy import OnnxPolicy, is_export
    if is_export(args.checkpoint):
        if args.warm_start != "off" or args.cache != "off" or args.deploy != "eager" or args.device != "cpu":
            raise ValueError(f"{args.checkpoint} is an exported policy (ONNX Runtime, CPU): its warm start and cache "
                             "were fixed at export; drop --warm-start/--cache/--deploy/--device")
        return OnnxPolicy(args.checkpoint, threads=args.threads or 1, seed=args.seed_start)
    from dpctrl.policy.diffusion_policy import DiffusionPolicy
    policy = DiffusionPolicy.load(args.checkpoint, seed=args.seed_start)
    configure(policy, args)
    return policy


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from dpctrl.control.policy_process import PolicyProcess
    from dpctrl.control.session import run_loop, sim_task
    from dpctrl.data.replay_buffer import loop_recorder
    from dpctrl.data.view import LiveRecording
    from dpctrl.envs.evaluate import check_overlap, image_keys
    check_device(args)
    sim_task(args.robot)  # validate before loading anything
    if args.overlap in OVERLAPS[2:] and not args.async_inference:
        raise ValueError(f"--overlap {args.overlap} shapes a chunk computed while the last one runs: add --async")
    process = args.async_inference and args.inference == "process"
    threads = args.threads or (1 if process else 2)
    torch.set_num_threads(threads)
    policy = PolicyProcess(partial(load_configured, args), threads=threads) if process else load_configured(args)
    live = LiveRecording(args.rerun) if args.rerun else None  # logs off the loop thread (data/view.py)
    try:
        check_overlap(policy, args.overlap)
        keys = image_keys(policy)
        ends = [f for f in (loop_recorder(args.record) if args.record else None, live and live.on_episode_end) if f]
        res = run_loop(policy, args.robot, args.rate, args.async_inference, args.episodes, args.seed_start,
                       on_episode_end=(lambda rec, rep: [f(rec, rep) for f in ends]) if ends else None,
                       overlap=args.overlap, status=not args.no_progress, action_steps=args.action_steps,
                       replan_at=args.replan_at, images=bool(keys), image_keys=keys,
                       on_cycle=live.on_cycle if live else None)
        info = policy.describe()
    finally:
        if process:
            policy.close()
        if live:
            live.close()
    res = {"checkpoint": str(args.checkpoint), **{k: info[k] for k in ("sampler", "num_inference_steps",
                                                                         "warm_start", "cache", "deploy")},
           "inference": "process" if process else "thread" if args.async_inference else "loop thread",
           "inference_threads": threads, **res, "command": command_line()}
    j = res["period_jitter_ms"]
    print(f"{args.robot}: success {res['success_rate']:.3f} over {res['episodes']} episodes at {res['rate_hz']:g} Hz "
          f"({'async, inference in a ' + ('process' if process else 'thread') if args.async_inference else 'sync'}); "
          f"{res['deadline_misses']} deadline misses in {res['cycles']} cycles; jitter p99 {j['p99']:.2f} ms; "
          f"chunk latency p50 {res['chunk_latency_ms']['p50']:.0f} ms")
    print(f"chunk delay p50 {res['delay_cycles']['p50']:g} cycles (max {res['delay_cycles']['max']:g}); boundary jump "
          f"mean {res['boundary_jump']['mean']:.4f} p95 {res['boundary_jump']['p95']:.4f}; jerk {res['jerk']:.5f}")
    compare_and_write(res, args)
    return 0


def add_parser(sub) -> None:
    r = sub.add_parser("run", help="a checkpoint as a real-time controller (fixed-rate loop)")
    r.add_argument("--checkpoint", required=True, help="checkpoint directory or shipped name")
    r.add_argument("--robot", default="sim:lift", help="sim:<env>")
    r.add_argument("--rate", type=float, help="loop rate in Hz (default: the robot's control rate)")
    r.add_argument("--async", dest="async_inference", action="store_true",
                   help="compute the next chunk while the current one runs (see --inference)")
    r.add_argument("--inference", choices=["process", "thread"], default="process",
                   help="--async: the policy in a child process (own interpreter and core; the default) or in a "
                        "thread of the loop's process (shares the GIL with the simulator)")
    r.add_argument("--overlap", choices=OVERLAPS, default="replace",
                   help="new chunk vs queued actions: replace, blend (exp weights), inpaint (replace the prefix), "
                        "rtc (real-time chunking guidance; eager path only), bid (the most coherent of 8 candidates)")
    r.add_argument("--episodes", type=int, default=10)
    r.add_argument("--seed-start", type=int, default=100_000)
    r.add_argument("--record", help="zarr store for what was observed and sent")
    r.add_argument("--rerun", metavar="F.rrd", help="record the loop live as a Rerun recording (off the loop thread)")
    r.add_argument("--action-steps", type=int, help="actions per chunk before the next one is due (default Ta)")
    r.add_argument("--compare-eval", metavar="JSON",
                   help="a `dpctrl eval` report: print its success on this run's seeds next to this run's")
    r.add_argument("--deploy", choices=["eager", "torchscript", "cuda_graph"], default="eager",
                   help="denoiser path: eager, a frozen TorchScript trace (CPU), or whole chunks as CUDA "
                        "graphs (--device cuda)")
    r.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the policy runs")
    r.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default="fp32",
                   help="cuda_graph: the network's precision")
    r.add_argument("--fused", action="store_true",
                   help="cuda_graph: the decoder as fused Triton kernels (fp32 or tf32; not with a block cache)")
    r.add_argument("--replan-at", type=int,
                   help="async: request the next chunk when this many actions are left (default: one request "
                        "every --action-steps cycles, each chunk queuing all its actions)")
    add_warm_start_args(r)
    r.add_argument("--threads", type=int, help="torch threads of the policy (default: 1 in a policy process, else 2)")
    r.add_argument("--json", help="write stats here")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=cmd_run)
