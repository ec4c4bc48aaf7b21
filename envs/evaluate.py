"""The lockstep evaluator: closed-loop episodes of a chunk policy over seeded envs (``dpctrl eval``).

Episodes run in lockstep groups of ``batch`` envs so one network pass serves the whole
group (the policy sees (B, To, ...) observations); each env executes
``actions[To-1 : To-1+Ta]`` of its chunk, then replans. Per-chunk latency is measured
separately at batch 1 on observation windows recorded during the rollouts, since that is
what a single robot sees. Results are JSON-ready dicts.
"""
from __future__ import annotations

import hashlib
import inspect
import time
from collections import deque
from importlib.metadata import version

import numpy as np
from tqdm import tqdm

from dpctrl import envs
from dpctrl.policy.chunking import (COMMITTED, OVERLAPS, ActionQueue, Prefix, boundary_jumps, check_delay,
                                    mean_squared_jerk, smoothness)
from dpctrl.policy.interface import ChunkPolicy


def _window(history: deque) -> dict[str, np.ndarray]:
    return {k: np.stack([h[k] for h in history]) for k in history[0]}


def rollout_group(policy: ChunkPolicy, env_list: list, seeds: list[int], record: list | None = None,
                  frames: list | None = None, frame_key: str = "agentview_image",
                  action_steps: int | None = None, nfe: list | None = None, delay: int = 0,
                  overlap: str = "replace", continuous: list[int] | None = None,
                  trace: list | None = None) -> list[dict]:
    """Run one episode per env in lockstep, in simulated time (one control step per env step);
    returns per-episode dicts. ``record`` collects batch-1 observation windows (for latency
    timing), ``frames`` the first env's images, ``nfe`` the network calls of every chunk,
    ``trace`` the first env's ``(action, observation after it)`` of every step.

    Every ``action_steps`` steps (S, default the policy's Ta) a new chunk is requested from the
    newest observations; it arrives ``delay`` steps later (D; 0: at once, the synchronous case).
    Until it arrives the previous chunk's actions run; the new chunk's actions for the steps
    already taken are dropped (policy/chunking.py's queue), and ``overlap`` says how it meets the
    old chunk: ``replace`` (it wins), ``blend`` (exponentially weighted over the overlap),
    ``inpaint`` (the old chunk's remaining actions replace the new chunk's prefix while it is
    sampled, with decaying weights), ``rtc`` (real-time chunking: they guide the sampling under
    a soft mask, 1 on the D steps that run before the chunk arrives), ``bid`` (bidirectional
    decoding: several candidates sampled, the one closest to them under that mask kept),
    ``prefix`` (a network trained on committed prefixes gets the D frozen ones clean).
    ``continuous``: the action dims the smoothness measures read (default all)."""
    To = policy.n_obs_steps
    S = action_steps or policy.n_action_steps
    check_delay(delay, S, policy.horizon, To)
    check_overlap(policy, overlap, delay)
    keys = list(policy.expected_obs())
    n = len(env_list)
    hist, done, result = [], [False] * n, []
    taken: list[list[np.ndarray]] = [[] for _ in range(n)]
    switches: list[list[int]] = [[] for _ in range(n)]
    queues = [ActionQueue(1.0, mode="blend" if overlap == "blend" else "replace") for _ in range(n)]
    for env, seed in zip(env_list, seeds):
        obs, _ = env.reset(seed=seed)
        hist.append(deque([obs] * To, maxlen=To))
        result.append({"seed": int(seed), "success": False, "length": 0, "max_reward": 0.0})
    seeded = "seeds" in inspect.signature(policy.reset).parameters  # a policy without noise may not take them
    policy.reset(seeds=[int(s) for s in seeds]) if seeded else policy.reset()  # per-episode noise
    def install(pending):
        """Push the pending chunk into the queues if it is due now; returns what is still pending."""
        if pending is None or step != pending[3]:
            return pending
        rows, chunks, t_obs, _ = pending
        for row, i in enumerate(rows):
            if not done[i]:
                queues[i].push(chunks[row], t_first=t_obs, now=step)
                if t_obs:
                    switches[i].append(len(taken[i]))
        return None

    pending = None  # (rows, chunks, step of the observation, step it arrives)
    step = 0
    while not all(done):
        active = [i for i in range(n) if not done[i]]
        pending = install(pending)  # a chunk due now (with D = S, before the next request)
        if step % S == 0:  # a request from the newest observations
            if step:
                policy.note_executed(S, active)  # S steps between this chunk's observation and the last one's
            windows = [_window(hist[i]) for i in active]
            batch = {k: np.stack([w[k] for w in windows]) for k in keys}
            if record is not None and len(record) < 64:
                record.append({k: v[0] for k, v in batch.items()})
            kw = {}
            if overlap in COMMITTED and step:
                kw["committed"] = Prefix(np.stack([queues[i].remaining(step) for i in active]), delay, S, overlap)
            chunks = policy.predict_batch(batch, ids=active, **kw)[:, To - 1:]
            if nfe is not None:
                nfe.append(policy.nfe_last)
            pending = (active, chunks, step, step + (delay if step else 0))  # the first chunk: waited for
        pending = install(pending)  # with D = 0 (and the first chunk): at once
        for i in active:
            a = queues[i].pop(step)
            if a is None:
                raise RuntimeError(f"no action due at step {step} (delay {delay}, execute {S}): the chunk ran out")
            obs, reward, terminated, truncated, info = env_list[i].step(a)
            taken[i].append(a)
            hist[i].append(obs)
            if frames is not None and i == 0:
                frames.append(obs[frame_key])
            if trace is not None and i == 0:
                trace.append((a, obs))
            r = result[i]
            r["length"] += 1
            r["max_reward"] = max(r["max_reward"], float(reward))
            r["success"] = r["success"] or bool(info.get("success", False))
            if terminated or truncated:
                done[i] = True
        step += 1
    for i, r in enumerate(result):
        acts = np.stack(taken[i])
        dims = list(range(acts.shape[1])) if continuous is None else list(continuous)
        r["boundary_jumps"] = boundary_jumps(acts, switches[i], dims)
        r["jerk"] = mean_squared_jerk(acts, dims)
        r["seeded"] = seeded
        r["actions_sha1"] = hashlib.sha1(np.ascontiguousarray(acts, np.float32).tobytes()).hexdigest()[:16]
    return result


