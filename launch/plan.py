"""``dpctrl plan collect|train|eval|bench``: diffusion planning on PointMaze.

collect: the BFS + PD expert with goal resampling into a zarr store (data/collect.py).
train:   a ``diffuser`` or ``trajdiff`` planner (policy/planner.py) on goal-directed segments.
eval:    closed loop on simulated time (control/planning.py): plan, track with a PD law
         (control/tracking.py), hold the goal; the expert and a uniform-random policy on the
         same seeds give the D4RL-style normalised score (envs/maze.py).
bench:   planning time of several checkpoints on the same scenes, interleaved (launch/bench/planners.py).
"""
from __future__ import annotations

from pathlib import Path

from dpctrl.launch.options import label_pairs, write_json

MAZES = ("umaze", "medium", "large")  # envs.maze.MAZES
PLANNERS = ("diffuser", "trajdiff")  # policy.planner.METHODS
SHIPPED = {"diffuser": "plan-umaze-diffuser", "trajdiff": "plan-umaze-trajdiff"}
EVAL_SEED_START = 100_000
STRIDE = {"umaze": 4, "medium": 8, "large": 12}  # 32 plan points: Diffuser's 128 / 256 / 384-step horizons


def default_data(maze: str) -> Path:
    from dpctrl.envs.maze import maze_name
    return Path(f"runs/data/maze_{maze_name(maze)}.zarr")


def train(maze: str, method: str, steps: int, out: str | Path, data: str | Path | None = None,
          data_steps: int = 1_000_000, batch_size: int = 64, lr: float = 2e-4, seed: int = 0,
          progress: bool = True) -> dict:
    """Collect (or reuse) the expert store, then train a planner on its goal-directed segments
    (``data.samples.GoalSegments``: from any step until the expert reaches its goal, then at
    rest on the goal; plain windows of a goal-resampling run also hold the expert's turn-arounds
    at earlier goals, and planners trained on those wandered: 1.39x the expert's path on UMaze)."""
    import torch

    from dpctrl.data.collect import collect_maze, open_store
    from dpctrl.data.samples import GoalSegments
    from dpctrl.envs.maze import maze_name
    from dpctrl.policy.planner import PlannerConfig, TrajectoryPlanner
    from dpctrl.policy.train import train_config_model
    maze = maze_name(maze)
    torch.manual_seed(seed)
    data = Path(data or default_data(maze))
    report = collect_maze(maze, data_steps, data, progress=progress)
    rb = open_store(data, {"env": f"maze:{maze}", "images": False})
    cfg = PlannerConfig(method=method, stride=STRIDE[maze])
    ds = GoalSegments(rb, cfg.n_points, cfg.stride)
    planner = TrajectoryPlanner(cfg, seed=seed)
    planner.fit_states(ds.data)
    recipe = {"maze": maze, "data": str(data), "windows": len(ds),
              "command": f"dpctrl plan train --maze {maze} --planner {method} --steps {steps} --lr {lr:g} "
                         f"--batch-size {batch_size} --seed {seed} --out {out}"}
    return {"collect": report, **recipe,
            "train": train_config_model(planner, ds, out, recipe, steps, batch_size, lr, seed, progress=progress)}


def load_planner(maze: str, name: str, checkpoint: str | None, seed: int):
    """The planner ``name`` from ``checkpoint`` (None for expert | random), checked against the maze."""
    from dpctrl.policy.planner import TrajectoryPlanner
    from dpctrl.policy.registry import load_method
    if name in ("expert", "random"):
        return None
    if checkpoint is None:
        raise ValueError("--checkpoint is required for a diffusion planner")
    planner = load_method(TrajectoryPlanner, checkpoint, name, seed)
    trained_on = planner.checkpoint_config.get("maze")
    if trained_on is not None and trained_on != maze:
        raise ValueError(f"{checkpoint} was trained on maze {trained_on!r}, not {maze!r}; pass --checkpoint")
    return planner


def evaluate(maze: str, planner_name: str, episodes: int, checkpoint: str | None = None,
             seed_start: int = EVAL_SEED_START, replan_every: int = 0, n_steps: int | None = None,
             progress: bool = True) -> dict:
    from dpctrl.control.planning import evaluate_maze
    from dpctrl.envs.maze import maze_name
    maze = maze_name(maze)
    if episodes < 1:
        raise ValueError("--episodes must be >= 1")
    planner = load_planner(maze, planner_name, checkpoint, seed_start)  # before any episode runs
    res = evaluate_maze(planner, maze, range(seed_start, seed_start + episodes), planner_name, replan_every, n_steps,
                        progress)
    return {"checkpoint": checkpoint, **res}


def cmd_plan(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    if args.action == "collect":
        from dpctrl.data.collect import collect_maze
        res = collect_maze(args.maze, args.data_steps, args.data or default_data(args.maze), progress)
        print(f"maze:{res['maze']}: {res['steps']} expert steps in {res['out']} (+{res['added_steps']} this run, "
              f"{res['goals_reached']} goals reached)")
    elif args.action == "train":
        if not args.out:
            raise ValueError("plan train needs --out")
        res = train(args.maze, args.planner, args.steps, args.out, data=args.data, data_steps=args.data_steps,
                    batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=progress)
        print(f"trained {args.planner} on {res['windows']} windows: {res['train']['samples_per_s']:.0f} samples/s; "
              f"checkpoint in {Path(args.out) / 'checkpoint'}")
    elif args.action == "bench":
        from dpctrl.launch.bench.planners import bench_maze
        res = bench_maze(args.maze, label_pairs(args.bench, "plan bench needs --bench LABEL=CHECKPOINT ... (reference first)"),
                    scenes=args.episodes)
        res["command"] = (f"dpctrl plan bench --maze {args.maze} --episodes {args.episodes} --threads {args.threads} "
                          f"--bench " + " ".join(args.bench))
        ref = next(iter(res["plan_time_ms"]))
        for k, v in res["plan_time_ms"].items():
            print(f"{k:12s} planning time p50 {v['p50']:7.2f} ms ({res['ratio_vs_' + ref][k]:.3f} x {ref})")
    else:
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
