"""Predicted future frames against the real ones (PAD, ``dpctrl pad frames``): PSNR of a
policy's first predicted frame and of the copy-last-frame baseline on held-out expert
episodes (fresh seeds the demonstrations never used), at the model's frame size."""
from __future__ import annotations

from pathlib import Path

import numpy as np

HELD_OUT_SEED = 100_000


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
