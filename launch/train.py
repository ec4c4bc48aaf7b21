"""``dpctrl train``: the training recipes. Collect (or reuse) demonstrations, train, evaluate
on seeds disjoint from the demonstrations', save the EMA checkpoint and a ``recipe.json``.

Demonstrations use seeds from 0 upward; evaluation uses seeds from 100000, so no evaluation
scene was seen in training.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from dpctrl import envs
from dpctrl.data import ReplayBuffer
from dpctrl.data.dataset import WindowDataset
from dpctrl.launch.collect import collect
from dpctrl.launch.evaluate import evaluate
from dpctrl.policy import checkpoint
from dpctrl.policy.diffusion_policy import DiffusionPolicy, PolicyConfig
from dpctrl.policy.normalizer import Normalizer
from dpctrl.policy.train import Trainer, TrainConfig

PROPRIO_KEYS = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]
LOW_DIM_KEYS = PROPRIO_KEYS + ["object"]  # the object's pose: low-dim policies only
EVAL_SEED_START = 100_000
RECOVERY_SEED_START = 50_000  # recovery episodes' scenes: disjoint from demos (0..) and evals

# CPU-sized defaults (a 1.2M-parameter DP-T: 4 layers, width 128); the 9M model of the
# paper trains ~13x slower per sample on 2 cores. Sample (x0) prediction instead of the
# paper's epsilon: on short CPU budgets it learns the observation -> action map far sooner
# (tests/policy/test_train.py's toy task: 0.02 vs 0.8 action error after 1500 steps).
RECIPES = {
    "lift": {"demos": 200, "n_layer": 4, "n_emb": 128},
    "stack": {"demos": 300, "n_layer": 4, "n_emb": 128},
    # PAD's DP-T baseline (issue 8): one task per model (the core's policy has no task input),
    # the same inputs as PAD (MetaWorld's 39-d state + the 64x64 corner camera)
    "metaworld": {"demos": 50, "n_layer": 4, "n_emb": 128},
}
# Image policies see the robot's proprioception and the cameras, never the object
# state. The encoder is a quarter of the default width: 1.3 s vs 5.0 s per batch of 128 on one
# CPU thread, which is what makes an image run fit in about an hour here.
# Two cameras by default: the wrist camera sees the cube between the fingers (Lift, same 100
# held-out seeds: agentview alone 0.72, agentview + wrist 0.79; README Results).
# Lift adds 100 recovery episodes (missed grasp, regrasp; launch/collect.py) to the 200 demos:
# 0.79 -> 0.99 on those seeds, 0.995 over 200 (README Results).
IMAGE_RECIPE = {"image_widths": [16, 32, 64], "batch_size": 64, "cameras": ("agentview", "robot0_eye_in_hand"),
                "recoveries": 100}


def recovery_path(data_path: Path) -> Path:
    """The store of recovery episodes (``dpctrl collect --recoveries``) beside a demo store."""
    return data_path.with_name(data_path.stem + "_recoveries.zarr")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_policy(ds: WindowDataset, n_layer: int, n_emb: int, image_keys: list[str], seed: int,
                 discrete_dims: list[int] | None = None, image_widths: list[int] | None = None,
                 discrete_scale: float = 1.0, image_size: int = 84, image_crop: int = 76) -> DiffusionPolicy:
    torch.manual_seed(seed)
    dims = {k: int(ds._low[k].shape[1]) for k in ds.obs_keys}
    cfg = PolicyConfig(obs_dims=dims, action_dim=int(ds._low["action"].shape[1]), image_keys=image_keys,
                       image_size=image_size, image_crop=image_crop,
                       n_layer=n_layer, n_emb=n_emb, image_widths=list(image_widths or [32, 64, 128]),
                       p_drop_attn=0.3 if image_keys else 0.01,
                       prediction_type="sample", discrete_action_dims=list(discrete_dims or []),
                       discrete_scale=discrete_scale,
                       horizon=16, n_obs_steps=2, n_action_steps=8, sampler="ddim", num_inference_steps=10)
    return DiffusionPolicy(cfg, Normalizer.from_stats(ds.stats()), seed=seed)


def train_task(task: str, steps: int, out: str | Path, images: bool = False,
               cameras: tuple[str, ...] | None = None, demos: int | None = None,
               recoveries: int | None = None, seed: int = 0, batch_size: int | None = None, lr: float = 3e-4, eval_episodes: int = 50,
               eval_every: int = 0, data_dir: str | Path = "runs/data", progress: bool = True,
               discrete_scale: float = 1.0) -> dict:
    metaworld = task.startswith("metaworld:")
    if metaworld and ("," in task or not images):
        raise ValueError("the core's DP-T trains on one MetaWorld task at a time, from images: "
                         "--task metaworld:<task> --images (multi-task MetaWorld: --policy pad)")
    if metaworld and cameras is not None:
        raise ValueError("--cameras is for robosuite tasks; MetaWorld image policies see its corner camera")
    if task.split(":")[0] not in RECIPES:
        raise ValueError(f"no training recipe for {task!r}; known: {sorted(RECIPES)}")
    recipe = RECIPES[task.split(":")[0]]
    demos = demos or recipe["demos"]
    recoveries = (IMAGE_RECIPE["recoveries"] if images and task == "lift" else 0) if recoveries is None else recoveries
    if recoveries < 0 or (recoveries and task != "lift"):
        raise ValueError(f"--recoveries takes a count >= 0 and exists for lift only; got {recoveries} for {task!r}")
    out = Path(out)
    if metaworld:  # PAD's demonstration stores (64x64 frames), shared with its runs
        from dpctrl.launch.pad import store_path
        data_path = store_path(task.split(":", 1)[1])
        obs_keys, image_keys, image_size, image_crop = ["state"], ["corner_image"], 64, 58
    else:
        cams = tuple(cameras or IMAGE_RECIPE["cameras"])
        data_path = Path(data_dir) / (f"{task}_images.zarr" if images and cams == envs.DEFAULT_CAMERAS else
                                      f"{task}_images_{'+'.join(cams)}.zarr" if images else f"{task}.zarr")
        obs_keys = PROPRIO_KEYS if images else LOW_DIM_KEYS
        image_keys = [f"{c}_image" for c in cams] if images else []
        image_size, image_crop = 84, 76
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
    batch_size = batch_size or (IMAGE_RECIPE["batch_size"] if images else 128)
    extra = [(ReplayBuffer.open(recovery_path(data_path)), range(recoveries))] if recoveries else []
    ds = WindowDataset(rb, obs_keys=obs_keys, image_keys=image_keys, n_obs_steps=2, horizon=16,
                       n_action_steps=8, episodes=range(demos), extra=extra)
    policy = build_policy(ds, recipe["n_layer"], recipe["n_emb"], image_keys, seed, envs.discrete_action_dims(task),
                          IMAGE_RECIPE["image_widths"] if images else None, discrete_scale, image_size, image_crop)
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
        "command": "dpctrl " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[0].endswith("dpctrl")
        else f"train_task({task!r}, steps={steps}, images={images}, cameras={cameras}, demos={demos}, "
             f"recoveries={recoveries}, seed={seed})",
        "commit": git_commit(),
        "task": task,
        "data": {"path": str(data_path), "episodes": demos, "demo_seeds": "0.. (successful expert episodes)",
                 "steps": int(ds._lengths.sum()),
                 "recoveries": {"path": str(recovery_path(data_path)), "episodes": recoveries,
                                "seeds": f"{RECOVERY_SEED_START}.. (missed first grasp, regrasped)"}
                 if recoveries else None},
        "seed": seed,
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


def ship(run_checkpoint: str | Path, name: str, fp16: bool = True, check_windows: int = 64,
         discrete_dims: list[int] | None = None, to: str | Path | None = None) -> dict:
    """Copy a trained checkpoint to ``$DPCTRL_HOME/checkpoints/<name>/`` (or ``to/<name>``), fp16
    weights by default, with its recipe.json extended by the fp16-vs-fp32 action difference on
    dataset windows. Never into an installed package (``checkpoint.ship_target``)."""
    src = Path(run_checkpoint)
    recipe = json.loads((src / "recipe.json").read_text())
    dest = checkpoint.ship_target(name, to)
    full = DiffusionPolicy.load(src)
    if discrete_dims is not None:  # for runs trained before the config carried them
        full.cfg.discrete_action_dims = list(discrete_dims)
    full.save(dest, dtype=torch.float16 if fp16 else torch.float32)
    half = DiffusionPolicy.load(dest)
    rb = ReplayBuffer.open(recipe["data"]["path"])
    ds = WindowDataset(rb, obs_keys=list(full.cfg.obs_dims), image_keys=full.cfg.image_keys,
                       n_obs_steps=full.n_obs_steps, horizon=full.horizon, n_action_steps=full.n_action_steps)
    idx = np.linspace(0, len(ds) - 1, check_windows).astype(int)
    obs = {k: v.numpy() for k, v in ds.get_batch(idx)["obs"].items()}
    full.generator.manual_seed(0)
    half.generator.manual_seed(0)
    diff = float(np.abs(full.predict_batch(obs) - half.predict_batch(obs)).max())
    recipe["shipped"] = {"dtype": "float16" if fp16 else "float32", "max_abs_action_diff_vs_fp32": diff,
                         "windows_checked": check_windows,
                         "size_bytes": (dest / checkpoint.WEIGHTS).stat().st_size}
    (dest / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    return {**recipe["shipped"], "path": str(dest)}
