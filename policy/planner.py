"""Offline-RL trajectory planning with diffusion (docs/references.md §7).

A plan is ``n_points`` states (x, y, vx, vy) every ``stride`` control steps, from the current
state (index 0) to the goal position (last index): the horizon is n_points * stride steps.

- ``diffuser``: Diffuser (Janner et al. 2022). A temporal U-Net denoises the whole
  trajectory (x0-prediction, cosine schedule, DDIM); after every step the start state and
  the goal position are written back in (inpainting), so the plan is conditioned on them
  without any conditioning input.
- ``trajdiff``: Trajectory-Diffuser style (Huang et al. 2024). A causal transformer proposes
  the trajectory autoregressively, ``chunk`` states per step, conditioned on the start state
  and the goal; the same kind of U-Net then refines the proposal with a few (<= 5) DDIM
  steps from a low noise level (SDEdit), with the same inpainting. The refiner is a
  Diffuser U-Net trained alongside the proposer (one loss: denoising MSE + next-chunk MSE).

Both networks see states normalised to [-1, 1] per dimension (range from the data).
``policy/`` knows nothing of the maze: walls, tracking and evaluation live in envs/ and
launch/plan.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dpctrl.policy import checkpoint
from dpctrl.policy.denoise import StepPlan, denoise, draw_noise, draw_start
from dpctrl.policy.nets.unet1d import TemporalUNet
from dpctrl.policy.normalizer import Normalizer
from dpctrl.policy.samplers import DDIM
from dpctrl.policy.schedule import NoiseSchedule

FORMAT, VERSION = "dpctrl-planner", 1
METHODS = ("diffuser", "trajdiff")
STATE_DIM, GOAL_DIM = 4, 2


@dataclass
class PlannerConfig:
    method: str = "diffuser"
    n_points: int = 32
    stride: int = 4
    num_train_timesteps: int = 100
    schedule: str = "squaredcos_cap_v2"
    n_steps: int = 20  # diffuser: DDIM steps per plan
    unet_dim: int = 16
    unet_mults: tuple = (1, 2, 4)
    # trajdiff
    chunk: int = 8  # states per autoregressive step
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    refine_t: int = 10  # SDEdit level the refinement starts from (of num_train_timesteps)
    refine_steps: int = 3  # DDIM steps from refine_t down (<= 5)
    state_lo: list = field(default_factory=lambda: [-1.0] * STATE_DIM)
    state_hi: list = field(default_factory=lambda: [1.0] * STATE_DIM)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown planner {self.method!r}; known: {METHODS}")
        self.unet_mults = tuple(self.unet_mults)
        if self.n_points % (2 ** (len(self.unet_mults) - 1)):
            raise ValueError(f"n_points {self.n_points} must be divisible by {2 ** (len(self.unet_mults) - 1)}")
        if self.n_points % self.chunk:
            raise ValueError(f"n_points {self.n_points} must be a multiple of chunk {self.chunk}")
        if not 1 <= self.refine_steps <= 5 or not 0 < self.refine_t < self.num_train_timesteps:
            raise ValueError("trajdiff refines with 1..5 steps from 0 < refine_t < num_train_timesteps")

    @property
    def horizon_steps(self) -> int:
        return self.n_points * self.stride


class ChunkTransformer(nn.Module):
    """Causal transformer: tokens [start+goal, chunk_1, ..., chunk_{n-1}] -> chunk_1 .. chunk_n."""

    def __init__(self, cfg: PlannerConfig):
        super().__init__()
        self.cfg = cfg
        n_tokens = cfg.n_points // cfg.chunk
        self.cond = nn.Linear(STATE_DIM + GOAL_DIM, cfg.d_model)
        self.embed = nn.Linear(cfg.chunk * STATE_DIM, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(1, n_tokens, cfg.d_model))
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, 4 * cfg.d_model, dropout=0.0,
                                           batch_first=True, norm_first=True, activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.chunk * STATE_DIM)
        mask = torch.triu(torch.full((n_tokens, n_tokens), float("-inf")), 1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, start: torch.Tensor, goal: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        """start (B, 4), goal (B, 2), chunks (B, k, chunk*4) of the first k chunks -> (B, k+1, chunk*4)."""
        tok = torch.cat([self.cond(torch.cat([start, goal], -1))[:, None], self.embed(chunks)], 1)
        n = tok.shape[1]
        h = self.blocks(tok + self.pos[:, :n], mask=self.mask[:n, :n])
        return self.head(self.norm(h))


class _Nets(nn.Module):
    """What the trainer optimises: the U-Net (both methods) and the proposal transformer."""

    def __init__(self, cfg: PlannerConfig):
        super().__init__()
        self.unet = TemporalUNet(STATE_DIM, cfg.unet_dim, cfg.unet_mults)
        self.proposer = ChunkTransformer(cfg) if cfg.method == "trajdiff" else None

    def optim_groups(self, weight_decay: float) -> list[dict]:
        decay = [p for p in self.parameters() if p.dim() >= 2]
        rest = [p for p in self.parameters() if p.dim() < 2]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class TrajectoryPlanner(checkpoint.ConfigCheckpoint, nn.Module):
    FORMAT, VERSION, SECTION, CONFIG = FORMAT, VERSION, "planner", PlannerConfig

    def __init__(self, cfg: PlannerConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.net = _Nets(cfg)
        self.schedule = NoiseSchedule(cfg.schedule, cfg.num_train_timesteps)
        self.sampler = DDIM(self.schedule, prediction_type="sample", clip_sample=True, clip_range=1.0)
        self.gen = torch.Generator().manual_seed(seed)

    # ------------------------------------------------------------------ normalisation
    def fit_states(self, states: np.ndarray) -> None:
        states = np.asarray(states, np.float64).reshape(-1, STATE_DIM)
        self.cfg.state_lo = states.min(0).tolist()
        self.cfg.state_hi = (states.max(0) + 1e-3).tolist()

    @property
    def normalizer(self) -> Normalizer:
        """States (4) and goals (the position, 2) to [-1, 1] over the ranges in the config."""
        lo, hi = self.cfg.state_lo, self.cfg.state_hi
        return Normalizer.from_ranges({"state": (lo, hi), "goal": (lo[:GOAL_DIM], hi[:GOAL_DIM])})

    @staticmethod
    def inpaint(x: torch.Tensor, start: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, 0] = start
        x[:, -1, :GOAL_DIM] = goal
        return x

    # ------------------------------------------------------------------ training
    def loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        traj = self.normalizer.normalize("state", torch.as_tensor(batch["traj"], dtype=torch.float32))  # (B, N, 4)
        B = traj.shape[0]
        start, goal = traj[:, 0], traj[:, -1, :GOAL_DIM]
        t = torch.randint(0, self.cfg.num_train_timesteps, (B,), generator=generator)
        noise = torch.randn(traj.shape, generator=generator)
        noisy = self.inpaint(self.schedule.add_noise(traj, noise, t), start, goal)
        pred = self.inpaint(self.net.unet(noisy, t), start, goal)  # conditioned entries carry no loss
        loss = F.mse_loss(pred, traj)
        if self.net.proposer is not None:
            chunks = traj.reshape(B, -1, self.cfg.chunk * STATE_DIM)
            out = self.net.proposer(start, goal, chunks[:, :-1])
            loss = loss + F.mse_loss(out, chunks)
        return loss

    def forward(self, batch: dict, **kw) -> torch.Tensor:
        return self.loss(batch, **kw)

    def param_groups(self, weight_decay: float) -> list[dict]:
        return self.net.optim_groups(weight_decay)

    # ------------------------------------------------------------------ planning
    @torch.no_grad()
    def propose(self, start: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """trajdiff's autoregressive proposal (normalised units), chunk by chunk."""
        chunks = torch.zeros(start.shape[0], 0, self.cfg.chunk * STATE_DIM)
        for _ in range(self.cfg.n_points // self.cfg.chunk):
            nxt = self.net.proposer(start, goal, chunks)[:, -1:]
            chunks = torch.cat([chunks, nxt], 1)
        return chunks.reshape(start.shape[0], self.cfg.n_points, STATE_DIM)

    @torch.no_grad()
    def plan(self, state: np.ndarray, goal: np.ndarray, n_steps: int | None = None) -> np.ndarray:
        """Plans (B, n_points, 4) in env units for states (B, 4) and goals (B, 2).
        diffuser: ``n_steps`` DDIM steps from noise (default cfg.n_steps); trajdiff: the
        proposal, then cfg.refine_steps DDIM steps from level cfg.refine_t."""
        cfg = self.cfg
        state = np.asarray(state, np.float32)
        goal = np.asarray(goal, np.float32)
        if state.ndim != 2 or state.shape[1] != STATE_DIM or goal.shape != (state.shape[0], GOAL_DIM):
            raise ValueError(f"plan needs states (B, 4) and goals (B, 2); got {state.shape}, {goal.shape}")
        if not (np.isfinite(state).all() and np.isfinite(goal).all()):
            raise ValueError("plan: non-finite state or goal")
        norm = self.normalizer
        start, g = norm.normalize("state", torch.from_numpy(state)), norm.normalize("goal", torch.from_numpy(goal))
        shape = (state.shape[0], cfg.n_points, STATE_DIM)
        if cfg.method == "diffuser":
            plan = StepPlan.through(self.sampler, self.sampler.grid(n_steps or cfg.n_steps))
            (x,) = draw_start(self.gen, [shape])
        else:
            if n_steps not in (None, cfg.refine_steps):
                raise ValueError(f"trajdiff refines with its {cfg.refine_steps} steps; got n_steps={n_steps}")
            x = self.propose(start, g).clamp(-1, 1)
            levels = [int(t) for t in np.linspace(cfg.refine_t, 0, cfg.refine_steps, endpoint=False).round()]
            plan = StepPlan.through(self.sampler, levels, start_level=levels[0])
        noise = draw_noise(self.gen, self.sampler, plan, [shape])

        def model(x, i):
            return self.net.unet(x, torch.full((x.shape[0],), plan.pairs[i][0], dtype=torch.long))
        x = denoise(model, self.sampler, x, plan, noise, project=lambda x: self.inpaint(x, start, g))
        return norm.unnormalize("state", x).numpy()
