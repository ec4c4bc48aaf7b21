"""PAD on MetaWorld: demonstrations, training, evaluation and the frame-prediction report.

    dpctrl train --task metaworld:reach --policy pad --steps N --out DIR [--no-image-loss]
    dpctrl eval --checkpoint DIR --env metaworld:reach --episodes 50 --json R.json
    dpctrl pad frames --checkpoint DIR --task reach --json R.json   # PSNR vs copy-last-frame

Demonstrations: MetaWorld's scripted policies, ``demos`` successful episodes per task with
64x64 corner-camera frames, in runs/data/metaworld_<task>.zarr (collected on first use, as
``dpctrl collect --env metaworld:<task> --images``). Held-out episodes for the frame report
are fresh expert episodes on seeds the demonstrations never used (from 100 000).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

HELD_OUT_SEED = 100_000


def store_path(task: str) -> Path:
    """runs/data/metaworld_<task>.zarr (the folder from ``DPCTRL_DATA_DIR`` if set)."""
    return Path(os.environ.get("DPCTRL_DATA_DIR", "runs/data")) / f"metaworld_{task}.zarr"


def demo_store(task: str, demos: int, progress: bool = True):
    from dpctrl.data import ReplayBuffer
    from dpctrl.launch.collect import collect
    path = store_path(task)
    rb = ReplayBuffer.open(path) if path.exists() else None
    if rb is None or rb.n_episodes < demos:
        collect(f"metaworld:{task}", demos, path, images=True, progress=progress)
    return ReplayBuffer.open(path)


def train_pad(tasks: list[str], steps: int, out: str | Path, demos: int = 50, image_loss: bool = True,
              batch_size: int = 64, lr: float = 3e-4, seed: int = 0, width: int = 96, depth: int = 4,
              state_view: str = "all", progress: bool = True) -> dict:
    """``state_view``: which state columns the network sees (envs.metaworld_tasks.STATE_VIEWS;
    "proprio+goal" withholds the objects' poses, so objects are known only from the frames)."""
    from dpctrl.data.samples import FrameActionSamples
    from dpctrl.envs.metaworld_tasks import STATE_VIEWS
    from dpctrl.policy.pad import PadConfig, PadPolicy
    from dpctrl.policy.train import train_config_model
    if state_view not in STATE_VIEWS:
        raise ValueError(f"unknown state view {state_view!r}; known: {sorted(STATE_VIEWS)}")
    stores = [demo_store(t, demos, progress) for t in tasks]
    cfg = PadConfig(tasks=list(tasks), width=width, depth=depth, image_loss_weight=1.0 if image_loss else 0.0,
                    lambda_start=0.1, lambda_end=1.0, lambda_steps=max(1, steps // 2),
                    state_index=STATE_VIEWS[state_view])
    ds = FrameActionSamples(stores, cfg.image_key, cfg.horizon, cfg.k_future, cfg.frame_stride,
                            episodes=[range(demos)] * len(stores))
    import torch
    torch.manual_seed(seed)
    model = PadPolicy(cfg, seed=seed)
    model.set_stats(ds.state, ds.action)
    import sys
    command = "dpctrl " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("dpctrl") else None
    recipe = {"command": command, "recipe": {"tasks": list(tasks), "demos": demos, "steps": steps, "batch_size": batch_size, "lr": lr,
                         "image_loss": image_loss, "state_view": state_view, "data": [str(store_path(t)) for t in tasks]}}
    t0 = time.perf_counter()
    rec = train_config_model(model, ds, out, recipe, steps, batch_size, lr, seed=seed, progress=progress)
    rec["train_seconds"] = time.perf_counter() - t0
    ran = steps - (rec.get("resumed_from") or 0)  # a resumed run trains only the remaining steps
    rec["ms_per_batch"] = rec["train_seconds"] / max(1, ran) * 1000
    rec["params"] = sum(p.numel() for p in model.parameters())
    return rec


def held_out_episodes(task: str, n: int, seed_start: int = HELD_OUT_SEED) -> list:
    from dpctrl import envs
    from dpctrl.envs.rollout import expert_episode
    env, expert = envs.make(f"metaworld:{task}", images=True), envs.expert(f"metaworld:{task}")
    try:
        return [expert_episode(env, expert, s) for s in range(seed_start, seed_start + n)]
    finally:
        env.close()


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of uint8 images (..., S, S, 3)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(*a.shape[:-3], -1).mean(-1)
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


def frame_report(policy, task: str, episodes: int = 10, png: str | Path | None = None) -> dict:
    """Predicted future frame vs the real one, and the copy-last-frame baseline, on held-out
    expert episodes (every step that has a real frame ``frame_stride`` steps later), all at
    the model's frame size."""
    policy.set_task(task)
    k, stride = policy.cfg.k_future, policy.cfg.frame_stride
    pred_db, copy_db, shown = [], [], []
    for ep in held_out_episodes(task, episodes):
        img, state = ep.steps[policy.cfg.image_key], ep.steps["state"]
        n = len(img) - k * stride
        if n <= 0:
            continue
        pred = policy.predict_frames(img[:n], state[:n])[:, 0]  # the first future frame, at the model size
        cur, real = policy.pooled(img[:n]), policy.pooled(img[stride: stride + n])
        pred_db.append(psnr(pred, real))
        copy_db.append(psnr(cur, real))
        if len(shown) < 4:
            i = n // 2
            shown.append(np.concatenate([cur[i], real[i], pred[i]], axis=1))
    pred_db, copy_db = np.concatenate(pred_db), np.concatenate(copy_db)
    rep = {"task": task, "episodes": episodes, "frames": int(len(pred_db)), "stride": stride,
           "psnr_pred_db": float(pred_db.mean()), "psnr_copy_last_db": float(copy_db.mean()),
           "gain_db": float(pred_db.mean() - copy_db.mean())}
    if png is not None and shown:
        from PIL import Image
        grid = np.concatenate(shown, axis=0)  # rows: episodes; columns: current, real future, predicted
        Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(png)
        rep["png"] = str(png)
    return rep


def state_view_of(cfg: dict) -> str:
    """The name of a PAD config's state view (envs.metaworld_tasks.STATE_VIEWS)."""
    from dpctrl.envs.metaworld_tasks import STATE_VIEWS
    index = cfg.get("state_index")
    return next((k for k, v in STATE_VIEWS.items() if v == index), f"columns {index}")


def _pooled(acc: dict | None, r: dict, name: str) -> dict:
    """Several evals of one checkpoint on one task (other seed ranges) pool into one row:
    success over all their episodes; the chunk latency is the first report's."""
    seeds = list(r.get("seeds") or [])
    new = {"success_rate": r["success_rate"], "episodes": r["episodes"], "seeds": seeds,
           "chunk_latency_ms": r["chunk_latency_ms"], "commands": [r["command"]] if r.get("command") else []}
    if acc is None:
        return new
    if set(acc["seeds"]) & set(seeds):
        raise ValueError(f"{name} evaluates seeds of {r['checkpoint']} on {r['env']} that another report already "
                         "counts: pool only disjoint seed ranges")
    n = acc["episodes"] + r["episodes"]
    return {**acc, "success_rate": (acc["success_rate"] * acc["episodes"] + r["success_rate"] * r["episodes"]) / n,
            "episodes": n, "seeds": acc["seeds"] + seeds, "commands": acc["commands"] + new["commands"]}


def pad_table(files: list[str]) -> str:
    """README table from `dpctrl eval` reports of PAD checkpoints (and of the core's DP-T image
    policy on MetaWorld, the baseline) and `dpctrl pad frames` reports: one row per (task,
    checkpoint); evals of a row on disjoint seed ranges pool."""
    from dpctrl.launch.results import machine, markdown_table
    rows: dict[tuple, dict] = {}
    for f in files:
        r = json.loads(Path(f).read_text())
        if "psnr_pred_db" in r:
            key = (r["task"], r["checkpoint"])
            rows.setdefault(key, {}).update(frames=r, tasks=r["tasks"], w=r["image_loss_weight"],
                                            view=r.get("state_view", "all"))
        elif r.get("env", "").startswith("metaworld:") and ("image_loss_weight" in r.get("config", {})
                                                            or r.get("config", {}).get("image_keys")):
            cfg, key = r["config"], (r["env"].split(":", 1)[1], r["checkpoint"])
            pad = "image_loss_weight" in cfg  # else the core's DP-T image policy: one task, full state
            row = rows.setdefault(key, {})
            row.update(eval=_pooled(row.get("eval"), r, f), tasks=cfg["tasks"] if pad else [key[0]],
                       w=cfg["image_loss_weight"] if pad else None, view=state_view_of(cfg) if pad else "all")
        else:
            raise ValueError(f"{f} is neither a PAD or DP-T `dpctrl eval` report on MetaWorld nor a `dpctrl pad frames` "
                             "report")
    out = []
    for (task, ck), d in sorted(rows.items()):
        ev, fr = d.get("eval"), d.get("frames")
        method = ("DP-T (images)" if d["w"] is None else "PAD" if d["w"] > 0 else "w/o image") + (
            f" (multi-task: {'+'.join(d['tasks'])})" if len(d["tasks"]) > 1 else "") + (
            f", state: {d['view']}" if d.get("view", "all") != "all" else "")
        commands = (ev["commands"] if ev else []) + ([fr["command"]] if fr and fr.get("command") else [])
        out.append([task, method, f"{ev['success_rate']:.3f}" if ev else "-", ev["episodes"] if ev else "-",
                    f"{fr['psnr_pred_db']:.2f} / {fr['psnr_copy_last_db']:.2f}" if fr else "-",
                    f"{ev['chunk_latency_ms']['p50']:.0f}" if ev else "-", Path(ck).parent.name,
                    "<br>".join(f"`{c}`" for c in commands)])
    means = []  # one line per multi-task run: its success averaged over the tasks it was evaluated on
    for ck in sorted({ck for _, ck in rows}):
        evs = {task: d["eval"] for (task, c), d in sorted(rows.items()) if c == ck and d.get("eval")}
        if len(evs) > 1:
            rate = sum(e["success_rate"] for e in evs.values()) / len(evs)
            means.append(f"- `{Path(ck).parent.name}`: mean success {rate:.3f} over {', '.join(evs)} "
                         f"({'/'.join(str(e['episodes']) for e in evs.values())} episodes)")
    return (f"Machine: {machine()}; eval seeds from 100000, frame PSNR on held-out expert episodes (seeds from "
            f"100000; demonstrations use seeds from 0).\n\n" + markdown_table(
                ["task", "method", "success", "episodes", "next-frame PSNR pred / copy-last (dB)",
                 "chunk latency p50 (ms)", "run", "commands"], out) + ("\n\n" + "\n".join(means) if means else ""))


def ship(run_checkpoint: str | Path, name: str, command: str, reports: list[str], to: str | Path | None = None) -> Path:
    """Copy a trained PAD checkpoint to ``$DPCTRL_HOME/checkpoints/<name>/`` (or ``to/<name>``)
    with the command that trained it and the eval / frame reports measured on it (their
    commands included) in recipe.json."""
    import shutil

    from dpctrl.policy import checkpoint
    from dpctrl.policy.pad import PadPolicy
    src, dest = Path(run_checkpoint), checkpoint.ship_target(name, to)
    PadPolicy.load(src)  # refuse anything that is not a loadable PAD checkpoint
    measured = []
    for f in reports:
        r = json.loads(Path(f).read_text())
        if r.get("checkpoint") and Path(r["checkpoint"]).resolve() != src.resolve():
            raise ValueError(f"{f} measured {r['checkpoint']}, not {src}")
        keep = ("command", "env", "episodes", "success_rate", "chunk_latency_ms", "task", "frames", "psnr_pred_db",
                "psnr_copy_last_db", "gain_db")
        measured.append({k: r[k] for k in keep if k in r and k != "chunk_latency_ms"}
                        | ({"chunk_latency_p50_ms": r["chunk_latency_ms"]["p50"]} if "chunk_latency_ms" in r else {}))
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    cfg = json.loads((tmp / "config.json").read_text())
    cfg["command"] = command
    (tmp / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    (tmp / "recipe.json").write_text(json.dumps({"command": command, "measured": measured}, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    return dest


def cmd_pad(args) -> int:
    from dpctrl.policy.pad import PadPolicy
    import torch
    torch.set_num_threads(args.threads)
    if args.what == "ship":
        if not (args.name and args.command):
            raise ValueError("pad ship needs --name and --command (the command that trained the checkpoint)")
        print(f"shipped {args.checkpoint} as {args.name!r} in {ship(args.checkpoint, args.name, args.command, args.reports, args.to)}")
        return 0
    policy = PadPolicy.load(args.checkpoint)
    rep = frame_report(policy, args.task, args.episodes, png=args.png)
    rep["checkpoint"] = str(args.checkpoint)
    rep["image_loss_weight"] = policy.cfg.image_loss_weight
    rep["tasks"] = list(policy.cfg.tasks)
    rep["state_view"] = state_view_of(policy.cfg.to_dict())
    rep["command"] = (f"dpctrl pad frames --checkpoint {args.checkpoint} --task {args.task} --episodes {args.episodes}"
                      + (f" --png {args.png}" if args.png else ""))
    print(json.dumps(rep, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rep, indent=1) + "\n")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("pad", help="PAD on MetaWorld: `frames` (predicted vs real future frames, PSNR), "
                                    "`ship` (copy a checkpoint into $DPCTRL_HOME/checkpoints with its reports)")
    p.add_argument("what", choices=["frames", "ship"])
    p.add_argument("--name", help="ship: the checkpoint's name (then `--checkpoint NAME` anywhere)")
    p.add_argument("--to", help="ship: a directory to write <name>/ into (default: $DPCTRL_HOME/checkpoints)")
    p.add_argument("--command", help="ship: the command that trained the checkpoint")
    p.add_argument("--reports", nargs="*", default=[], help="ship: eval / frames JSON reports of this checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--task", default="reach")
    p.add_argument("--episodes", type=int, default=10, help="held-out expert episodes")
    p.add_argument("--png", help="write current | real future | predicted frames here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    p.set_defaults(func=cmd_pad)
