"""Why episodes fail: each failed seed of an evaluation is run again, alone, with its trace
recorded, and given one class (``dpctrl eval --classify-failures``).

An episode depends only on (checkpoint, inference variant, seed): the env is seeded by the
seed and so is the policy's noise, so a rerun at batch 1 repeats the evaluation's episode
(``reproduced``: its action digest equals the report's). What is read from the trace: the
object's height above where it came to rest (its world position, ``OBJECT_POSE``; the lowest
of its first ``SETTLE`` steps, as robosuite drops objects from about 1 cm), the gripper
command (action dim 6, > 0 closes), and the hand's motion.

Classes, the first that fits:
- ``never_closed``: the gripper was never commanded shut: the policy hovered or stalled
  before any grasp.
- ``missed_grasp``: it closed, but the object never rose ``RISE`` above its rest: the
  fingers closed beside it, on air or on its edge.
- ``dropped``: the object rose, then was back within ``RISE`` of its rest height at the end:
  it slipped out, or (can, square) it was let go short of its goal.
- ``held_short``: the object is still up at the time limit without success: held but
  not lifted high enough (lift), not over its goal (stack, can, square).

Per seed also: the highest and final rise (m), the number of times the gripper closed (a
regrasp closes twice), and ``stalled``: the hand moved under 1 cm over the last 40 steps.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from dpctrl.envs.evaluate import make_envs, rollout_group
from dpctrl.policy.interface import ChunkPolicy

RISE = 0.01  # m above the object's rest height that counts as lifted
SETTLE = 10  # steps in which a spawned object comes to rest
CLASSES = ("never_closed", "missed_grasp", "dropped", "held_short")
GRIPPER_DIM = 6


def object_height_index(env_name: str) -> int:
    """Where the object's world z is in ``obs["object"]`` (robosuite tasks only)."""
    from dpctrl.envs import ROBOSUITE_TASKS
    from dpctrl.envs.robosuite_tasks import OBJECT_POSE
    task = env_name.split(":", 1)[1] if env_name.startswith("robosuite:") else env_name
    if task not in ROBOSUITE_TASKS:
        raise ValueError(f"failure classes read an object's height: robosuite tasks {list(ROBOSUITE_TASKS)}, "
                         f"not {env_name!r}")
    return OBJECT_POSE[task] + 2


def classify(actions: np.ndarray, heights: np.ndarray, hand: np.ndarray) -> dict:
    """One failed episode's class and measures, from its gripper commands (L,), the object's
    heights (L + 1, the start first) and the hand's positions (L, 3)."""
    rise = (heights - heights[: SETTLE + 1].min())[SETTLE:]  # from rest on
    closing = actions > 0
    closes = int(closing[0]) + int(np.sum(closing[1:] & ~closing[:-1]))
    tail = hand[-40:]
    stalled = bool(np.linalg.norm(tail.max(axis=0) - tail.min(axis=0)) < 0.01)
    if not closing.any():
        cls = "never_closed"
    elif rise.max() < RISE:
        cls = "missed_grasp"
    elif rise[-1] < RISE:
        cls = "dropped"
    else:
        cls = "held_short"
    return {"class": cls, "max_rise_m": round(float(rise.max()), 4), "final_rise_m": round(float(rise[-1]), 4),
            "closes": closes, "stalled": stalled}


def classify_failures(policy: ChunkPolicy, env_name: str, report: dict, max_steps: int | None = None,
                      progress: bool = True) -> dict:
    """The failed seeds of an evaluation ``report`` of ``policy`` on ``env_name``, rerun and
    classified: ``{"counts": {class: n}, "per_seed": [...], "reproduced": k of n}``."""
    z = object_height_index(env_name)
    failed = [e for e in report["per_episode"] if not e["success"]]
    rows = []
    env_list = make_envs(policy, env_name, 1, max_steps)
    try:
        for ep in tqdm(failed, desc="classify failures", unit="ep", disable=not progress):
            start, _ = env_list[0].reset(seed=ep["seed"])
            trace: list = []
            (res,) = rollout_group(policy, env_list, [ep["seed"]], action_steps=report["action_steps"],
                                   delay=report["delay"], overlap=report["overlap"], trace=trace)
            actions = np.array([a[GRIPPER_DIM] for a, _ in trace])
            heights = np.array([start["object"][z]] + [o["object"][z] for _, o in trace])
            hand = np.stack([o["robot0_eef_pos"] for _, o in trace])
            rows.append({"seed": ep["seed"], **classify(actions, heights, hand), "length": res["length"],
                         "reproduced": (not res["success"]
                                        and res["actions_sha1"] == ep.get("actions_sha1", res["actions_sha1"]))})
    finally:
        env_list[0].close()
    counts = {c: sum(r["class"] == c for r in rows) for c in CLASSES}
    return {"counts": counts, "per_seed": rows, "reproduced": sum(r["reproduced"] for r in rows),
            "failed": len(rows), "episodes": report["episodes"]}


def failure_line(f: dict) -> str:
    """The one-line summary ``dpctrl eval --classify-failures`` prints."""
    return (f"failures: {f['failed']} of {f['episodes']} ({f['reproduced']} reproduced in a rerun): "
            + ", ".join(f"{k} {v}" for k, v in f["counts"].items()))
