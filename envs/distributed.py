"""The evaluator spread over Ray workers: each worker builds the policy once and runs groups of
seeds with the library's evaluator (envs/evaluate.py); the driver hands out the groups and keys
every result by its seed.

    report = evaluate_distributed(make_policy, "lift", episodes=200, workers=4)

``make_policy`` is a picklable callable (a module-level function or a ``functools.partial`` of
one) that builds the policy inside a worker. Because each episode's noise is seeded by its seed
and the network runs batch-invariant (policy/noise.py), a seed's actions and outcome are the same
on any worker, in any group, in any order: splitting changes nothing but the wall time.

Faults: a worker that dies (its process killed, its node gone) has the group it was running
handed to another one; results are keyed by seed, so no episode is lost or counted twice. When
no worker is left, a fresh one is started (``restarts`` times at most). Ray is an optional
dependency (``pip install 'dpctrl[ray]'``); without an ``address`` a local cluster starts on
demand and stops at the end.
"""
from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from tqdm import tqdm

RAY_EXTRA = "pip install 'dpctrl[ray]'"


def require_ray():
    try:
        import ray
    except ImportError as err:
        raise ImportError(f"more than one worker runs on Ray, which is not installed: {RAY_EXTRA}") from err
    return ray


@dataclass(frozen=True)
class Job:
    """One group of seeds of one evaluation cell (``cell`` names the policy it needs)."""
    cell: str
    make_policy: Callable
    env_name: str
    seeds: tuple[int, ...]
    options: dict = field(default_factory=dict)  # run_episodes' keywords, plus max_steps
    method: ClassVar[str] = "run"


@dataclass(frozen=True)
class ExpertJob:
    """One scripted-expert episode (``dpctrl collect``); ``miss``: the expert that misses its first grasp."""
    env_name: str
    seed: int
    images: bool = False
    cameras: tuple[str, ...] = ()
    miss: bool = False
    method: ClassVar[str] = "expert"

    @property
    def seeds(self) -> tuple[int, ...]:
        return (self.seed,)


class EpisodeWorker:
    """What runs in a Ray actor: the policy of the last cell it was given, and its envs."""

    def __init__(self, threads: int = 1):
        import torch
        torch.set_num_threads(threads)
        self.cell, self.policy, self.envs = None, None, {}

    def where(self) -> dict:
        """Process id, node and peak resident memory (MB) of this worker."""
        import resource

        import ray
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

    def _policy(self, job: Job):
        if job.cell != self.cell:
            self.policy, self.cell = None, None  # never two cells' policies at once
            self.policy = job.make_policy()
            if hasattr(self.policy, "train"):
                self.policy.eval()
            self.cell = job.cell
        return self.policy

    def run(self, job: Job) -> dict:
        from dpctrl.envs.evaluate import make_envs, run_episodes
        policy = self._policy(job)
        opts = dict(job.options)
        max_steps = opts.pop("max_steps", None)
        key = (job.env_name, max_steps, tuple(policy.expected_obs()))
        env_list = self.envs.setdefault(key, [])
        env_list += make_envs(policy, job.env_name, len(job.seeds) - len(env_list), max_steps)
        per_episode, windows, nfe = run_episodes(policy, job.env_name, env_list[: len(job.seeds)],
                                                 list(job.seeds), **opts)
        return {"episodes": per_episode, "windows": windows[:20], "nfe": nfe, "pid": os.getpid()}

    def expert(self, job: ExpertJob) -> dict:
        """The expert's episode of ``job.seed`` and what a recovery store needs of the expert."""
        from dpctrl import envs
        from dpctrl.envs.rollout import expert_episode
        key = (job.env_name, job.images, job.cameras, job.miss)
        if key not in self.envs:
            cams = {"cameras": job.cameras} if job.cameras else {}
            self.envs[key] = (envs.make(job.env_name, images=job.images, **cams),
                              envs.expert(job.env_name, miss=True) if job.miss else envs.expert(job.env_name))
        env, expert = self.envs[key]
        ep = expert_episode(env, expert, job.seed)
        return {"episode": ep, "expert": {k: getattr(expert, k, None) for k in ("regrasps", "recovery_start")}}

    def inspect(self, job: Job, windows: list[dict]) -> dict:
        """The cell's policy description and its batch-1 chunk latency over ``windows``."""
        from dpctrl.envs.evaluate import chunk_latency_ms
        policy = self._policy(job)
        return {"describe": policy.describe(), "latency": chunk_latency_ms(policy, windows)}


