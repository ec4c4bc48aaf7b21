"""``dpctrl plan``'s arguments (apart from launch/plan.py so ``dpctrl --help`` stays light)."""
from __future__ import annotations

from pathlib import Path

MAZES = ("umaze", "medium", "large")  # envs.maze.MAZES
PLANNERS = ("diffuser", "trajdiff")  # policy.planner.METHODS
SHIPPED = {"diffuser": "plan-umaze-diffuser", "trajdiff": "plan-umaze-trajdiff"}


def cmd_plan(args) -> int:
    import torch

    from dpctrl.launch.options import label_pairs, write_json
    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    if args.action == "collect":
        from dpctrl.launch.plan import collect
        res = collect(args.maze, args.data_steps, args.data, progress)
        print(f"maze:{res['maze']}: {res['steps']} expert steps in {res['out']} (+{res['added_steps']} this run, "
              f"{res['goals_reached']} goals reached)")
    elif args.action == "train":
        from dpctrl.launch.plan import train
        if not args.out:
            raise ValueError("plan train needs --out")
        res = train(args.maze, args.planner, args.steps, args.out, data=args.data, data_steps=args.data_steps,
                    batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=progress)
        print(f"trained {args.planner} on {res['windows']} windows: {res['train']['samples_per_s']:.0f} samples/s; "
              f"checkpoint in {Path(args.out) / 'checkpoint'}")
    elif args.action == "bench":
        from dpctrl.launch.plan import bench
        res = bench(args.maze, label_pairs(args.bench, "plan bench needs --bench LABEL=CHECKPOINT ... (reference first)"),
                    scenes=args.episodes)
        res["command"] = (f"dpctrl plan bench --maze {args.maze} --episodes {args.episodes} --threads {args.threads} "
                          f"--bench " + " ".join(args.bench))
        ref = next(iter(res["plan_time_ms"]))
        for k, v in res["plan_time_ms"].items():
            print(f"{k:12s} planning time p50 {v['p50']:7.2f} ms ({res['ratio_vs_' + ref][k]:.3f} x {ref})")
    else:
        from dpctrl.launch.plan import evaluate
        ckpt = args.checkpoint
        if ckpt is None and args.planner in SHIPPED:
            ckpt = SHIPPED[args.planner]
        res = evaluate(args.maze, args.planner, args.episodes, checkpoint=ckpt, seed_start=args.seed_start,
                       replan_every=args.replan_every, n_steps=args.steps_per_plan, progress=progress)
        res["command"] = " ".join(
            [f"dpctrl plan eval --maze {args.maze} --planner {args.planner}"]
            + ([f"--checkpoint {ckpt}"] if ckpt else [])
            + ([f"--steps-per-plan {args.steps_per_plan}"] if args.steps_per_plan else [])
            + [f"--episodes {args.episodes} --seed-start {args.seed_start} --replan-every {args.replan_every} "
               f"--threads {args.threads}"])
        t = res.get("plan_time_ms")
        wall = res["plan_waypoints_in_walls"]
        ratio = res["path_length_ratio"]
        print(f"{args.maze} {args.planner}: success {res['success_rate']:.3f} over {res['episodes']} episodes "
              f"(expert {res['expert_success_rate']:.3f}); normalized score {res['normalized_score']:.1f}"
              + (f"; path length {ratio:.2f} x expert" if ratio is not None else "")
              + (f"; plan waypoints in walls {wall:.3%}" if wall is not None else "")
              + (f"; planning time p50 {t['p50']:.1f} ms" if t else ""))
    write_json(args.json, res)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="offline-RL trajectory planning on PointMaze: collect | train | eval | bench")
    p.add_argument("action", choices=["collect", "train", "eval", "bench"])
    p.add_argument("--maze", choices=list(MAZES), default="umaze")
    p.add_argument("--planner", choices=[*PLANNERS, "expert", "random"], default="diffuser",
                   help="expert / random: the BFS expert or uniform-random actions (eval only)")
    p.add_argument("--checkpoint", help="planner checkpoint (default: the shipped UMaze one)")
    p.add_argument("--data", help="expert store (default runs/data/maze_<maze>.zarr)")
    p.add_argument("--data-steps", type=int, default=1_000_000, help="expert steps the store should hold")
    p.add_argument("--steps", type=int, default=20000, help="training steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="training output directory (checkpoint in OUT/checkpoint)")
    p.add_argument("--episodes", type=int, default=50, help="eval episodes / bench scenes")
    p.add_argument("--seed-start", type=int, default=100_000)
    p.add_argument("--replan-every", type=int, default=0, help="replan every N control steps (0: plan once)")
    p.add_argument("--steps-per-plan", type=int, help="diffuser: DDIM steps (default: the checkpoint's)")
    p.add_argument("--bench", nargs="+", metavar="LABEL=CKPT", help="bench: planners to time, reference first")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_plan)


def plan_table(files: list[str]) -> str:
    """The README's planning table from ``dpctrl plan eval`` / ``dpctrl plan bench`` JSON reports."""
    import json

    from dpctrl.launch.results import machine, markdown_table
    rows, notes = [], []
    for f in files:
        r = json.loads(Path(f).read_text())
        if "plan_time_ms" in r and "scenes" in r:  # a `dpctrl plan bench` report
            ref = next(iter(r["plan_time_ms"]))
            notes.append(f"Planning time, batch 1, the same {r['scenes']} {r['maze']} start states timed interleaved in "
                         f"one process (`{r['command']}`): "
                         + ", ".join(f"{k} {v['p50']:.1f} ms ({r['ratio_vs_' + ref][k]:.3f} x {ref})"
                                     for k, v in r["plan_time_ms"].items()) + ".")
            continue
        if "success_rate" not in r or "normalized_score" not in r or "command" not in r:
            raise ValueError(f"{f} is not a `dpctrl plan eval` report")
        t = r.get("plan_time_ms")
        wall, ratio = r["plan_waypoints_in_walls"], r["path_length_ratio"]
        name = r["planner"] + (f"-{r['n_steps']}" if r["planner"] in PLANNERS else "")
        if r.get("replan_every_steps"):
            name += f", replan every {r['replan_every_steps']} steps"
        rows.append([r["maze"], name, f"{r['success_rate']:.3f}", f"{r['normalized_score']:.1f}",
                     "-" if ratio is None else f"{ratio:.2f}", "-" if wall is None else f"{wall:.2%}",
                     f"{t['p50']:.1f}" if t else "-", r["episodes"], f"`{r['command']}`"])
    return (f"Machine: {machine()}; 1 torch thread; seeds from 100000 (expert data: seeds from 0). Normalised "
            "score: 100 (R - R_random) / (R_expert - R_random) on the same seeds, R = steps within 0.45 m of "
            "the goal. Path length: mean over episodes both this planner and the expert solved. Planning times "
            "in the table come from separate, loaded runs; compare them within the line below.\n\n"
            + "".join(n + "\n\n" for n in notes)
            + markdown_table(["maze", "planner", "success", "normalised score", "path length / expert",
                              "plan waypoints in walls", "planning time p50 (ms)", "episodes", "command"], rows))
