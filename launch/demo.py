"""``dpctl demo``: the main job, end to end as far as the project goes today.

Now: collect Lift demonstrations with the scripted expert, reopen the store, cut it into
training windows and fit the normalizer. (Training and evaluation join when the policy
core lands.)
"""
from __future__ import annotations

from pathlib import Path

from data import ReplayBuffer
from data.dataset import WindowDataset
from launch.collect import collect
from policy.normalizer import Normalizer

OBS_KEYS = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"]


def demo(out: Path, episodes: int = 20, progress: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    rep = collect("lift", episodes, out / "lift.zarr", progress=progress)
    print(f"[1/2] collected: {rep.episodes} Lift episodes in {rep.out}; expert success "
          f"{rep.successes}/{rep.attempts} this run; {rep.steps_per_s:.0f} steps/s")
    rb = ReplayBuffer.open(out / "lift.zarr")
    ds = WindowDataset(rb, obs_keys=OBS_KEYS, n_obs_steps=2, horizon=16, n_action_steps=8)
    norm = Normalizer.from_stats(ds.stats())
    sample = ds[len(ds) // 2]
    a_n = norm.normalize("action", sample["action"])
    print(f"[2/2] dataset: {rb.n_episodes} episodes, {rb.n_steps} steps, lengths "
          f"{rb.episode_lengths.min()}-{rb.episode_lengths.max()}; {len(ds)} training windows "
          f"(To=2, T=16, Ta=8); normalized action range [{a_n.min():.2f}, {a_n.max():.2f}]")
    return {"collect": rep.as_dict(), "episodes": rb.n_episodes, "steps": rb.n_steps, "windows": len(ds)}