class WorkerPool:
    """``workers`` Ray actors of ``cpus`` CPUs (and ``gpus`` GPUs) each, on the cluster at
    ``address`` or on a local one started here (and stopped by ``close``)."""

    def __init__(self, workers: int, cpus: float = 1, gpus: float = 0, threads: int = 1,
                 address: str | None = None, restarts: int | None = None):
        ray = self.ray = require_ray()
        if workers < 1:
            raise ValueError("workers must be >= 1")
        t0 = time.perf_counter()
        self.owns_cluster = not ray.is_initialized() and address is None
        if not ray.is_initialized():
            kw = {"address": address} if address else {"num_cpus": max(os.cpu_count() or 1, int(np.ceil(workers * cpus)))}
            ray.init(include_dashboard=False, log_to_driver=False, **kw)
        self.start_s = time.perf_counter() - t0
        self.actor_cls = ray.remote(num_cpus=cpus, num_gpus=gpus)(EpisodeWorker)
        self.threads, self.restarts = threads, workers if restarts is None else restarts
        self.actors: dict[int, object] = {}
        self.lost: list[dict] = []  # {"worker", "error"} of every worker that died
        self.served: dict[int, int] = {}
        for _ in range(workers):
            self._spawn()

    def _spawn(self) -> None:
        wid = len(self.served)
        self.actors[wid] = self.actor_cls.remote(self.threads)
        self.served[wid] = 0

    def where(self) -> dict[int, dict]:
        """Process id and node of every live worker (a test kills one by these)."""
        ids = list(self.actors)
        return dict(zip(ids, self.ray.get([self.actors[i].where.remote() for i in ids])))

    def inspect(self, job: Job, windows: list[dict]) -> dict:
        return self.ray.get(next(iter(self.actors.values())).inspect.remote(job, windows))

    def map(self, jobs: Iterable) -> Iterator[tuple[Job, dict]]:
        """Each job's result as it finishes (``result["worker"]``: who ran it), one job in flight
        per worker, taken from ``jobs`` (any iterable, even endless) as workers free up; a job
        whose worker died is run again by another."""
        ray = self.ray
        source, queue, inflight = iter(jobs), deque(), {}
        while True:
            busy = {wid for wid, _ in inflight.values()}
            for wid in [w for w in self.actors if w not in busy]:
                job = queue.popleft() if queue else next(source, None)
                if job is not None:
                    inflight[getattr(self.actors[wid], job.method).remote(job)] = (wid, job)
            if not inflight and not queue:
                return
            if not inflight:
                raise RuntimeError("no worker left to run the remaining jobs")
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            wid, job = inflight.pop(ref)
            try:
                result = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as err:  # the worker or its
                # node is gone (with the result it held), not the job at fault
                self.lost.append({"worker": wid, "error": type(err).__name__})
                self.actors.pop(wid, None)
                queue.appendleft(job)
                if not self.actors:
                    if self.restarts <= 0:
                        raise RuntimeError(f"every worker died and no restart is left ({self.lost})") from err
                    self.restarts -= 1
                    self._spawn()
                continue
            self.served[wid] += len(job.seeds)
            yield job, {**result, "worker": wid}

    def close(self) -> None:
        for actor in self.actors.values():
            self.ray.kill(actor)
        self.actors.clear()
        if self.owns_cluster:
            self.ray.shutdown()


class LocalPool:
    """A ``WorkerPool`` of one worker in this process (no Ray): what ``workers=1`` runs."""

    def __init__(self, threads: int = 1):
        self.worker, self.lost, self.start_s = EpisodeWorker(threads), [], 0.0
        self.actors = {0: self.worker}

    def map(self, jobs: Iterable) -> Iterator[tuple[Job, dict]]:
        for job in jobs:
            yield job, {**getattr(self.worker, job.method)(job), "worker": 0}

    def inspect(self, job: Job, windows: list[dict]) -> dict:
        return self.worker.inspect(job, windows)

    def close(self) -> None:
        self.worker = None


