"""``dpctrl drive``'s arguments (kept apart from launch/drive.py so that ``dpctrl --help``
does not import torch or highway-env)."""
from __future__ import annotations

from pathlib import Path

SCENARIOS = ("fork", "traffic")  # envs.highway.SCENARIOS (a test checks they agree)
PLANNERS = ("anchored", "vanilla", "regression")  # policy.drive.METHODS
EVAL_SEED_START = 100_000  # training data uses seeds from 0


def cmd_drive(args) -> int:
    import torch

    from dpctrl.launch.options import label_pairs, write_json
    from dpctrl.launch.drive import collect, evaluate, train
    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    if args.action == "collect":
        res = collect(args.scenario, args.demos, args.data or f"runs/data/drive_{args.scenario}.zarr", progress)
        print(f"{res['episodes']} expert episodes ({res['samples']} samples) in {res['out']}; "
              f"{res['expert_crashes_this_call']} crashed expert episodes skipped")
    elif args.action == "train":
        if not args.out:
            raise ValueError("drive train needs --out")
        res = train(args.scenario, args.method, args.steps, args.out, data=args.data, demos=args.demos,
                    batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=progress)
        print(f"trained {args.method} on {res['samples']} samples ({res['demos']} episodes): "
              f"{res['train']['samples_per_s']:.0f} samples/s; checkpoint in {Path(args.out) / 'checkpoint'}")
    elif args.action == "bench":
        from dpctrl.launch.drive import bench_latency
        pairs = label_pairs(args.bench, "drive bench needs --bench LABEL=CHECKPOINT ...")
        res = bench_latency(pairs, args.scenario, scenes=args.episodes)
        res["command"] = f"dpctrl drive bench --scenario {args.scenario} --episodes {args.episodes} " \
                         f"--threads {args.threads} --bench " + " ".join(args.bench)
        for k, v in res["latency_ms"].items():
            ratio = res["vs_vanilla20"][k] if res["vs_vanilla20"] else float("nan")
            print(f"{k:12s} plan latency p50 {v['p50']:7.2f} ms  p99 {v['p99']:7.2f} ms  ({ratio:.3f} x vanilla-20)")
    else:
        ckpt = args.checkpoint if args.checkpoint or args.method == "expert" else "drive-fork"
        res = evaluate(args.method, args.scenario, args.episodes, checkpoint=ckpt, n_steps=args.steps_per_plan,
                       replan_every=args.replan_every, seed_start=args.seed_start, progress=progress)
        res["command"] = " ".join(
            ["dpctrl drive eval", f"--scenario {args.scenario} --method {args.method}"]
            + ([f"--checkpoint {ckpt}"] if ckpt else [])
            + ([f"--steps-per-plan {args.steps_per_plan}"] if args.steps_per_plan is not None else [])
            + [f"--episodes {args.episodes} --seed-start {args.seed_start} --replan-every {args.replan_every}"
               f" --threads {args.threads}"])
        lat = res.get("plan_latency_ms", {})
        lc = res["lane_change"]
        print(f"{args.scenario} {args.method}{'' if args.steps_per_plan is None else f'-{args.steps_per_plan}'}: "
              f"collision rate {res['collision_rate']:.3f} over {res['episodes']} episodes; progress "
              f"{res['progress_m']:.0f} m; lane change left/right/keep {lc['left']}/{lc['right']}/{lc['keep']}"
              + (f"; plan latency p50 {lat['p50']:.1f} ms" if lat else "")
              + (f"; diversity {res['diversity']:.3f}" if "diversity" in res else "")
              + (f"; both lanes in top-3 {res['top3_both_lanes']:.3f}" if "top3_both_lanes" in res else ""))
    write_json(args.json, res)
    return 0


