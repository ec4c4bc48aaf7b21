"""``dpctrl``: the command line. Each subcommand is a thin wrapper over a function."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dpctrl.policy import registry
from dpctrl.launch.options import add_warm_start_args, apply_warm_start, command_line, compare_and_write, write_json


def cmd_collect(args: argparse.Namespace) -> int:
    from dpctrl.launch.collect import collect
    from dpctrl import envs
    cams = envs.parse_cameras(args.cameras)
    rep = collect(args.env, args.episodes, args.out, images=args.images or args.cameras is not None, seed=args.seed,
                  progress=not args.no_progress, cameras=cams, recoveries=args.recoveries)
    print(f"{rep.env}: {rep.episodes} {'recovery ' if args.recoveries else ''}episodes in {rep.out} (+{rep.added} this run); expert success "
          f"{rep.successes}/{rep.attempts} = {rep.success_rate:.1%}; {rep.steps_added} steps in "
          f"{rep.seconds:.1f} s = {rep.steps_per_s:.1f} steps/s")
    write_json(args.json, rep.as_dict())
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from dpctrl.launch.evaluate import evaluate
    torch.set_num_threads(args.threads)
    policy = registry.load_policy(args.checkpoint, seed=args.seed_start)
    if args.env.startswith("metaworld:") and hasattr(policy, "set_task"):
        policy.set_task(args.env.split(":", 1)[1])
    if args.sampler or args.steps:
        policy.set_sampler(args.sampler or policy.cfg.sampler, args.steps or policy.cfg.num_inference_steps)
    apply_warm_start(policy, args)
    res = evaluate(policy, args.env, args.episodes, args.seed_start, batch=args.batch, max_steps=args.max_steps,
                   progress=not args.no_progress, action_steps=args.action_steps)
    if args.video_dir:
        from dpctrl.launch.evaluate import record_video
        Path(args.video_dir).mkdir(parents=True, exist_ok=True)
        res["videos"] = [record_video(policy, args.env, seed, Path(args.video_dir) / f"{args.env}_{seed}.mp4",
                                      max_steps=args.max_steps)
                         for seed in res["seeds"][: args.videos]]
    lat = res["chunk_latency_ms"]
    print(f"{args.env}: success {res['success_rate']:.3f} over {res['episodes']} episodes (seeds "
          f"{args.seed_start}..{args.seed_start + args.episodes - 1}); {res['sampler']}-{res['num_inference_steps']}, "
          f"{res['nfe_per_chunk']} network calls/chunk, latency p50 {lat['p50']:.1f} ms p99 {lat['p99']:.1f} ms")
    write_json(args.json, {**res, "checkpoint": str(args.checkpoint),
                            "command": command_line()})
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    """Tabulate eval JSON reports (each names the command that produced it)."""
    import json as _json

    from dpctrl.launch.results import machine, markdown_table, replace_block
    if args.what in ("drive", "plan", "pad"):
        from dpctrl.launch.drive_cli import drive_table
        from dpctrl.launch.pad import pad_table
        from dpctrl.launch.plan_cli import plan_table
        table = {"drive": drive_table, "plan": plan_table, "pad": pad_table}[args.what](args.files)
        print(table)
        if args.update_readme:
            replace_block(Path(args.update_readme), args.block or args.what, table)
        return 0
    rows = []
    for f in args.files:
        r = _json.loads(Path(f).read_text())
        if "success_rate" not in r or "per_episode" not in r or "sampler" not in r:
            raise ValueError(f"{f} is not a `dpctrl eval` report")
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

    from dpctrl.launch.train import train_task
    torch.set_num_threads(args.threads)
    if args.policy == "pad":
        return _train_pad(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: data parallel
        import torch.distributed as dist
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    from dpctrl import envs
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
    from dpctrl.launch.pad import train_pad
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


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from dpctrl.launch.demo import demo, table
    from dpctrl.launch.results import check_block, machine, replace_block
    torch.set_num_threads(2)
    if args.update_readme:
        check_block(Path(args.update_readme), "policy")
    rep = demo(Path(args.out), episodes=args.episodes, progress=not args.no_progress,
               checkpoint_name=args.checkpoint, max_steps=args.max_steps)
    write_json(args.json, rep)
    if args.update_readme:
        cmd = f"dpctrl demo --episodes {args.episodes}" + (f" --checkpoint {args.checkpoint}" if args.checkpoint != "lift" else "")
        replace_block(Path(args.update_readme), "policy", f"Command: `{cmd}` — machine: {machine()}.\n\n"
                      + table(rep["rows"], rep["checkpoint"], args.episodes))
    return 0


def cmd_ship(args: argparse.Namespace) -> int:
    from dpctrl.launch.train import ship
    info = ship(args.source, args.name, fp16=not args.fp32, to=args.to,
                discrete_dims=[int(d) for d in args.discrete_dims.split(",")] if args.discrete_dims else None)
    print(f"shipped {args.source} as {args.name!r} in {info['path']}: {info['dtype']}, {info['size_bytes'] / 1e6:.2f} "
          f"MB, max action difference vs fp32 {info['max_abs_action_diff_vs_fp32']:.2e} on {info['windows_checked']} "
          f"windows; use it as --checkpoint {args.name}" + (f" (with DPCTRL_HOME pointing above {args.to})" if args.to else ""))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import json as _json

    from dpctrl.launch.calibrate import calibrate_from_dataset
    from dpctrl.policy import checkpoint
    data = args.data
    if data is None:
        recipe = checkpoint.resolve(args.checkpoint) / "recipe.json"
        data = _json.loads(recipe.read_text())["data"]["path"] if recipe.exists() else f"runs/data/{args.env}.zarr"
    if args.what == "cache":
        from dpctrl.launch.calibrate import calibrate_cache_from_dataset
        sampler, steps = args.sampler or "ddpm", args.steps or 100
        res = calibrate_cache_from_dataset(args.checkpoint, data, args.budget, args.objective, args.bu_top_n,
                                           sampler, steps, n_windows=args.windows or 16)
        print(f"BAC schedule for {sampler}-{steps}, budget {args.budget}, objective {args.objective}: "
              f"{res['block_updates']} block updates of {len(res['schedules']) * steps} "
              f"({res['block_updates_before_bu']} before Bubbling Union on {res['bu_blocks']}); saved {res['saved']}")
        write_json(args.json, res)
        return 0
    cands = tuple(int(k) for k in args.candidates.split(",")) if args.candidates else (0, 1, 2, 3, 5, 8, 12, 20)
    res = calibrate_from_dataset(args.checkpoint, data, n_windows=args.windows or 64, target=args.target,
                                 tail=args.tail, noise=args.noise, candidates=cands,
                                 sampler=args.sampler, steps=args.steps, max_calls=args.max_calls)
    print("| K' | network calls | contraction | error vs full |\n|---|---|---|---|")
    for r in res["candidates"]:
        print(f"| {r['k']} | {r['network_calls']} | {r['contraction']:.3f} | {r['error_vs_full']:.4f} |")
    print(f"recommended K' = {res['recommended_k']} ({res['network_calls']} calls); saved {res['saved']}")
    write_json(args.json, res)
    return 0


def _configure_run(policy, args) -> None:
    """``dpctrl run``'s policy set-up: warm start, device, deploy path (``_check_run_device`` checks
    the combination before anything loads)."""
    apply_warm_start(policy, args)
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

    from dpctrl.launch.run import run
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
    compare_and_write(res, args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dpctrl", description="Diffusion policies as fixed-rate robot controllers.")
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
    add_warm_start_args(e)
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
    t.add_argument("--recoveries", type=int, help="lift: recovery episodes added to the demos (dpctrl collect "
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
                    help="dpctrl eval, drive eval, plan eval reports, or PAD eval + `dpctrl pad frames` reports")
    rs.add_argument("files", nargs="+")
    rs.add_argument("--update-readme", metavar="README")
    rs.add_argument("--block", help="the README block to rewrite (<!-- results:BLOCK:begin -->; default: `what`), "
                                    "for a second table of the same kind")
    rs.set_defaults(func=cmd_results)

    sh = sub.add_parser("ship", help="copy a trained checkpoint under a name: $DPCTRL_HOME/checkpoints/<name> (fp16)")
    sh.add_argument("--from", dest="source", required=True, help="a run's checkpoint directory")
    sh.add_argument("--name", required=True, help="the name (then `--checkpoint NAME` in every command)")
    sh.add_argument("--to", help="write DIR/<name> instead (never inside an installed package)")
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
                   help="async: request the next chunk when this many actions are left (default: half the chunk)")
    add_warm_start_args(r)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--json", help="write stats here")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=cmd_run)

    from dpctrl.launch.bench_cli import add_parser as add_bench_parser
    add_bench_parser(sub)

    from dpctrl.launch.drive_cli import add_parser as add_drive_parser
    from dpctrl.launch.lerobot_roundtrip import add_parser as add_lerobot_parser
    from dpctrl.launch.pad import add_parser as add_pad_parser
    from dpctrl.launch.plan_cli import add_parser as add_plan_parser
    from dpctrl.launch.remote import add_parsers as add_remote_parsers
    add_drive_parser(sub)
    add_lerobot_parser(sub)
    add_plan_parser(sub)
    add_pad_parser(sub)
    add_remote_parsers(sub)

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
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError, ConnectionError, ImportError) as e:
        # an ImportError is the user's to fix only when it names the extra to install
        if os.environ.get("DPCTRL_TRACEBACK") or (isinstance(e, ImportError) and "pip install" not in str(e)):
            raise
        print(f"dpctrl {args.command}: error: {e}  (DPCTRL_TRACEBACK=1 shows where)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
