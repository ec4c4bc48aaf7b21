"""``dpctrl collect``: run a scripted expert and store its successful episodes.

Resumable: the store records which env (and image setting) it holds; re-running with the
same ``--out`` appends until it holds ``--episodes`` episodes, continuing after the last
seed it already tried. Failed episodes are counted, not stored.

``recoveries=True`` (Lift only) stores recovery episodes instead, in a store of their own:
the expert misses its first grasp on purpose and regrasps (envs/experts.py, Recoveries);
only the steps from the miss on are kept, and only episodes that did regrasp and lift count.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm import tqdm

from dpctrl import envs
from dpctrl.data import ReplayBuffer
from dpctrl.envs.rollout import Episode, expert_episode


@dataclass
class CollectReport:
    env: str
    out: str
    episodes: int  # stored in the file now
    added: int
    attempts: int  # expert runs in this call
    successes: int
    steps_added: int
    seconds: float

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else float("nan")

    @property
    def steps_per_s(self) -> float:
        return self.steps_added / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "success_rate": self.success_rate, "steps_per_s": self.steps_per_s}


def open_store(out: Path, attrs: dict) -> ReplayBuffer:
    """Open (or create) the store, refusing one that holds another env's episodes."""
    rb = ReplayBuffer.open_or_create(out)
    stored = dict(rb.attrs)
    if stored.get("images") and "cameras" not in stored:  # image stores from before cameras were recorded
        stored["cameras"] = list(envs.DEFAULT_CAMERAS)
    stored.setdefault("recoveries", False)  # stores from before recovery episodes existed
    if stored.get("env") is not None and {k: stored.get(k) for k in attrs} != attrs:
        raise ValueError(f"{out} holds {({k: stored.get(k) for k in attrs})}, not {attrs}; use another --out")
    collector = ("scripted expert, first grasp missed on purpose; stored from the miss on"
                 if attrs.get("recoveries") else "scripted expert")
    rb.set_attrs({**attrs, "collector": collector})
    return rb


def recovery_part(ep: Episode, expert) -> Episode:
    """The steps of a missing expert's episode from its miss on; unsuccessful (not stored)
    when it did not regrasp (the off-centre grasp caught the cube after all)."""
    if not expert.regrasps or expert.recovery_start is None:
        return replace(ep, success=False)
    steps = {k: v[expert.recovery_start:] for k, v in ep.steps.items()}
    return replace(ep, steps=steps, length=len(steps["action"]))


def collect(env_name: str, n_episodes: int, out: str | Path, images: bool = False, seed: int = 0,
            max_attempts: int | None = None, progress: bool = True,
            cameras: tuple[str, ...] = envs.DEFAULT_CAMERAS, recoveries: bool = False) -> CollectReport:
    """Store ``n_episodes`` successful expert episodes in ``out`` (resumes a partial store);
    with ``images``, one ``<camera>_image`` key per camera in ``cameras`` (robosuite); with
    ``recoveries``, missed-and-regrasped Lift episodes from the miss on (module docstring)."""
    if n_episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {n_episodes}")
    if recoveries and env_name not in ("lift", "robosuite:lift"):
        raise ValueError(f"recovery episodes exist for lift only (its expert can miss and regrasp), not {env_name!r}")
    out = Path(out)
    if env_name.startswith("metaworld:") and tuple(cameras) != envs.DEFAULT_CAMERAS:
        raise ValueError("--cameras is for robosuite tasks; MetaWorld stores its corner camera")
    env = envs.make(env_name, images=images, cameras=tuple(cameras))  # validates before anything is written
    expert = envs.expert(env_name, miss=True) if recoveries else envs.expert(env_name)
    attrs = {"env": env_name, "images": bool(images), "recoveries": bool(recoveries)}
    if images and not env_name.startswith("metaworld:"):
        attrs["cameras"] = list(cameras)
    try:
        rb = open_store(out, attrs)
        next_seed = seed
        if rb.n_episodes:
            next_seed = max(seed, int(rb.meta_column("seed").max()) + 1, int(rb.attrs.get("next_seed", 0)))
        max_attempts = max_attempts or 3 * n_episodes + 10
        start, added, attempts, successes, steps = time.perf_counter(), 0, 0, 0, 0
        with tqdm(total=n_episodes, initial=rb.n_episodes, desc=f"collect {env_name}", unit="ep",
                  disable=not progress) as bar:
            while rb.n_episodes < n_episodes:
                if attempts >= max_attempts:
                    raise RuntimeError(f"expert succeeded {successes}/{attempts} times; gave up before "
                                       f"reaching {n_episodes} episodes (max_attempts={max_attempts})")
                ep = expert_episode(env, expert, next_seed)
                attempts += 1
                next_seed += 1
                if recoveries:
                    ep = recovery_part(ep, expert)
                if ep.success:
                    successes += 1
                    rb.add_episode(ep.steps, meta={"seed": ep.seed, "success": True, "length": ep.length})
                    added += 1
                    steps += ep.length
                rb.set_attrs({"next_seed": next_seed})
                bar.set_postfix(success=f"{successes}/{attempts}", refresh=False)
                bar.update(int(ep.success))
    finally:
        env.close()
    return CollectReport(env_name, str(out), rb.n_episodes, added, attempts, successes, steps,
                         time.perf_counter() - start)