def add_parser(sub) -> None:
    d = sub.add_parser("drive", help="trajectory planning on highway-env: collect | train | eval")
    d.add_argument("action", choices=["collect", "train", "eval", "bench"],
                   help="bench: plan latency of --bench LABEL=CHECKPOINT planners on the same scenes")
    d.add_argument("--bench", nargs="+", metavar="LABEL=CKPT",
                   help="e.g. anchored=DIR vanilla-20=DIR vanilla-2=DIR regression=DIR")
    d.add_argument("--scenario", choices=list(SCENARIOS), default="fork")
    d.add_argument("--method", choices=[*PLANNERS, "expert"], default="anchored",
                   help="expert: the IDM/MOBIL expert itself (eval only)")
    d.add_argument("--data", help="zarr store of expert episodes (default runs/data/drive_<scenario>.zarr)")
    d.add_argument("--demos", type=int, default=300, help="expert episodes to train on (collected if missing)")
    d.add_argument("--steps", type=int, default=3000, help="training steps")
    d.add_argument("--batch-size", type=int, default=128)
    d.add_argument("--lr", type=float, default=3e-4)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", help="training output directory (checkpoint in OUT/checkpoint)")
    d.add_argument("--checkpoint", help="planner checkpoint for eval (default: the shipped drive-fork)")
    d.add_argument("--steps-per-plan", type=int, help="vanilla: DDIM steps per plan (default 20)")
    d.add_argument("--replan-every", type=int, default=5, help="control steps (at 10 Hz) between plans")
    d.add_argument("--episodes", type=int, default=100)
    d.add_argument("--seed-start", type=int, default=EVAL_SEED_START)
    d.add_argument("--threads", type=int, default=1)
    d.add_argument("--json", help="write the machine-readable result here")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=cmd_drive)


def drive_table(files: list[str]) -> str:
    """The README's driving table from ``dpctrl drive eval`` JSON reports."""
    import json

    from dpctrl.launch.results import machine, markdown_table
    rows, notes = [], []
    for f in files:
        r = json.loads(Path(f).read_text())
        if "latency_ms" in r and "vs_vanilla20" in r:  # a `dpctrl drive bench` report
            notes.append(f"Plan latency, batch 1, the same {r['scenes']} {r['scenario']} scenes timed interleaved "
                         f"in one process (`{r['command']}`): "
                         + ", ".join(f"{k} {v['p50']:.2f} ms" + (f" ({r['vs_vanilla20'][k]:.3f} x vanilla-20)"
                                                                   if r["vs_vanilla20"] else "")
                                     for k, v in r["latency_ms"].items()) + ".")
            continue
        if "collision_rate" not in r or "per_episode" not in r or "command" not in r:
            raise ValueError(f"{f} is not a `dpctrl drive eval` report")
        steps = "" if r["method"] in ("expert", "regression") else f"-{r['n_steps']}"
        if r["method"] == "vanilla" and r.get("prediction_type") == "sample":
            steps += " (x0 + L1)"
        lat = r.get("plan_latency_ms")
        lc = r["lane_change"]
        rows.append([r["scenario"], r["method"] + steps, f"{r['collision_rate']:.3f}", f"{r['offroad_rate']:.3f}",
                     f"{r['progress_m']:.0f}", f"{lc['left']}/{lc['right']}/{lc['keep']}",
                     f"{lat['p50']:.1f}" if lat else "-",
                     f"{r['diversity']:.3f}" if "diversity" in r else "-",
                     f"{r['top3_both_lanes']:.3f}" if "top3_both_lanes" in r else "-", r["episodes"],
                     f"`{r['command']}`"])
    return (f"Machine: {machine()}; 1 torch thread; seeds from 100000 (expert data uses seeds from 0). "
            "Latencies in the table come from separate, loaded runs; compare them within the line below.\n\n"
            + "".join(n + "\n\n" for n in notes)
            + markdown_table(["scenario", "planner", "collision", "off-road", "progress (m)", "lane change L/R/keep",
                              "plan latency p50 (ms)", "diversity", "both lanes in top-3", "episodes", "command"],
                             rows))
