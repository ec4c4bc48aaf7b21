"""The LeRobot half of ``dpctrl bench peer``; runs in the side venv (Python >= 3.12, the real
``lerobot`` package) and imports nothing of dpctrl. Driven by ``launch/bench/peer.py``.

    python peer_lerobot_side.py SPEC.json

SPEC: {"state_dim", "env_dim", "action_dim", "n_obs_steps", "horizon", "n_action_steps",
"sizes": {name: down_dims}, "samplers": [[scheduler, steps], ...], "batch", "reps", "threads"}.
For each size and sampler: LeRobot's ``DiffusionPolicy`` (its 1-D conditional U-Net; random
weights, timing only) with those features, and the per-chunk wall-clock of
``DiffusionModel.generate_actions`` (normalized observations in, a normalized chunk out:
LeRobot 0.4 normalizes in processors outside the policy) over ``reps`` chunks after one
warm-up. A JSON report goes to stdout's last line.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch


def bench(spec: dict) -> dict:
    import lerobot
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    B, To = spec["batch"], spec["n_obs_steps"]
    batch = {"observation.state": torch.randn(B, To, spec["state_dim"]),
             "observation.environment_state": torch.randn(B, To, spec["env_dim"])}
    rows = []
    for size, down_dims in spec["sizes"].items():
        for scheduler, steps in spec["samplers"]:
            cfg = DiffusionConfig(
                input_features={"observation.state": PolicyFeature(FeatureType.STATE, (spec["state_dim"],)),
                                "observation.environment_state": PolicyFeature(FeatureType.ENV, (spec["env_dim"],))},
                output_features={"action": PolicyFeature(FeatureType.ACTION, (spec["action_dim"],))},
                n_obs_steps=To, horizon=spec["horizon"], n_action_steps=spec["n_action_steps"],
                down_dims=tuple(down_dims), noise_scheduler_type=scheduler, num_inference_steps=steps, device="cpu")
            policy = DiffusionPolicy(cfg).eval()
            ms = []
            with torch.no_grad():
                for i in range(spec["reps"] + 1):
                    t0 = time.perf_counter()
                    out = policy.diffusion.generate_actions(batch)
                    if i:
                        ms.append((time.perf_counter() - t0) * 1e3)
            if tuple(out.shape) != (B, spec["n_action_steps"], spec["action_dim"]):
                raise RuntimeError(f"lerobot returned {tuple(out.shape)}")
            rows.append({"impl": "lerobot", "arch": f"U-Net {tuple(down_dims)}", "size": size,
                         "params": sum(p.numel() for p in policy.parameters()),
                         "sampler": f"{scheduler}-{steps}", "nfe": steps, "batch": B,
                         "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                         "timed_chunks": len(ms)})
    return {"lerobot": lerobot.__version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "rows": rows}


if __name__ == "__main__":
    print(json.dumps(bench(json.loads(open(sys.argv[1]).read()))))
