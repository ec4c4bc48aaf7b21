"""PAD: one diffusion transformer denoises future frames and future actions together
(docs/references.md §6), as a chunk policy with the core's interface.

    policy = PadPolicy(PadConfig(...)); policy.set_stats(state_min, state_max, action_min, action_max)
    actions = policy.predict_chunk({"state": (1, D), "corner_image": (1, S, S, 3)})   # (T, A)
    policy.last_frames                                   # the predicted future frames (k, s, s, 3)

Training sample: the current state and frame, the next ``horizon`` actions, and ``k_future``
frames ``frame_stride`` steps apart after the current one (edge-clamped at an episode's end).
Frames are average-pooled from the observed size (64) to the model size (32) and scaled to
[-1, 1]; with patches of 4 a token carries 4 x 4 x 6 = 96 numbers, no more than the width
(a first try at 64 x 64 with 8 x 8 patches squeezed 384 into 96 and predicted only noise).
One shared timestep noises the future frames and the actions (min-max normalized to
[-1, 1]); the DiT (policy/nets/dit.py) predicts both clean targets (``prediction_type``
"sample", as the core's policies; "epsilon" is available).
Loss = image_loss_weight * L_image + lambda * L_action, lambda ramped linearly from
``lambda_start`` to ``lambda_end`` over the first ``lambda_steps`` training batches (the
count lives in the weights, so a resumed run continues the ramp). ``image_loss_weight = 0``
is the "w/o image" ablation: the same network, the future frames never supervised.
``state_index``: the observed state columns the network sees (None: all ``state_dim``). The
observation keeps its full shape; the other columns are ignored (used to withhold privileged
object poses so that objects must be seen in the frames).
Sampling: the core's samplers (DDIM-10 by default) step frames and actions with the same
(t, t_next). Actions are MetaWorld's own (end-effector delta + gripper; see
envs/metaworld_tasks.py), executed by its mocap controller.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dpctrl.policy.checkpoint import ConfigCheckpoint
from dpctrl.policy.denoise import StepPlan, denoise, draw_noise, draw_start
from dpctrl.policy.interface import ChunkShape, finite_actions, validate_obs
from dpctrl.policy.nets.dit import DiT, DiTConfig
from dpctrl.policy.normalizer import Normalizer
from dpctrl.policy.noise import EpisodeNoise
from dpctrl.policy.samplers import make_sampler
from dpctrl.policy.schedule import NoiseSchedule

FORMAT, VERSION = "dpctrl-pad", 1


@dataclass
class PadConfig:
    state_dim: int = 39
    action_dim: int = 4
    image_key: str = "corner_image"
    image_size: int = 64  # the observed frames
    model_size: int = 32  # frames are average-pooled to this before the DiT (and predicted at it)
    tasks: list[str] = field(default_factory=lambda: ["reach"])
    k_future: int = 1
    frame_stride: int = 4
    horizon: int = 8
    n_action_steps: int = 4
    patch: int = 4
    width: int = 96
    depth: int = 4
    heads: int = 4
    mask_image_to_action: bool = True
    image_loss_weight: float = 1.0
    lambda_start: float = 1.0
    lambda_end: float = 1.0
    lambda_steps: int = 1
    schedule: str = "squaredcos_cap_v2"
    num_train_timesteps: int = 100
    sampler: str = "ddim"
    num_inference_steps: int = 10
    prediction_type: str = "sample"  # what the DiT predicts for frames and actions (x0; or "epsilon")
    state_index: list[int] | None = None  # the state columns the network sees (None: all)

    def __post_init__(self):
        if self.image_size % self.model_size:
            raise ValueError(f"model_size {self.model_size} must divide image_size {self.image_size}")
        if not 1 <= self.n_action_steps <= self.horizon:
            raise ValueError("need 1 <= n_action_steps <= horizon")
        if self.k_future < 1 or self.frame_stride < 1:
            raise ValueError("k_future and frame_stride must be >= 1")
        if self.image_loss_weight < 0 or self.lambda_steps < 1:
            raise ValueError("image_loss_weight must be >= 0 and lambda_steps >= 1")
        if self.state_index is not None:
            self.state_index = [int(i) for i in self.state_index]
            if not self.state_index or len(set(self.state_index)) != len(self.state_index) \
                    or not all(0 <= i < self.state_dim for i in self.state_index):
                raise ValueError(f"state_index must be distinct columns in [0, {self.state_dim}), got {self.state_index}")

    @property
    def net_state_dim(self) -> int:
        """How many state numbers the network sees."""
        return self.state_dim if self.state_index is None else len(self.state_index)

    # the parts of the core's PolicyConfig that evaluators read
    n_obs_steps = 1  # the current state and frame (a class attribute, not a field)

    @property
    def image_keys(self) -> list[str]:
        return [self.image_key]

    def to_dict(self) -> dict:
        return asdict(self)


class PadPolicy(ChunkShape, ConfigCheckpoint, nn.Module):
    FORMAT, VERSION, SECTION, CONFIG = FORMAT, VERSION, "pad", PadConfig

    def __init__(self, cfg: PadConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.net = DiT(DiTConfig(image_size=cfg.model_size, patch=cfg.patch, k_future=cfg.k_future,
                                 action_dim=cfg.action_dim, horizon=cfg.horizon, state_dim=cfg.net_state_dim,
                                 n_tasks=len(cfg.tasks), width=cfg.width, depth=cfg.depth, heads=cfg.heads,
                                 mask_image_to_action=cfg.mask_image_to_action))
        self.schedule = NoiseSchedule(cfg.schedule, cfg.num_train_timesteps)
        self.set_sampler(cfg.sampler, cfg.num_inference_steps)
        # min-max normalization to [-1, 1] (set from the demonstrations by set_stats)
        for name, dim in (("state", cfg.net_state_dim), ("action", cfg.action_dim)):
            self.register_buffer(f"{name}_lo", torch.full((dim,), -1.0))
            self.register_buffer(f"{name}_hi", torch.full((dim,), 1.0))
        self.register_buffer("loss_calls", torch.zeros((), dtype=torch.long))
        self.generator = torch.Generator().manual_seed(seed)
        self.episodes = EpisodeNoise(seed)
        self.task_id = 0
        self.nfe_last = 0
        self.last_frames: np.ndarray | None = None

    # ---------------------------------------------------------------- core interface
    def set_sampler(self, name: str, n_steps: int) -> None:
        self.sampler = make_sampler(name, self.schedule, prediction_type=self.cfg.prediction_type, clip_sample=True)
        self.sampler.grid(n_steps)
        self.cfg.sampler, self.cfg.num_inference_steps = name, n_steps

    def set_task(self, task: str) -> None:
        if task not in self.cfg.tasks:
            raise ValueError(f"this PAD policy was trained on {self.cfg.tasks}, not {task!r}")
        self.task_id = self.cfg.tasks.index(task)

    def set_stats(self, state: np.ndarray, action: np.ndarray) -> None:
        """Normalization ranges from demonstration arrays ``(N, D)`` (full observed states) and ``(N, A)``."""
        state = np.asarray(state)
        if self.cfg.state_index is not None:
            state = state[..., self.cfg.state_index]
        for name, arr in (("state", state), ("action", action)):
            a = torch.as_tensor(np.asarray(arr), dtype=torch.float32)
            lo, hi = a.min(0).values, a.max(0).values
            flat = (hi - lo) < 1e-4
            getattr(self, f"{name}_lo").copy_(torch.where(flat, lo - 1, lo))
            getattr(self, f"{name}_hi").copy_(torch.where(flat, hi + 1, hi))

    @property
    def normalizer(self) -> Normalizer:
        """The state and action ranges (buffers, so they travel in the weights) as a normalizer."""
        return Normalizer.from_ranges({k: (getattr(self, f"{k}_lo"), getattr(self, f"{k}_hi"))
                                       for k in ("state", "action")})

    def _state(self, x) -> torch.Tensor:
        """Observed states (..., state_dim) -> the normalized columns the network sees."""
        x = torch.as_tensor(x, dtype=torch.float32)
        if self.cfg.state_index is not None:
            x = x[..., self.cfg.state_index]
        return self.normalizer.normalize("state", x)

    def _img(self, x: torch.Tensor) -> torch.Tensor:
        """(..., S, S, 3) uint8 -> (..., 3, s, s) in [-1, 1], average-pooled to the model size s."""
        x = x.float().movedim(-1, -3) / 127.5 - 1
        f = self.cfg.image_size // self.cfg.model_size
        if f == 1:
            return x
        lead = x.shape[:-3]
        return F.avg_pool2d(x.reshape(-1, *x.shape[-3:]), f).view(*lead, 3, self.cfg.model_size, self.cfg.model_size)

    def pooled(self, frames: np.ndarray) -> np.ndarray:
        """Observed uint8 frames (..., S, S, 3) at the model's size, as uint8 (what PSNR compares)."""
        x = self._img(torch.as_tensor(np.asarray(frames)))
        return ((x + 1) * 127.5).round().clamp(0, 255).movedim(-3, -1).to(torch.uint8).numpy()

    def describe(self) -> dict:
        return {"sampler": self.cfg.sampler, "num_inference_steps": self.cfg.num_inference_steps,
                "warm_start": None, "cache": None, "deploy": "eager", "config": self.cfg.to_dict()}

    def note_executed(self, n: int, ids=None) -> None:
        pass

    def reset(self, ids=None, seeds=None) -> None:
        """``seeds``: each row's episode seed, its noise from a stream of its own (policy/noise.py)."""
        self.nfe_last = 0
        self.episodes.reset(ids, seeds)

    def expected_obs(self) -> dict[str, tuple[int, ...]]:
        S = self.cfg.image_size
        return {"state": (1, self.cfg.state_dim), self.cfg.image_key: (1, S, S, 3)}

    def validate_obs(self, obs: Mapping, batched: bool = False) -> None:
        validate_obs(self.expected_obs(), obs, batched)

    # ---------------------------------------------------------------- training
    def lambda_now(self) -> float:
        frac = min(1.0, float(self.loss_calls) / self.cfg.lambda_steps)
        return self.cfg.lambda_start + frac * (self.cfg.lambda_end - self.cfg.lambda_start)

    def loss(self, batch: Mapping, generator: torch.Generator | None = None) -> torch.Tensor:
        """batch: state (B, D), image (B, S, S, 3) uint8, future (B, k, S, S, 3) uint8,
        action (B, T, A), task (B,) long."""
        cur = self._img(batch["image"])
        fut = self._img(batch["future"]).flatten(1, 2)  # (B, 3k, S, S)
        act = self.normalizer.normalize("action", batch["action"].float())
        state = self._state(batch["state"])
        B = cur.shape[0]
        t = self.sampler.train_timesteps(B, generator=generator)
        n_img = torch.randn(fut.shape, generator=generator)
        n_act = torch.randn(act.shape, generator=generator)
        out_img, out_act = self.net(cur, self.sampler.noisy(fut, n_img, t), self.sampler.noisy(act, n_act, t), state,
                                    self.sampler.model_time(t), batch["task"].long())
        l_img = F.mse_loss(out_img, self.sampler.target(fut, n_img, t))
        l_act = F.mse_loss(out_act, self.sampler.target(act, n_act, t))
        lam = self.lambda_now()
        if self.training:
            self.loss_calls += 1
        self.last_losses = {"image": float(l_img.detach()), "action": float(l_act.detach()), "lambda": lam}
        return self.cfg.image_loss_weight * l_img + lam * l_act

    def forward(self, batch: Mapping, **kw) -> torch.Tensor:
        return self.loss(batch, **kw)

    def param_groups(self, weight_decay: float) -> list[dict]:
        return self.net.optim_groups(weight_decay)

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def sample(self, cur: torch.Tensor, state: torch.Tensor, task: torch.Tensor,
               ids: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized (future frames (B, 3k, S, S), actions (B, T, A)) from noise (rows ``ids``' streams)."""
        B, S = cur.shape[0], self.cfg.model_size
        shapes = [(B, 3 * self.cfg.k_future, S, S), (B, self.cfg.horizon, self.cfg.action_dim)]
        source = self.episodes.source(self.generator, list(range(B)) if ids is None else ids)
        x = draw_start(source, shapes)
        plan = StepPlan.of(self.sampler, self.cfg.num_inference_steps)
        noise = draw_noise(source, self.sampler, plan, shapes)
        fut, act = denoise(lambda x, i: self.net(cur, x[0], x[1], state, plan.net_times[i], task),
                           self.sampler, x, plan, noise)
        self.nfe_last = len(plan)
        return fut, act

    @torch.no_grad()
    def predict_batch(self, obs: Mapping, committed=None, ids=None) -> np.ndarray:
        """{state: (B, 1, D), image: (B, 1, S, S, 3)} -> actions (B, T, A) in MetaWorld units;
        the predicted future frames of row 0 are kept in ``last_frames`` (k, s, s, 3) uint8 at the model size."""
        self.validate_obs(obs, batched=True)
        cur = self._img(torch.as_tensor(np.asarray(obs[self.cfg.image_key]))[:, 0])
        state = self._state(np.asarray(obs["state"])[:, 0])
        task = torch.full((cur.shape[0],), self.task_id, dtype=torch.long)
        fut, act = self.sample(cur, state, task, ids)
        frames = ((fut[0].view(self.cfg.k_future, 3, *fut.shape[-2:]).clamp(-1, 1) + 1) * 127.5).round()
        self.last_frames = frames.movedim(1, -1).to(torch.uint8).numpy()
        return finite_actions(self.normalizer.unnormalize("action", act).numpy())

    def predict_chunk(self, obs_window: Mapping, committed=None) -> np.ndarray:
        self.validate_obs(obs_window)
        return self.predict_batch({k: np.asarray(obs_window[k])[None] for k in self.expected_obs()})[0]

    @torch.no_grad()
    def predict_frames(self, image: np.ndarray, state: np.ndarray, task: int | None = None) -> np.ndarray:
        """Future frames (B, k, s, s, 3) uint8 at the model size, from current frames (B, S, S, 3) and states (B, D)."""
        cur = self._img(torch.as_tensor(image))
        st = self._state(state)
        tk = torch.full((cur.shape[0],), self.task_id if task is None else task, dtype=torch.long)
        fut, _ = self.sample(cur, st, tk)
        fut = fut.view(cur.shape[0], self.cfg.k_future, 3, *fut.shape[-2:])
        return ((fut.clamp(-1, 1) + 1) * 127.5).round().movedim(2, -1).to(torch.uint8).numpy()
