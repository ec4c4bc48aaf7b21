"""Trajectory planning for driving: truncated anchored diffusion (DiffusionDrive,
docs/references.md §5) and two baselines on the same backbone.

- ``anchored``: K k-means anchors (stored in the checkpoint) are noised to a small level
  (training: t ~ U[0, 50) of 1000; inference: t = 40), and a 2-stage cascade decoder predicts
  the clean trajectory and a confidence for each; 2 true DDIM steps (40 -> 20 -> clean).
  Loss: focal classification (gamma 2, alpha 0.25) x 10 + L1 on the anchor nearest to the
  ground truth x 8, summed over stages. Output: the top-scoring trajectory (all K kept).
- ``vanilla``: a standard DDPM (as Diffusion Policy): one query, epsilon prediction, MSE,
  t ~ U[0, 1000) in training; DDIM from pure noise with any number of steps at inference
  (x0 estimates clipped to the data range). ``prediction_type="sample"`` instead trains it
  like the anchored decoder (L1 on the clean trajectory), which behaves differently at
  2 steps: the L1 optimum is a median, one of the modes, not their mean.
- ``regression``: one learned query, no noise, one forward pass, L1.

Shapes: observations ``ego`` (B, 4) and ``agents`` (B, N, 5) as in envs/highway.py;
trajectories (B, Q, W, 2) in metres, normalised to [-1, 1] per axis inside the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dpctrl.policy import checkpoint
from dpctrl.policy.denoise import StepPlan, denoise, draw_noise, draw_start
from dpctrl.policy.nets.transformer import decay_groups, sinusoidal_embedding
from dpctrl.policy.normalizer import Normalizer
from dpctrl.policy.samplers import DDIM
from dpctrl.policy.schedule import NoiseSchedule
from dpctrl.policy.trajectories import kmeans

METHODS = ("anchored", "vanilla", "regression")
FORMAT, VERSION = "dpctrl-drive", 1
# fixed physical scales of the observation features (metres, m/s, rad)
EGO_SCALE = (8.0, 30.0, 5.0, 0.5)
AGENT_SCALE = (1.0, 50.0, 8.0, 15.0, 5.0)


@dataclass
class DriveConfig:
    method: str = "anchored"
    n_anchors: int = 20
    n_waypoints: int = 8
    n_agents: int = 8
    d_model: int = 64
    n_heads: int = 4
    enc_layers: int = 2
    stages: int = 2
    num_train_timesteps: int = 1000
    schedule: str = "linear"
    train_t_max: int = 50  # anchored: training noise levels t < train_t_max
    infer_ts: tuple[int, ...] = (40, 20)  # anchored: the truncated DDIM levels
    cls_weight: float = 10.0
    reg_weight: float = 8.0
    prediction_type: str = ""  # "" = the method's own: epsilon (vanilla), sample (anchored, regression)
    traj_lo: list[float] = field(default_factory=lambda: [0.0, -1.0])
    traj_hi: list[float] = field(default_factory=lambda: [1.0, 1.0])

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; known: {METHODS}")
        self.infer_ts = tuple(int(t) for t in self.infer_ts)
        if not self.prediction_type:
            self.prediction_type = "epsilon" if self.method == "vanilla" else "sample"
        if self.prediction_type not in ("epsilon", "sample") or (self.method != "vanilla"
                                                                 and self.prediction_type != "sample"):
            raise ValueError(f"prediction_type {self.prediction_type!r} is not available for {self.method!r}")
        if self.method == "anchored" and not all(0 <= t < self.train_t_max for t in self.infer_ts):
            raise ValueError(f"inference levels {self.infer_ts} must lie in the trained range [0, {self.train_t_max})")

    @property
    def n_queries(self) -> int:
        return self.n_anchors if self.method == "anchored" else 1


def _mlp(i: int, d: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, d), nn.GELU(), nn.Linear(d, o))


class Stage(nn.Module):
    """One cascade stage: trajectory embedding, self-attention among queries, cross-attention
    to the scene (agent + ego tokens), time modulation, FFN; then offset and confidence heads."""

    def __init__(self, d: int, heads: int, traj_dim: int):
        super().__init__()
        self.traj_in = _mlp(traj_dim, d, d)
        self.ln = nn.ModuleList(nn.LayerNorm(d) for _ in range(3))
        self.sa = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ca = nn.MultiheadAttention(d, heads, batch_first=True)
        self.film = nn.Linear(d, 2 * d)
        self.ffn = _mlp(d, 4 * d, d)
        self.offset = _mlp(d, d, traj_dim)
        self.cls = _mlp(d, d, 1)

    def forward(self, q, traj, mem, pad, temb):
        h = q + self.traj_in(traj)
        x = self.ln[0](h)
        h = h + self.sa(x, x, x, need_weights=False)[0]
        x = self.ln[1](h)
        h = h + self.ca(x, mem, mem, key_padding_mask=pad, need_weights=False)[0]
        scale, shift = self.film(temb).unsqueeze(1).chunk(2, dim=-1)
        h = h * (1 + scale) + shift
        h = h + self.ffn(self.ln[2](h))
        return h, traj + self.offset(h), self.cls(h).squeeze(-1)


class DriveNet(nn.Module):
    def __init__(self, cfg: DriveConfig):
        super().__init__()
        d = cfg.d_model
        self.ego_in = _mlp(4, d, d)
        self.agent_in = _mlp(5, d, d)
        layer = nn.TransformerEncoderLayer(d, cfg.n_heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.enc_layers, enable_nested_tensor=False)
        self.time = _mlp(d, d, d)
        self.query = nn.Parameter(torch.zeros(1, cfg.n_queries, d))
        self.stages = nn.ModuleList(Stage(d, cfg.n_heads, cfg.n_waypoints * 2) for _ in range(cfg.stages))
        self.d = d

    def optim_groups(self, weight_decay: float) -> list[dict]:
        return decay_groups(self, weight_decay)

    def encode(self, ego: torch.Tensor, agents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 4), (B, N, 5) -> scene tokens (B, 1 + N, d) and their padding mask (B, 1 + N)."""
        ego_n = ego / ego.new_tensor(EGO_SCALE)
        ag_n = agents / agents.new_tensor(AGENT_SCALE)
        tokens = torch.cat([self.ego_in(ego_n)[:, None], self.agent_in(ag_n)], dim=1)
        pad = torch.cat([torch.zeros_like(agents[:, :1, 0], dtype=torch.bool), agents[..., 0] < 0.5], dim=1)
        return self.encoder(tokens, src_key_padding_mask=pad), pad

    def decode(self, mem, pad, traj: torch.Tensor, t: torch.Tensor,
               residual: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Noisy normalised trajectories (B, Q, W*2) at levels t (B,) -> per stage
        (prediction (B, Q, W*2), confidence logits (B, Q)). ``residual``: each stage predicts
        the clean trajectory as its input plus an offset, and the next stage starts from it;
        otherwise (epsilon prediction) each stage's offset head is the prediction and every
        stage sees the noisy input."""
        temb = self.time(sinusoidal_embedding(t, self.d))
        q = self.query.expand(traj.shape[0], -1, -1)
        out = []
        for stage in self.stages:
            q, refined, logits = stage(q, traj, mem, pad, temb)
            out.append((refined if residual else refined - traj, logits))
            traj = refined if residual else traj
        return out


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss, summed over queries, averaged over the batch."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * (1 - p_t) ** gamma * ce).sum(-1).mean()


@dataclass
class Plan:
    trajs: np.ndarray  # (B, Q, W, 2) metres, ego frame
    scores: np.ndarray  # (B, Q) confidence in [0, 1] (uniform for the baselines)

    @property
    def best(self) -> np.ndarray:
        """(B, W, 2): the highest-confidence trajectory of each scene."""
        return self.trajs[np.arange(len(self.trajs)), self.scores.argmax(1)]

    def top(self, k: int) -> np.ndarray:
        """(B, k, W, 2): the k highest-confidence trajectories."""
        idx = np.argsort(-self.scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(self.trajs, idx[..., None, None], axis=1)


class DrivePlanner(checkpoint.ConfigCheckpoint, nn.Module):
    """A trajectory planner; ``fit_trajectories`` sets normalisation (and anchors) from data."""

    FORMAT, VERSION, SECTION, CONFIG = FORMAT, VERSION, "drive", DriveConfig

    def __init__(self, cfg: DriveConfig, anchors: np.ndarray | None = None, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.net = DriveNet(cfg)
        self.schedule = NoiseSchedule(cfg.schedule, cfg.num_train_timesteps)
        eps = cfg.prediction_type == "epsilon"
        self.sampler = DDIM(self.schedule, prediction_type=cfg.prediction_type, clip_sample=eps, clip_range=1.0)
        k = cfg.n_anchors if cfg.method == "anchored" else 0
        self.register_buffer("anchors", torch.zeros(k, cfg.n_waypoints * 2) if anchors is None
                             else torch.as_tensor(anchors, dtype=torch.float32).reshape(k, -1))
        self.gen = torch.Generator().manual_seed(seed)

    # ------------------------------------------------------------------ normalisation
    def normalize(self, traj: torch.Tensor) -> torch.Tensor:
        """Trajectories (..., W, 2) in metres -> flat normalized (..., W*2)."""
        return Normalizer.from_ranges({"traj": (self.cfg.traj_lo, self.cfg.traj_hi)}).normalize("traj", traj).flatten(-2)

    def unnormalize(self, flat: torch.Tensor) -> torch.Tensor:
        traj = flat.unflatten(-1, (self.cfg.n_waypoints, 2))
        return Normalizer.from_ranges({"traj": (self.cfg.traj_lo, self.cfg.traj_hi)}).unnormalize("traj", traj)

    def fit_trajectories(self, futures: np.ndarray, seed: int = 0) -> None:
        """Normalisation range from training futures (N, W, 2); anchors by k-means."""
        futures = np.asarray(futures, np.float32)
        self.cfg.traj_lo = futures.reshape(-1, 2).min(0).tolist()
        self.cfg.traj_hi = (futures.reshape(-1, 2).max(0) + 1e-3).tolist()
        if self.cfg.method == "anchored":
            flat = self.normalize(torch.as_tensor(futures)).numpy()
            self.anchors.copy_(torch.as_tensor(kmeans(flat, self.cfg.n_anchors, seed=seed), dtype=torch.float32))

    # ------------------------------------------------------------------ training
    def loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        cfg, obs = self.cfg, batch["obs"]
        gt = self.normalize(batch["future"])  # (B, W*2)
        B = gt.shape[0]
        mem, pad = self.net.encode(obs["ego"], obs["agents"])
        if cfg.method == "regression":
            outs = self.net.decode(mem, pad, torch.zeros(B, 1, gt.shape[-1]), torch.zeros(B))
            return sum(cfg.reg_weight * (traj[:, 0] - gt).abs().mean() for traj, _ in outs)
        if cfg.method == "vanilla":
            t = torch.randint(0, cfg.num_train_timesteps, (B,), generator=generator)
            noise = torch.randn(gt.shape, generator=generator)
            eps = cfg.prediction_type == "epsilon"
            outs = self.net.decode(mem, pad, self.schedule.add_noise(gt, noise, t)[:, None], t, residual=not eps)
            if eps:
                return sum(F.mse_loss(pred[:, 0], noise) for pred, _ in outs)
            return sum(cfg.reg_weight * (traj[:, 0] - gt).abs().mean() for traj, _ in outs)
        t = torch.randint(0, cfg.train_t_max, (B,), generator=generator)
        anchors = self.anchors.expand(B, -1, -1)
        noise = torch.randn(anchors.shape, generator=generator)
        target = (anchors - gt[:, None]).abs().mean(-1).argmin(1)  # nearest anchor (B,)
        onehot = F.one_hot(target, cfg.n_anchors).float()
        outs = self.net.decode(mem, pad, self.schedule.add_noise(anchors, noise, t), t)
        total = 0.0
        for traj, logits in outs:
            chosen = traj[torch.arange(B), target]
            total = total + cfg.cls_weight * focal_loss(logits, onehot) + cfg.reg_weight * (chosen - gt).abs().mean()
        return total

    def forward(self, batch: dict, **kw) -> torch.Tensor:
        return self.loss(batch, **kw)

    def param_groups(self, weight_decay: float) -> list[dict]:
        return self.net.optim_groups(weight_decay)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def plan(self, obs: dict, n_steps: int | None = None, n_samples: int = 1) -> Plan:
        """Plan for a batch of observations (numpy or torch, with batch dim).

        anchored: the K anchors through the truncated levels ``cfg.infer_ts`` (``n_steps`` must
        be None or equal to their number); vanilla: ``n_samples`` trajectories from pure noise
        with ``n_steps`` DDIM steps (default 20); regression: one trajectory.
        """
        cfg = self.cfg
        ego = torch.as_tensor(np.asarray(obs["ego"]), dtype=torch.float32)
        agents = torch.as_tensor(np.asarray(obs["agents"]), dtype=torch.float32)
        mem, pad = self.net.encode(ego, agents)  # once per plan: the scene does not depend on t
        B, D = ego.shape[0], cfg.n_waypoints * 2
        if cfg.method == "regression":
            x = self.net.decode(mem, pad, torch.zeros(B, 1, D), torch.zeros(B))[-1][0]
            logits = torch.zeros(B, 1)
        else:
            if cfg.method == "anchored":
                if n_steps not in (None, len(cfg.infer_ts)):
                    raise ValueError(f"the anchored planner runs its {len(cfg.infer_ts)} truncated steps "
                                     f"{cfg.infer_ts}; got n_steps={n_steps}")
                x = self.anchors.expand(B, -1, -1)
                plan = StepPlan.through(self.sampler, list(cfg.infer_ts), start_level=cfg.infer_ts[0])
                noise = draw_noise(self.gen, self.sampler, plan, [tuple(x.shape)])
            else:
                plan = StepPlan.through(self.sampler, self.sampler.grid(20 if n_steps is None else n_steps))
                (x,) = draw_start(self.gen, [(B, n_samples, D)])
                noise = None
            Q = x.shape[1]
            mem_q, pad_q = (mem.repeat_interleave(Q, 0), pad.repeat_interleave(Q, 0)) if cfg.method == "vanilla" \
                else (mem, pad)
            if cfg.method == "vanilla":  # samples are independent: one query each
                x = x.reshape(B * Q, 1, D)
            last = {}

            def model(x, i):
                out, last["logits"] = self.net.decode(mem_q, pad_q, x, torch.full((x.shape[0],), float(plan.pairs[i][0])),
                                                      residual=cfg.prediction_type == "sample")[-1]
                return out
            x = denoise(model, self.sampler, x, plan, noise)
            logits = last["logits"]
            x = x.reshape(B, Q, D)
            logits = logits.reshape(B, Q) if cfg.method == "anchored" else torch.zeros(B, Q)
        trajs = self.unnormalize(x).numpy()
        return Plan(trajs=trajs, scores=logits.sigmoid().numpy())