def open_pool(workers: int, cpus: float = 1, gpus: float = 0, threads: int = 1, address: str | None = None):
    """``workers`` Ray workers, or one in this process when ``workers == 1`` and no ``address``."""
    if workers == 1 and address is None:
        return LocalPool(threads)
    return WorkerPool(workers, cpus, gpus, threads, address)


def seed_jobs(cell: str, make_policy: Callable, env_name: str, seeds: list[int], batch: int,
              options: dict) -> list[Job]:
    return [Job(cell, make_policy, env_name, tuple(seeds[i: i + batch]), options) for i in range(0, len(seeds), batch)]


def collect_cell(pool: WorkerPool, jobs: list[Job], bar: tqdm | None = None) -> dict:
    """Run one cell's jobs: {"episodes": records by seed, "windows", "nfe", "served"}."""
    by_seed, windows, nfe, served = {}, [], [], {}
    for job, res in pool.map(jobs):
        for e in res["episodes"]:
            if e["seed"] in by_seed:
                raise RuntimeError(f"seed {e['seed']} came back twice")
            by_seed[e["seed"]] = {**e, "worker": res["worker"]}
        windows += res["windows"]
        nfe += res["nfe"]
        served[res["worker"]] = served.get(res["worker"], 0) + len(res["episodes"])
        if bar is not None:
            bar.update(len(res["episodes"]))
            bar.set_postfix(success=f"{np.mean([e['success'] for e in by_seed.values()]):.2f}")
    return {"episodes": [by_seed[s] for s in sorted(by_seed)], "windows": windows, "nfe": nfe, "served": served}


def evaluate_distributed(make_policy: Callable, env_name: str, episodes: int, seed_start: int = 100_000,
                         workers: int = 2, batch: int = 10, latency_windows: int = 20,
                         max_steps: int | None = None, progress: bool = True, action_steps: int | None = None,
                         delay: int = 0, overlap: str = "replace", cpus: float = 1, gpus: float = 0,
                         threads: int = 1, address: str | None = None, pool: WorkerPool | None = None) -> dict:
    """``envs.evaluate.evaluate`` over ``workers`` Ray actors (or an open ``pool``): the same
    report, plus ``workers``, ``per_worker`` episode counts, ``workers_lost`` and the cluster's
    ``startup_seconds``."""
    from dpctrl.envs.evaluate import summarize
    if episodes < 1:
        raise ValueError("episodes must be >= 1")
    seeds = list(range(seed_start, seed_start + episodes))
    options = {"max_steps": max_steps, "action_steps": action_steps, "delay": delay, "overlap": overlap}
    jobs = seed_jobs("eval", make_policy, env_name, seeds, batch, options)
    own = pool is None
    pool = pool or open_pool(workers, cpus, gpus, threads, address)
    t0 = time.perf_counter()
    try:
        with tqdm(total=episodes, desc=f"eval {env_name} x{len(pool.actors)}", unit="ep", disable=not progress) as bar:
            done = collect_cell(pool, jobs, bar)
        rollout_s = time.perf_counter() - t0
        info = pool.inspect(jobs[0], done["windows"][:latency_windows])
        memory = ({str(w): round(v["max_rss_mb"]) for w, v in pool.where().items()}
                  if isinstance(pool, WorkerPool) else {})
    finally:
        if own:
            pool.close()
    S = action_steps or info["describe"]["config"].get("n_action_steps")
    report = summarize(env_name, seeds, done["episodes"], done["nfe"], info["describe"], info["latency"],
                       rollout_s, S, delay, overlap)
    return {**report, "workers": workers, "per_worker": {str(w): n for w, n in sorted(done["served"].items())},
            "workers_lost": pool.lost, "startup_seconds": pool.start_s, "worker_peak_memory_mb": memory}


