"""``dpctrl train`` and ``dpctrl ship``: collect (or reuse) demonstrations, train the task's
recipe (policy/recipes.py), evaluate on seeds disjoint from the demonstrations', save the
EMA checkpoint with a ``recipe.json``; ship a run's checkpoint under a name.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
from dataclasses import asdict
from pathlib import Path

from dpctrl.launch.options import command_line


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train_task(task: str, steps: int, out: str | Path, images: bool = False,
               cameras: tuple[str, ...] | None = None, demos: int | None = None,
               recoveries: int | None = None, seed: int = 0, batch_size: int | None = None, lr: float = 3e-4, eval_episodes: int = 50,
               eval_every: int = 0, data_dir: str | Path = "runs/data", progress: bool = True,
               discrete_scale: float = 1.0, prefix_max: int = 0, init_from: str | None = None) -> dict:
    """Collect (or reuse) the demonstrations, train the task's recipe, evaluate the EMA policy on
    ``eval_episodes`` held-out seeds; the checkpoint and its ``recipe.json`` in ``out/checkpoint``.
    ``prefix_max``: train on committed prefixes (policy/prefix.py); ``init_from``: start from a
    checkpoint's weights."""
    from dpctrl import envs
    from dpctrl.data import ReplayBuffer
    from dpctrl.data.collect import collect, recovery_path, store_path
    from dpctrl.data.dataset import WindowDataset
    from dpctrl.envs.evaluate import evaluate
    from dpctrl.policy.recipes import EVAL_SEED_START, IMAGES, RECOVERY_SEED_START, PolicyRecipe, data_spec, recipe_for
    from dpctrl.policy.train import Trainer, TrainConfig
    metaworld = task.startswith("metaworld:")
    if metaworld and ("," in task or not images):
        raise ValueError("the core's DP-T trains on one MetaWorld task at a time, from images: "
                         "--task metaworld:<task> --images (multi-task MetaWorld: --policy pad)")
    if metaworld and cameras is not None:
        raise ValueError("--cameras is for robosuite tasks; MetaWorld image policies see its corner camera")
    recipe = recipe_for(task)
    demos = demos or recipe.demos
    recoveries = (IMAGES.recoveries if images and task == "lift" else 0) if recoveries is None else recoveries
    envs.check_recoveries(task, recoveries)  # before anything is collected
    out = Path(out)
    spec = data_spec(task, images, cameras, data_dir, store_path(task.split(":", 1)[1]) if metaworld else None)
    data_path, obs_keys, image_keys, cams = spec.path, spec.obs_keys, spec.image_keys, spec.cameras
    import torch.distributed as dist
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank == 0:  # under torchrun, one process collects while the others wait
        collect(task, demos, data_path, images=images, progress=progress,
                cameras=envs.DEFAULT_CAMERAS if metaworld else cams)
        if recoveries:
            collect(task, recoveries, recovery_path(data_path), images=images, progress=progress, cameras=cams,
                    seed=RECOVERY_SEED_START, recoveries=True)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    rb = ReplayBuffer.open(data_path)
    batch_size = batch_size or (IMAGES.batch_size if images else recipe.batch_size)
    extra = [(ReplayBuffer.open(recovery_path(data_path)), range(recoveries))] if recoveries else []
    ds = WindowDataset(rb, obs_keys=obs_keys, image_keys=image_keys, n_obs_steps=recipe.n_obs_steps,
                       horizon=recipe.horizon, n_action_steps=recipe.n_action_steps, episodes=range(demos), extra=extra)
    dims = ds.dims()
    policy = PolicyRecipe(recipe, {k: dims[k] for k in obs_keys}, dims["action"], image_keys, spec.image_size,
                          spec.image_crop, envs.discrete_action_dims(task), discrete_scale,
                          prefix_max).build(ds.stats(), seed, init_from)
    tcfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, warmup_steps=min(500, steps // 10),
                       eval_every=eval_every, save_every=max(100, min(1000, steps // 5)))
    periodic = (lambda pol, step: {k: v for k, v in evaluate(pol, task, 10, EVAL_SEED_START + 50_000,
                                                               progress=False).items()
                                   if k in ("success_rate", "mean_max_reward")}) if eval_every else None
    trainer = Trainer(policy, ds, tcfg, out, eval_fn=periodic, progress=progress)
    result = trainer.run()
    if rank:
        return {"rank": rank, "samples_per_s": result["samples_per_s"]}
    final = evaluate(trainer.ema, task, eval_episodes, EVAL_SEED_START, progress=progress)
    recipe_out = {
        "command": command_line() or f"train_task({task!r}, steps={steps}, images={images}, cameras={cameras}, demos={demos}, "
             f"recoveries={recoveries}, seed={seed})",
        "commit": git_commit(),
        "task": task,
        "data": {"path": str(data_path), "episodes": demos, "demo_seeds": "0.. (successful expert episodes)",
                 "steps": ds.n_steps,
                 "recoveries": {"path": str(recovery_path(data_path)), "episodes": recoveries,
                                "seeds": f"{RECOVERY_SEED_START}.. (missed first grasp, regrasped)"}
                 if recoveries else None},
        "seed": seed,
        "init_from": None if init_from is None else str(init_from),
        "prefix_max": prefix_max,
        "train": asdict(tcfg),
        "samples_per_s": result["samples_per_s"],
        # a run resumed with more --steps continues the saved state under the new schedule
        # (a warm restart): reproduce by running the earlier command first, then this one
        "resumed_from_step": result["resumed_from"],
        "final_eval": {k: final[k] for k in ("success_rate", "mean_max_reward", "episodes", "sampler",
                                             "num_inference_steps", "nfe_per_chunk", "chunk_latency_ms")},
        "eval_seed_start": EVAL_SEED_START,
    }
    (out / "checkpoint" / "recipe.json").write_text(json.dumps(recipe_out, indent=2) + "\n")
    (out / "eval.json").write_text(json.dumps(final, indent=2) + "\n")
    return recipe_out


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from dpctrl import envs
    torch.set_num_threads(args.threads)
    if args.policy == "pad":
        if args.prefix_max or args.init_from:
            raise ValueError("--prefix-max and --init-from are options of the DP-T policy (--policy dpt)")
        from dpctrl.launch.pad import cmd_train_pad
        return cmd_train_pad(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: data parallel
        import torch.distributed as dist
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    cams = envs.parse_cameras(args.cameras) if args.cameras is not None else None  # None: the recipe's
    rec = train_task(args.task, args.steps, args.out, images=args.images or args.cameras is not None,
                     cameras=cams, demos=args.demos, recoveries=args.recoveries, seed=args.seed,
                     batch_size=args.batch_size, lr=args.lr, eval_episodes=args.eval_episodes,
                     eval_every=args.eval_every, progress=not args.no_progress, discrete_scale=args.discrete_scale,
                     prefix_max=args.prefix_max, init_from=args.init_from)
    if "rank" in rec:  # a torchrun worker other than rank 0: it reports nothing
        return 0
    ev = rec["final_eval"]
    print(f"{args.task}: trained {args.steps} steps at {rec['samples_per_s']:.0f} samples/s; success "
          f"{ev['success_rate']:.3f} over {ev['episodes']} held-out episodes; checkpoint in {args.out}/checkpoint")
    return 0


def cmd_ship(args: argparse.Namespace) -> int:
    from dpctrl.launch.calibrate import dataset
    from dpctrl.policy.diffusion_policy import DiffusionPolicy
    from dpctrl.policy import checkpoint
    from dpctrl.policy.shipping import ship_policy
    checkpoint.ship_target(args.name, args.to)  # refuse the target before reading any data
    recipe = json.loads((Path(args.source) / "recipe.json").read_text())
    windows = dataset(DiffusionPolicy.load(args.source), recipe["data"]["path"]).spaced_windows(64)
    info = ship_policy(args.source, args.name, windows, fp16=not args.fp32, to=args.to,
                       discrete_dims=[int(d) for d in args.discrete_dims.split(",")] if args.discrete_dims else None)
    print(f"shipped {args.source} as {args.name!r} in {info['path']}: {info['dtype']}, {info['size_bytes'] / 1e6:.2f} "
          f"MB, max action difference vs fp32 {info['max_abs_action_diff_vs_fp32']:.2e} on {info['windows_checked']} "
          f"windows; use it as --checkpoint {args.name}" + (f" (with DPCTRL_HOME pointing above {args.to})" if args.to else ""))
    return 0


def add_parser(sub) -> None:
    t = sub.add_parser("train", help="collect demos (or reuse), train, evaluate, save")
    t.add_argument("--task", required=True,
                   help="lift | stack | can | square | metaworld:<task>[,<task>...] (several tasks: --policy "
                        "pad; the core's DP-T: one task, with --images)")
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
    t.add_argument("--recoveries", type=int, help="lift, stack, can: recovery episodes added to the demos (dpctrl "
                                                  "collect --recoveries; default: lift images 100, else 0)")
    t.add_argument("--batch-size", type=int, default=None, help="default: 128 (low-dim), 64 (images)")
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--discrete-scale", type=float, default=1.0,
                   help="train the gripper dims at +-1/f (RTI's scale mode; 1 = off)")
    t.add_argument("--prefix-max", type=int, default=0, metavar="D",
                   help="train for --overlap prefix: each sample gets 0..D clean committed actions (loss masked, "
                        "a learned flag marking them)")
    t.add_argument("--init-from", metavar="CHECKPOINT",
                   help="start from this checkpoint's weights (same network; fine-tuning, e.g. with --prefix-max)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eval-episodes", type=int, default=50)
    t.add_argument("--eval-every", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)

    sh = sub.add_parser("ship", help="copy a trained checkpoint under a name: $DPCTRL_HOME/checkpoints/<name> (fp16)")
    sh.add_argument("--from", dest="source", required=True, help="a run's checkpoint directory")
    sh.add_argument("--name", required=True, help="the name (then `--checkpoint NAME` in every command)")
    sh.add_argument("--to", help="write DIR/<name> instead (never inside an installed package)")
    sh.add_argument("--fp32", action="store_true", help="keep float32 weights")
    sh.add_argument("--discrete-dims", help="comma-separated binary action dims, for older runs")
    sh.set_defaults(func=cmd_ship)