def check_overlap(policy: ChunkPolicy, overlap: str, delay: int | None = None) -> None:
    """Refuse an unknown mode, or one the policy cannot do (at this ``delay``), before anything runs."""
    if overlap not in OVERLAPS:
        raise ValueError(f"unknown overlap mode {overlap!r}; known: {OVERLAPS}")
    offers = tuple(getattr(policy, "overlap_modes", ()))
    if overlap == "prefix" and overlap not in offers:
        raise ValueError("--overlap prefix needs a policy trained on committed prefixes (dpctrl train --prefix-max D); "
                         f"{type(policy).__name__} offers {list(offers) or 'no mode that shapes the chunk'}")
    if overlap in COMMITTED and overlap not in offers:
        raise ValueError(f"--overlap {overlap} shapes the chunk while it is sampled; {type(policy).__name__} "
                         f"offers {list(offers) or 'no such mode'}")
    if overlap in ("rtc", "prefix") and getattr(policy, "deploy", "eager") != "eager":
        raise ValueError(f"--overlap {overlap} runs the eager network (gradients, prefix flags), which the "
                         f"{policy.deploy!r} deploy path cannot; use the eager path (no --deploy)")
    trained = policy.describe().get("config", {}).get("prefix_max", 0) if overlap == "prefix" else None
    if trained is not None and delay is not None and delay > trained:
        raise ValueError(f"--overlap prefix: the policy was trained on prefixes of up to {trained} actions, "
                         f"--delay {delay} commits {delay}; train with --prefix-max {delay} or lower --delay")


def chunk_latency_ms(policy: ChunkPolicy, windows: list[dict], repeats: int = 1) -> dict:
    """p50/p90/p99 wall time of predict_chunk at batch 1 over recorded windows. With a warm
    start, the windows run as one episode (the first call is cold, then warm), and the
    first (cold) call is excluded, so the numbers are those of the steady state."""
    if not windows:
        raise ValueError("no observation windows to time")
    policy.reset()
    policy.predict_chunk(windows[0])  # warm-up (allocations, first-call overhead; cold start)
    times = []
    for _ in range(repeats):
        for w in windows:
            t0 = time.perf_counter()
            policy.predict_chunk(w)
            times.append((time.perf_counter() - t0) * 1000)
    policy.reset()
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "n": len(times),
            "samples": [round(t, 3) for t in times]}


