"""Demonstrations from scripted experts in real simulators into zarr stores (``dpctrl collect``,
and the stores ``dpctrl train``, ``plan`` and ``drive`` collect on first use).

Resumable: the store records which env (and image setting) it holds; re-running with the
same ``--out`` appends until it holds ``--episodes`` episodes, continuing after the last
seed it already tried. Failed episodes are counted, not stored.

``recoveries=True`` (Lift, Stack and Can: ``envs.recovery_tasks()``) stores recovery episodes instead, in a store of their own:
the expert misses its first grasp on purpose and regrasps (envs/experts.py, Recoveries);
only the steps from the miss on are kept, and only episodes that did regrasp and lift count.
"""
from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
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


def recovery_part(ep: Episode, expert: dict) -> Episode:
    """The steps of a missing expert's episode from its miss on; unsuccessful (not stored)
    when it did not regrasp (the off-centre grasp caught the cube after all). ``expert``: its
    ``regrasps`` and ``recovery_start`` after the episode."""
    if not expert["regrasps"] or expert["recovery_start"] is None:
        return replace(ep, success=False)
    steps = {k: v[expert["recovery_start"]:] for k, v in ep.steps.items()}
    return replace(ep, steps=steps, length=len(steps["action"]))


def local_episodes(env, expert, first_seed: int) -> Iterator[tuple[Episode, dict]]:
    """The expert's episodes of seeds ``first_seed, first_seed + 1, ...`` in this process
    (what ``envs.distributed.expert_episodes`` yields from Ray workers)."""
    for seed in itertools.count(first_seed):
        ep = expert_episode(env, expert, seed)
        yield ep, {k: getattr(expert, k, None) for k in ("regrasps", "recovery_start")}


def collect(env_name: str, n_episodes: int, out: str | Path, images: bool = False, seed: int = 0,
            max_attempts: int | None = None, progress: bool = True,
            cameras: tuple[str, ...] = envs.DEFAULT_CAMERAS, recoveries: bool = False,
            workers: int = 1, worker_cpus: float = 1, ray_address: str | None = None) -> CollectReport:
    """Store ``n_episodes`` successful expert episodes in ``out`` (resumes a partial store);
    with ``images``, one ``<camera>_image`` key per camera in ``cameras`` (robosuite); with
    ``recoveries``, missed-and-regrasped episodes from the miss on (module docstring).
    ``workers > 1``: the experts run on Ray workers (envs/distributed.py); this process stays the
    store's only writer and appends in seed order, so the store is the one a single process
    writes, and a kill loses no episode already added."""
    if n_episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {n_episodes}")
    envs.check_recoveries(env_name, int(recoveries))
    out = Path(out)
    if env_name.startswith("metaworld:") and tuple(cameras) != envs.DEFAULT_CAMERAS:
        raise ValueError("--cameras is for robosuite tasks; MetaWorld stores its corner camera")
    env = envs.make(env_name, images=images, cameras=tuple(cameras))  # validates before anything is written
    expert = envs.expert(env_name, miss=True) if recoveries else envs.expert(env_name)
    attrs = {"env": env_name, "images": bool(images), "recoveries": bool(recoveries)}
    if images and not env_name.startswith("metaworld:"):
        attrs["cameras"] = list(cameras)
    pool = None
    try:
        rb = open_store(out, attrs)
        next_seed = seed
        if rb.n_episodes:
            next_seed = max(seed, int(rb.meta_column("seed").max()) + 1, int(rb.attrs.get("next_seed", 0)))
        if workers > 1 and rb.n_episodes < n_episodes:
            from dpctrl.envs.distributed import WorkerPool, expert_episodes
            pool = WorkerPool(workers, worker_cpus, address=ray_address)
            source = expert_episodes(pool, env_name, next_seed, images, tuple(cameras) if images else (), recoveries)
        else:
            source = local_episodes(env, expert, next_seed)
        max_attempts = max_attempts or 3 * n_episodes + 10
        start, added, attempts, successes, steps = time.perf_counter(), 0, 0, 0, 0
        with tqdm(total=n_episodes, initial=rb.n_episodes, desc=f"collect {env_name}", unit="ep",
                  disable=not progress) as bar:
            while rb.n_episodes < n_episodes:
                if attempts >= max_attempts:
                    raise RuntimeError(f"expert succeeded {successes}/{attempts} times; gave up before "
                                       f"reaching {n_episodes} episodes (max_attempts={max_attempts})")
                ep, state = next(source)
                attempts += 1
                next_seed += 1
                if recoveries:
                    ep = recovery_part(ep, state)
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
        if pool is not None:
            pool.close()
    return CollectReport(env_name, str(out), rb.n_episodes, added, attempts, successes, steps,
                         time.perf_counter() - start)