def expert_episodes(pool: WorkerPool, env_name: str, first_seed: int, images: bool = False,
                    cameras: tuple[str, ...] = (), miss: bool = False) -> Iterator[tuple[object, dict]]:
    """The expert's episodes of seeds ``first_seed, first_seed + 1, ...`` run on the pool's
    workers and yielded in seed order (an episode waits for the seeds before it): (Episode,
    the expert's ``regrasps`` / ``recovery_start``). Endless; the caller stops it."""
    import itertools
    jobs = (ExpertJob(env_name, s, images, tuple(cameras), miss) for s in itertools.count(first_seed))
    done, want = {}, first_seed
    for job, res in pool.map(jobs):
        done[job.seed] = res
        while want in done:
            res = done.pop(want)
            yield res["episode"], res["expert"]
            want += 1


@dataclass(frozen=True)
class Cell:
    """One evaluation of a sweep: a name (its file in the output folder), the policy's factory,
    the ``run_episodes`` options, and ``settings``, what a finished cell must match to be kept."""
    name: str
    make_policy: Callable
    options: dict
    settings: dict


def sweep(cells: list[Cell], env_name: str, seeds: list[int], out, pool: WorkerPool, batch: int = 10,
          latency_windows: int = 20, progress: bool = True, log=print) -> dict[str, dict]:
    """Every cell evaluated on ``seeds`` through one pool, cell after cell (a worker rebuilds its
    policy only when its next group belongs to the next cell); each finished cell's report is
    written to ``out/<name>.json`` at once (atomically), and a rerun keeps the cells found
    there with the same settings. Returns the reports by cell name (``rollout_seconds``: from
    the previous cell's end, cells overlapping at their edges)."""
    import json
    from pathlib import Path

    from dpctrl.envs.evaluate import summarize
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reports, todo = {}, []
    for cell in cells:
        path = out / f"{cell.name}.json"
        if path.exists():
            kept = json.loads(path.read_text())
            if kept.get("settings") != cell.settings:
                raise ValueError(f"{path} was run with {kept.get('settings')}, not {cell.settings}: use another "
                                 "--out or remove it")
            reports[cell.name] = kept
            log(f"{cell.name}: kept from {path}")
        else:
            todo.append(cell)
    jobs = [job for cell in todo for job in seed_jobs(cell.name, cell.make_policy, env_name, seeds, batch,
                                                      cell.options)]
    by_cell = {cell.name: {"episodes": {}, "windows": [], "nfe": [], "served": {}} for cell in todo}
    cell_of, since = {cell.name: cell for cell in todo}, time.perf_counter()
    with tqdm(total=len(todo) * len(seeds), desc=f"sweep {env_name}", unit="ep",
              disable=not progress) as bar:
        for job, res in pool.map(jobs):
            acc = by_cell[job.cell]
            for e in res["episodes"]:
                if e["seed"] in acc["episodes"]:
                    raise RuntimeError(f"cell {job.cell}: seed {e['seed']} came back twice")
                acc["episodes"][e["seed"]] = {**e, "worker": res["worker"]}
            acc["windows"] += res["windows"]
            acc["nfe"] += res["nfe"]
            acc["served"][res["worker"]] = acc["served"].get(res["worker"], 0) + len(res["episodes"])
            bar.update(len(res["episodes"]))
            if len(acc["episodes"]) == len(seeds):  # the cell is complete
                cell = cell_of[job.cell]
                info = pool.inspect(job, acc["windows"][:latency_windows])
                opts = cell.options
                rep = summarize(env_name, seeds, [acc["episodes"][s] for s in sorted(acc["episodes"])], acc["nfe"],
                                info["describe"], info["latency"], time.perf_counter() - since,
                                opts.get("action_steps") or info["describe"]["config"].get("n_action_steps"),
                                opts.get("delay", 0), opts.get("overlap", "replace"))
                rep = {**rep, "cell": cell.name, "settings": cell.settings,
                       "per_worker": {str(w): n for w, n in sorted(acc["served"].items())}}
                tmp = out / f"{cell.name}.json.tmp"
                tmp.write_text(json.dumps(rep, indent=1))
                tmp.replace(out / f"{cell.name}.json")
                reports[cell.name], since = rep, time.perf_counter()
                log(f"{cell.name}: success {rep['success_rate']:.3f}, latency p50 {rep['chunk_latency_ms']['p50']:.1f} ms")
    return {cell.name: reports[cell.name] for cell in cells}
