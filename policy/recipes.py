"""Training recipes as data: what ``dpctrl train`` builds and trains for each task.

CPU-sized defaults (a 1.2M-parameter DP-T: 4 layers, width 128); the 9M model of the paper
trains ~13x slower per sample on 2 cores. Sample (x0) prediction instead of the paper's
epsilon: on short CPU budgets it learns the observation -> action map far sooner
(tests/policy/test_train.py's toy task: 0.02 vs 0.8 action error after 1500 steps).

Image policies see the robot's proprioception and the cameras, never the object state. The
encoder is a quarter of the default width: 1.3 s vs 5.0 s per batch of 128 on one CPU
thread, which is what makes an image run fit in about an hour here. Two cameras by default:
the wrist camera sees the cube between the fingers (Lift, the same 100 held-out seeds:
agentview alone 0.72, agentview + wrist 0.79). Lift adds 100 recovery episodes (missed
grasp, regrasp; data/collect.py) to the 200 demos: 0.79 -> 0.99 on those seeds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from dpctrl.policy.diffusion_policy import DiffusionPolicy, PolicyConfig
from dpctrl.policy.normalizer import Normalizer

PROPRIO_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
LOW_DIM_KEYS = PROPRIO_KEYS + ("object",)  # the object's pose: low-dim policies only
EVAL_SEED_START = 100_000  # demonstrations use seeds from 0: no evaluation scene was seen in training
RECOVERY_SEED_START = 50_000  # recovery episodes' scenes: disjoint from demos (0..) and evals
DEFAULT_CAMERAS = ("agentview",)  # envs.DEFAULT_CAMERAS: a store of these keeps the plain name


@dataclass(frozen=True)
class Recipe:
    """One task's DP-T: demonstrations, network size, chunk geometry, sampler, batch size."""
    demos: int
    n_layer: int = 4
    n_emb: int = 128
    n_obs_steps: int = 2
    horizon: int = 16
    n_action_steps: int = 8
    sampler: str = "ddim"
    num_inference_steps: int = 10
    prediction_type: str = "sample"
    batch_size: int = 128


@dataclass(frozen=True)
class ImageRecipe:
    """What an image policy changes: the encoder's widths, the batch, the cameras, recoveries."""
    image_widths: tuple[int, ...] = (16, 32, 64)
    batch_size: int = 64
    cameras: tuple[str, ...] = ("agentview", "robot0_eye_in_hand")
    recoveries: int = 100  # Lift only
    p_drop_attn: float = 0.3


RECIPES = {
    "lift": Recipe(demos=200),
    "stack": Recipe(demos=300),
    "can": Recipe(demos=200),  # robomimic's PickPlaceCan: pick from bin 1, place in its quarter of bin 2
    "square": Recipe(demos=300),  # robomimic's NutAssemblySquare: the square nut down its peg
    # PAD's DP-T baseline: one task per model (the core's policy has no task input), the same
    # inputs as PAD (MetaWorld's 39-d state + the 64x64 corner camera)
    "metaworld": Recipe(demos=50),
}
IMAGES = ImageRecipe()


@dataclass
class PolicyRecipe:
    """A recipe resolved for one run: the data's shapes and the choices of the command line."""
    recipe: Recipe
    obs_dims: dict[str, int]
    action_dim: int
    image_keys: list[str] = field(default_factory=list)
    image_size: int = 84
    image_crop: int = 76
    discrete_dims: list[int] = field(default_factory=list)
    discrete_scale: float = 1.0
    prefix_max: int = 0  # train on committed prefixes of up to this many actions (policy/prefix.py)

    def config(self) -> PolicyConfig:
        r, images = self.recipe, bool(self.image_keys)
        return PolicyConfig(obs_dims=dict(self.obs_dims), action_dim=self.action_dim, image_keys=list(self.image_keys),
                            image_size=self.image_size, image_crop=self.image_crop, n_layer=r.n_layer, n_emb=r.n_emb,
                            image_widths=list(IMAGES.image_widths) if images else [32, 64, 128],
                            p_drop_attn=IMAGES.p_drop_attn if images else 0.01, prediction_type=r.prediction_type,
                            discrete_action_dims=list(self.discrete_dims), discrete_scale=self.discrete_scale,
                            horizon=r.horizon, n_obs_steps=r.n_obs_steps, n_action_steps=r.n_action_steps,
                            sampler=r.sampler, num_inference_steps=r.num_inference_steps, prefix_max=self.prefix_max)

    def build(self, stats: dict, seed: int, init_from: str | Path | None = None) -> DiffusionPolicy:
        """A fresh policy (weights from ``seed``) normalizing by the data's ``stats``; with
        ``init_from``, a checkpoint of the same network whose weights and normalizer it starts
        from (fine-tuning; only a prefix flag the checkpoint lacks starts at zero)."""
        torch.manual_seed(seed)
        policy = DiffusionPolicy(self.config(), Normalizer.from_stats(stats), seed=seed)
        if init_from is None:
            return policy
        source = DiffusionPolicy.load(init_from)
        ours, theirs = policy.cfg.to_dict(), source.cfg.to_dict()
        differ = sorted(k for k in ours if k != "prefix_max" and ours[k] != theirs.get(k))
        if differ:
            raise ValueError(f"--init-from {init_from}: its network differs from this recipe's in "
                             + ", ".join(f"{k} ({theirs.get(k)} vs {ours[k]})" for k in differ))
        missing, unexpected = policy.load_state_dict(source.state_dict(), strict=False)
        if unexpected or set(missing) - {"net.prefix_emb"}:
            raise ValueError(f"--init-from {init_from}: weights do not fit (missing {missing}, unexpected {unexpected})")
        return policy


@dataclass(frozen=True)
class DataSpec:
    """Where a task's demonstrations live and what the policy reads of them."""
    path: Path
    obs_keys: list[str]
    image_keys: list[str]
    cameras: tuple[str, ...]
    image_size: int = 84
    image_crop: int = 76


def data_spec(task: str, images: bool, cameras: tuple[str, ...] | None, data_dir: str | Path,
              metaworld_store: Path | None = None) -> DataSpec:
    """robosuite tasks: ``<data_dir>/<task>[_images[_<cams>]].zarr`` with proprioception (+ the
    object pose for low-dim policies) and ``<camera>_image`` keys; MetaWorld: PAD's store
    ``metaworld_store`` (64x64 corner-camera frames) with its 39-d state."""
    if task.startswith("metaworld:"):
        return DataSpec(Path(metaworld_store), ["state"], ["corner_image"], ("corner",), 64, 58)
    cams = tuple(cameras or IMAGES.cameras)
    name = (f"{task}_images.zarr" if images and cams == DEFAULT_CAMERAS else
            f"{task}_images_{'+'.join(cams)}.zarr" if images else f"{task}.zarr")
    return DataSpec(Path(data_dir) / name, list(PROPRIO_KEYS if images else LOW_DIM_KEYS),
                    [f"{c}_image" for c in cams] if images else [], cams)


def recipe_for(task: str) -> Recipe:
    family = task.split(":")[0]
    if family not in RECIPES:
        raise ValueError(f"no training recipe for {task!r}; known: {sorted(RECIPES)}")
    return RECIPES[family]