def recovery_path(data_path: Path) -> Path:
    """The store of recovery episodes (``dpctrl collect --recoveries``) beside a demo store."""
    return data_path.with_name(data_path.stem + "_recoveries.zarr")


def store_path(task: str) -> Path:
    """A MetaWorld task's demonstration store: runs/data/metaworld_<task>.zarr (the folder from
    ``DPCTRL_DATA_DIR`` if set), shared by PAD's runs and the DP-T baseline's."""
    return Path(os.environ.get("DPCTRL_DATA_DIR", "runs/data")) / f"metaworld_{task}.zarr"


def demo_store(task: str, demos: int, progress: bool = True) -> ReplayBuffer:
    """A MetaWorld task's store with at least ``demos`` episodes (64x64 corner-camera frames),
    collected on first use."""
    path = store_path(task)
    rb = ReplayBuffer.open(path) if path.exists() else None
    if rb is None or rb.n_episodes < demos:
        collect(f"metaworld:{task}", demos, path, images=True, progress=progress)
    return ReplayBuffer.open(path)


MAZE_EPISODE_STEPS = 10_000


def collect_maze(maze: str, steps: int, out: str | Path, progress: bool = True) -> dict:
    """PointMaze: the BFS + PD expert with goal resampling (D4RL maze2d style), ``steps``
    control steps in store episodes of 10 000 (resumable)."""
    from dpctrl.envs.maze import MazeTask, maze_name, record_expert
    maze = maze_name(maze)
    if steps < MAZE_EPISODE_STEPS:
        raise ValueError(f"--steps must be >= {MAZE_EPISODE_STEPS}")
    out = Path(out)
    task = MazeTask(maze)
    rb = open_store(out, {"env": f"maze:{maze}", "images": False})
    n_eps = steps // MAZE_EPISODE_STEPS
    t0, added, goals = time.perf_counter(), 0, 0
    for i in tqdm(range(rb.n_episodes, n_eps), desc=f"collect maze:{maze}", unit="ep", disable=not progress,
                  initial=rb.n_episodes, total=n_eps):
        d = record_expert(task, seed=i, steps=MAZE_EPISODE_STEPS)
        goals += d.pop("goals_reached")
        rb.add_episode(d, meta={"seed": i})
        added += 1
    secs = time.perf_counter() - t0
    return {"maze": maze, "out": str(out), "episodes": rb.n_episodes, "steps": rb.n_steps,
            "added_steps": added * MAZE_EPISODE_STEPS, "goals_reached": goals, "seconds": secs,
            "steps_per_s": added * MAZE_EPISODE_STEPS / secs if added else None}


def collect_drive(scenario: str, episodes: int, out: str | Path, progress: bool = True) -> dict:
    """highway-env: IDM/MOBIL expert episodes with ``future`` waypoint targets (resumable;
    crashed expert episodes are counted, not stored)."""
    from dpctrl.envs.highway import record_expert
    rb = open_store(Path(out), {"env": f"highway:{scenario}", "images": False})
    tried = [int(s) for s in rb.attrs.get("tried_seeds", [])]
    seed, crashed, t0 = (max(tried) + 1 if tried else 0), 0, time.perf_counter()
    bar = tqdm(total=episodes, initial=rb.n_episodes, desc=f"collect {scenario}", disable=not progress)
    while rb.n_episodes < episodes:
        data, meta = record_expert(scenario, seed)
        tried.append(seed)
        if len(data["future"]):
            rb.add_episode(data, meta)
            bar.update(1)
        else:
            crashed += 1
        seed += 1
    rb.set_attrs({"tried_seeds": tried})
    bar.close()
    return {"out": str(out), "episodes": rb.n_episodes, "samples": rb.n_steps, "expert_crashes_this_call": crashed,
            "seconds": time.perf_counter() - t0}