def image_keys(policy: ChunkPolicy) -> list[str]:
    """The camera observations (``<camera>_image``, windows of shape (To, H, W, 3)) a policy reads."""
    return [k for k, shape in policy.expected_obs().items() if len(shape) == 4]


def record_video(policy: ChunkPolicy, env_name: str, seed: int, path, size: int = 256, fps: int = 20,
                 max_steps: int | None = None) -> dict:
    """One episode rendered at ``size`` px to an mp4 (OpenCV's mp4v encoder)."""
    import cv2
    keys = image_keys(policy)
    if keys:  # an image policy must see the images it was trained on
        size = policy.expected_obs()[keys[0]][1]
    env = envs.make(env_name, images=True, image_size=size, max_steps=max_steps, cameras=envs.cameras_of(keys))
    frames: list = []
    try:
        check_fits(policy, env, env_name)
        (result,) = rollout_group(policy, [env], [seed], frames=frames)
    finally:
        env.close()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    if not writer.isOpened():
        raise RuntimeError(f"could not open a video writer for {path}")
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return {**result, "video": str(path), "frames": len(frames)}


def check_fits(policy: ChunkPolicy, env, env_name: str) -> None:
    """Refuse an env whose observations are not the ones ``policy`` was trained on (a key it
    lacks, or another shape), naming the keys, before any episode runs."""
    space = getattr(env.observation_space, "spaces", {})
    want = {k: tuple(shape[1:]) for k, shape in policy.expected_obs().items()}
    have = {k: tuple(space[k].shape) for k in space}
    wrong = {k: v for k, v in want.items() if have.get(k) != v}
    if wrong:
        raise ValueError(f"the policy reads {', '.join(f'{k} {v}' for k, v in wrong.items())}, but {env_name!r} "
                         f"gives {', '.join(f'{k} {v}' for k, v in have.items())}: it was trained on another task "
                         f"or observation set")


def make_envs(policy: ChunkPolicy, env_name: str, n: int, max_steps: int | None = None) -> list:
    """``n`` envs of ``env_name`` that render the cameras ``policy`` reads (none for a low-dim one);
    refused (``check_fits``) when they do not give the policy's observations."""
    keys = image_keys(policy)
    env_list = [envs.make(env_name, images=bool(keys), max_steps=max_steps, cameras=envs.cameras_of(keys))]
    try:
        check_fits(policy, env_list[0], env_name)
    except ValueError:
        env_list[0].close()
        raise
    return env_list + [envs.make(env_name, images=bool(keys), max_steps=max_steps, cameras=envs.cameras_of(keys))
                       for _ in range(n - 1)]


def run_episodes(policy: ChunkPolicy, env_name: str, env_list: list, seeds: list[int],
                 action_steps: int | None = None, delay: int = 0, overlap: str = "replace",
                 on_group=None) -> tuple[list[dict], list[dict], list[int]]:
    """The episodes of ``seeds``, ``len(env_list)`` at a time in lockstep: (per-episode records,
    batch-1 observation windows for latency timing, network calls of every chunk).
    ``on_group(records)`` after each group (a progress bar)."""
    discrete = set(envs.discrete_action_dims(env_name))
    continuous = [d for d in range(env_list[0].action_space.shape[0]) if d not in discrete]
    per_episode, recorded, nfe = [], [], []
    for s in range(0, len(seeds), len(env_list)):
        group = seeds[s: s + len(env_list)]
        done = rollout_group(policy, env_list[: len(group)], group, recorded, action_steps=action_steps, nfe=nfe,
                             delay=delay, overlap=overlap, continuous=continuous)
        per_episode += done
        if on_group is not None:
            on_group(done)
    return per_episode, recorded, nfe


