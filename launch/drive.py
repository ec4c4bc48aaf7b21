"""``dpctrl drive collect|train|eval|bench``: trajectory planning on highway-env.

collect: IDM/MOBIL expert episodes -> ``future`` waypoint targets (data/collect.py).
train:   one planner (anchored | vanilla | regression; policy/drive.py) on a store.
eval:    closed loop on simulated time (control/planning.py); ``--method expert`` runs the
         IDM/MOBIL expert instead. Task metrics in envs/highway.py.
bench:   plan latency of several planners on the same scenes (launch/bench/planners.py).
"""
from __future__ import annotations

from pathlib import Path

from dpctrl.launch.options import label_pairs, write_json

SCENARIOS = ("fork", "traffic")  # envs.highway.SCENARIOS (a test checks they agree)
PLANNERS = ("anchored", "vanilla", "regression")  # policy.drive.METHODS
EVAL_SEED_START = 100_000  # training data uses seeds from 0


def train(scenario: str, method: str, steps: int, out: str | Path, data: str | Path | None = None,
          demos: int = 300, batch_size: int = 128, lr: float = 3e-4, seed: int = 0, progress: bool = True) -> dict:
    import torch

    from dpctrl.data.collect import collect_drive, open_store
    from dpctrl.data.samples import StepDataset
    from dpctrl.policy.drive import DriveConfig, DrivePlanner
    from dpctrl.policy.train import train_config_model
    torch.manual_seed(seed)
    data = Path(data or f"runs/data/drive_{scenario}.zarr")
    report = collect_drive(scenario, demos, data, progress=progress)
    rb = open_store(data, {"env": f"highway:{scenario}", "images": False})
    ds = StepDataset(rb, ["ego", "agents"], "future", episodes=range(min(demos, rb.n_episodes)))
    planner = DrivePlanner(DriveConfig(method=method), seed=seed)
    planner.fit_trajectories(ds.targets, seed=seed)
    recipe = {"scenario": scenario, "data": str(data), "demos": min(demos, rb.n_episodes), "samples": len(ds),
              "command": f"dpctrl drive train --scenario {scenario} --method {method} --demos {demos} --steps {steps} "
                         f"--lr {lr:g} --batch-size {batch_size} --seed {seed} --out {out}"}
    result = train_config_model(planner, ds, out, recipe, steps, batch_size, lr, seed, warmup_steps=200,
                                save_every=500, progress=progress)
    return {"collect": report, **recipe, "train": result}


def evaluate(method: str, scenario: str, episodes: int, checkpoint: str | None = None, n_steps: int | None = None,
             replan_every: int = 5, seed_start: int = EVAL_SEED_START, progress: bool = True) -> dict:
    from dpctrl.control.planning import evaluate_drive
    from dpctrl.policy.drive import DrivePlanner
    from dpctrl.policy.registry import load_method
    if episodes < 1:
        raise ValueError("--episodes must be >= 1")
    if method != "expert" and checkpoint is None:
        raise ValueError("--checkpoint is required unless --method expert")
    planner = None if method == "expert" else load_method(DrivePlanner, checkpoint, method, seed_start)
    res = evaluate_drive(planner, scenario, range(seed_start, seed_start + episodes), method, n_steps, replan_every,
                         progress)
    return {"checkpoint": checkpoint, **res}


def cmd_drive(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    if args.action == "collect":
        from dpctrl.data.collect import collect_drive
        res = collect_drive(args.scenario, args.demos, args.data or f"runs/data/drive_{args.scenario}.zarr", progress)
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
        from dpctrl.launch.bench.planners import bench_drive
        pairs = label_pairs(args.bench, "drive bench needs --bench LABEL=CHECKPOINT ...")
        res = bench_drive(pairs, args.scenario, scenes=args.episodes)
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
