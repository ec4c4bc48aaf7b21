"""Outputs of the shipped models on fixed observations and fixed noise, for
``test_pinned_outputs.py``: the reference file was written by ``python
tests/policy/pinned.py`` at the commit before the denoising engine was unified, and a
refactor must reproduce it to float tolerance.

Observations are drawn inside each normalizer's range from a fixed NumPy seed (no
simulator), and every model's generator is reseeded before each case.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).with_name("pinned_outputs.npz")
B = 2


def _lift_obs(policy, rng) -> dict:
    import torch
    obs = {}
    for k, (To, d) in policy.expected_obs().items():
        z = torch.as_tensor(rng.uniform(-0.9, 0.9, (B, To, d)), dtype=torch.float32)
        obs[k] = policy.normalizer.unnormalize(k, z).numpy()
    return obs


def lift_cases() -> dict[str, np.ndarray]:
    from dpctrl import load_policy
    from dpctrl.policy.accel.warmstart import WarmStartConfig
    out = {}
    policy = load_policy("lift")
    policy.eval()
    rng = np.random.default_rng(0)
    obs, obs2 = _lift_obs(policy, rng), _lift_obs(policy, rng)
    cal = json.loads((Path(policy_dir("lift")) / "rti.json").read_text())
    bac = json.loads((Path(policy_dir("lift")) / "cache_bac.json").read_text())

    def run(name, sampler, steps, warm=None, cache=None, committed=None):
        policy.set_sampler(sampler, steps)
        policy.set_warm_start(warm)
        policy.set_cache(cache)
        policy.generator.manual_seed(7)
        policy.reset()
        out[name] = policy.predict_batch(obs, committed=committed)
        out[name + ".nfe"] = np.array(policy.nfe_last)
        if warm is not None:
            policy.note_executed(policy.n_action_steps)
            out[name + ".warm"] = policy.predict_batch(obs2)
            out[name + ".warm.nfe"] = np.array(policy.nfe_last)
        policy.set_cache(None)
        policy.set_warm_start(None)

    rti = lambda: WarmStartConfig(start_t=cal["recommended_k"], noise=cal["noise"], tail=cal["tail"],  # noqa: E731
                                  clip_factor=1.0)
    fine = lambda: WarmStartConfig(start_t=2)  # noqa: E731
    run("lift.ddim10", "ddim", 10)
    run("lift.ddpm100", "ddpm", 100)
    run("lift.dpmpp10", "dpmpp", 10)
    run("lift.rti", "ddim", 10, warm=rti())
    run("lift.rti_fine_ddpm", "ddpm", 100, warm=fine())
    run("lift.bac", "ddpm", 100, cache=make_bac(policy, bac))
    run("lift.rti_bac", "ddpm", 100, warm=fine(), cache=make_bac(policy, bac))
    committed = policy.predict_batch(obs2)[0, :5]
    run("lift.guide", "ddim", 10, committed=committed)
    run("lift.guide_ddpm", "ddpm", 100, committed=committed)
    for deploy in ("torchscript", "static"):
        policy.set_deploy(deploy, batch=B)
        run(f"lift.ddim10.{deploy}", "ddim", 10)
        run(f"lift.rti.{deploy}", "ddim", 10, warm=rti())
        run(f"lift.guide_ddpm.{deploy}", "ddpm", 100, committed=committed)
        policy.set_deploy(None)
    return out


def policy_dir(name: str) -> Path:
    from dpctrl.policy import checkpoint
    return checkpoint.resolve(name)


def make_bac(policy, cal: dict):
    from dpctrl.policy.accel.cache import BlockCache, rederive
    steps = [policy.sampler.model_time(t) for t, _ in policy.sampler.steps(policy.cfg.num_inference_steps)]
    sched = {k: set(map(float, v)) for k, v in cal["schedules"].items()}
    if [float(t) for t in cal["timesteps"]] != steps:
        derived = rederive(sched, steps)
        sched = {k: sched[k] | derived[k] for k in sched}
    return BlockCache(sched)


def planner_cases() -> dict[str, np.ndarray]:
    from dpctrl.policy.planner import TrajectoryPlanner
    out = {}
    state = np.array([[1.0, 1.0, 0.0, 0.0], [3.0, 1.0, 0.1, -0.1]], np.float32)
    goal = np.array([[3.0, 3.0], [1.0, 3.0]], np.float32)
    for method in ("diffuser", "trajdiff"):
        planner = TrajectoryPlanner.load(policy_dir(f"plan-umaze-{method}"))
        planner.gen.manual_seed(3)
        out[f"plan.{method}"] = planner.plan(state, goal)
    return out


def drive_cases() -> dict[str, np.ndarray]:
    from dpctrl.policy.drive import DrivePlanner
    rng = np.random.default_rng(1)
    planner = DrivePlanner.load(policy_dir("drive-fork"))
    agents = np.zeros((B, planner.cfg.n_agents, 5), np.float32)
    agents[:, :3, 0] = 1.0
    agents[:, :3, 1:] = rng.uniform(-1, 1, (B, 3, 4)) * np.array([20.0, 4.0, 5.0, 1.0])
    ego = np.stack([np.zeros(B), rng.uniform(20, 30, B), np.zeros(B), np.zeros(B)], 1).astype(np.float32)
    planner.gen.manual_seed(5)
    plan = planner.plan({"ego": ego, "agents": agents})
    return {"drive.anchored.trajs": plan.trajs, "drive.anchored.scores": plan.scores}


def pad_cases() -> dict[str, np.ndarray]:
    from dpctrl import load_policy
    rng = np.random.default_rng(2)
    policy = load_policy("pad-reach")
    policy.eval()
    shapes = policy.expected_obs()
    lo, hi = policy.state_lo.numpy(), policy.state_hi.numpy()
    obs = {}
    for k, shape in shapes.items():
        if k == "state":
            full = rng.uniform(-1, 1, (B, *shape)).astype(np.float32)
            if policy.cfg.state_index is not None:
                full[..., policy.cfg.state_index] = lo + (full[..., policy.cfg.state_index] + 1) / 2 * (hi - lo)
            obs[k] = full
        else:
            obs[k] = rng.integers(0, 256, (B, *shape), dtype=np.uint8)
    out = {}
    for sampler, steps in (("ddim", 10), ("ddpm", 100)):
        policy.set_sampler(sampler, steps)
        policy.generator.manual_seed(11)
        out[f"pad.{sampler}{steps}"] = policy.predict_batch(obs)
        out[f"pad.{sampler}{steps}.frames"] = policy.last_frames
    return out


def all_cases() -> dict[str, np.ndarray]:
    import torch
    torch.manual_seed(0)
    return {**lift_cases(), **planner_cases(), **drive_cases(), **pad_cases()}


if __name__ == "__main__":
    cases = all_cases()
    np.savez(REFERENCE, **cases)
    print(f"wrote {len(cases)} arrays to {REFERENCE}", file=sys.stderr)