def evaluate(policy: ChunkPolicy, env_name: str, episodes: int, seed_start: int = 100_000,
             batch: int = 10, latency_windows: int = 20, max_steps: int | None = None,
             progress: bool = True, action_steps: int | None = None, delay: int = 0,
             overlap: str = "replace") -> dict:
    """Seeded closed-loop episodes of ``policy`` on ``env_name`` (seeds from ``seed_start``),
    ``batch`` envs in lockstep per network pass; ``delay``, ``action_steps`` and ``overlap`` as
    in ``rollout_group`` (delay 0: synchronous). A JSON-ready report: success, network calls,
    batch-1 chunk latency, smoothness (``boundary_jump`` at chunk switches, mean squared
    ``jerk``) and ``per_episode`` records. Each episode's noise is seeded by its seed, so a
    seed's result does not depend on ``batch``, ``episodes`` or what ran before it."""
    if episodes < 1:
        raise ValueError("episodes must be >= 1")
    check_delay(delay, action_steps or policy.n_action_steps, policy.horizon, policy.n_obs_steps)
    check_overlap(policy, overlap, delay)  # before any env is built
    if hasattr(policy, "train"):  # a torch module: no dropout while evaluating
        policy.eval()
    seeds = list(range(seed_start, seed_start + episodes))
    env_list = make_envs(policy, env_name, min(batch, episodes), max_steps)
    t0 = time.perf_counter()
    try:
        with tqdm(total=episodes, desc=f"eval {env_name}", unit="ep", disable=not progress) as bar:
            done: list = []

            def advance(group):
                done.extend(group)
                bar.update(len(group))
                bar.set_postfix(success=f"{np.mean([e['success'] for e in done]):.2f}")
            per_episode, recorded, nfe = run_episodes(policy, env_name, env_list, seeds, action_steps, delay,
                                                      overlap, on_group=advance)
    finally:
        for e in env_list:
            e.close()
    rollout_s = time.perf_counter() - t0
    return summarize(env_name, seeds, per_episode, nfe, policy.describe(),
                     chunk_latency_ms(policy, recorded[:latency_windows]), rollout_s,
                     action_steps or policy.n_action_steps, delay, overlap)


def summarize(env_name: str, seeds: list[int], per_episode: list[dict], nfe: list[int], info: dict,
              latency: dict, rollout_s: float, action_steps: int, delay: int, overlap: str) -> dict:
    """The evaluation report of finished episodes (``info``: the policy's ``describe()``)."""
    per_episode = sorted(per_episode, key=lambda e: e["seed"])
    return {
        "env": env_name,
        "episodes": len(seeds),
        "seeds": seeds,
        "success_rate": float(np.mean([e["success"] for e in per_episode])),
        "mean_max_reward": float(np.mean([e["max_reward"] for e in per_episode])),
        **{k: v for k, v in info.items() if k in ("sampler", "num_inference_steps", "deploy", "precision")},
        "nfe_per_chunk": int(min(nfe)),  # counted calls; with a warm start, the warm (steady-state) chunks
        "nfe_mean": float(np.mean(nfe)),  # including each episode's cold first chunk
        "warm_start": info["warm_start"],
        "cache": info["cache"],
        "action_steps": action_steps,
        "delay": delay,
        "overlap": overlap,
        "episode_seeds": all(e["seeded"] for e in per_episode),  # noise per episode (reset(seeds=...))
        **smoothness(per_episode),
        "chunk_latency_ms": latency,
        "rollout_seconds": rollout_s,
        "per_episode": [{**{k: e[k] for k in ("seed", "success", "length", "actions_sha1")},
                         "boundary_jump": float(np.mean(e["boundary_jumps"])) if e["boundary_jumps"] else None,
                         "jerk": e["jerk"] if np.isfinite(e["jerk"]) else None,
                         **({"worker": e["worker"]} if "worker" in e else {})} for e in per_episode],
        "config": info["config"],
        "version": version("dpctrl"),
    }


def same_per_seed(a: dict, b: dict) -> dict:
    """How far two evaluation reports agree seed by seed, on the seeds of ``a`` (all of which
    ``b`` must have): the count with equal success and with identical actions (digests)."""
    theirs = {e["seed"]: e for e in b["per_episode"]}
    missing = [e["seed"] for e in a["per_episode"] if e["seed"] not in theirs]
    if missing:
        raise ValueError(f"the other report lacks seeds {missing[:5]}{'...' if len(missing) > 5 else ''}")
    pairs = [(e, theirs[e["seed"]]) for e in a["per_episode"]]
    return {"seeds": len(pairs), "same_success": sum(bool(x["success"]) == bool(y["success"]) for x, y in pairs),
            "same_actions": sum(x.get("actions_sha1") is not None and x.get("actions_sha1") == y.get("actions_sha1")
                                for x, y in pairs)}
