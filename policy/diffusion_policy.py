"""The chunk policy: observations in robot units in, an action chunk in robot units out.

    policy.reset()
    actions = policy.predict_chunk({"robot0_eef_pos": (To, 3), ...})   # (T, A)
    executed = actions[policy.n_obs_steps - 1 : policy.n_obs_steps - 1 + policy.n_action_steps]

Normalizer, sampler and step count are configuration (``PolicyConfig``), not subclasses.
Training uses the same sampler object (``loss``): a flow-trained policy samples with flow,
a diffusion-trained one with DDPM, DDIM or DPM-Solver++ on its schedule."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dpctrl.policy import checkpoint
from dpctrl.policy.accel.runners import make_runner
from dpctrl.policy.accel.warmstart import WarmStart, WarmStartConfig
from dpctrl.policy.chunking import COMMITTED, Prefix
from dpctrl.policy.denoise import InpaintGuide, StepPlan, denoise, draw_noise, draw_start
from dpctrl.policy.guidance import guide_for, most_coherent
from dpctrl.policy.prefix import draw_flags, masked_mse
from dpctrl.policy.interface import ChunkShape, finite_actions, validate_obs
from dpctrl.policy.noise import ROWS_MIN, EpisodeNoise
from dpctrl.policy.nets.transformer import Transformer, TransformerConfig
from dpctrl.policy.nets.vision import ImageEncoder
from dpctrl.policy.normalizer import Normalizer
from dpctrl.policy.samplers import Sampler, check_sampler, make_sampler
from dpctrl.policy.schedule import NoiseSchedule

@dataclass
class PolicyConfig:
    obs_dims: dict[str, int]  # low-dim observation keys -> size, concatenated in this order
    action_dim: int
    image_keys: list[str] = field(default_factory=list)
    image_size: int = 84
    image_crop: int = 76
    image_feature_dim: int = 64
    image_widths: list[int] = field(default_factory=lambda: [32, 64, 128])  # encoder stage widths
    n_obs_steps: int = 2
    horizon: int = 16
    n_action_steps: int = 8
    n_layer: int = 8
    n_head: int = 4
    n_emb: int = 256
    n_cond_layers: int = 0
    p_drop_emb: float = 0.0
    p_drop_attn: float = 0.01
    schedule: str = "squaredcos_cap_v2"
    num_train_timesteps: int = 100
    prediction_type: str = "epsilon"
    family: str = "diffusion"  # or "flow"
    sampler: str = "ddim"
    num_inference_steps: int = 10
    clip_sample: bool = True
    discrete_action_dims: list[int] = field(default_factory=list)  # e.g. the gripper
    # RTI-DP's "scale" mode: discrete dims live at +-1/f in the diffusion space (set before
    # training; 1 = off), so a warm-start guess's gripper error is small relative to noise
    discrete_scale: float = 1.0
    prefix_max: int = 0  # trained on clean committed prefixes of 0..prefix_max actions (policy/prefix.py)

    def __post_init__(self):
        if self.family not in ("diffusion", "flow"):
            raise ValueError(f"family must be 'diffusion' or 'flow', got {self.family!r}")
        check_sampler(self.family, self.sampler)
        if not 1 <= self.n_action_steps <= self.horizon - self.n_obs_steps + 1:
            raise ValueError("need 1 <= n_action_steps <= horizon - n_obs_steps + 1")
        if not 0 <= self.prefix_max <= self.horizon - self.n_obs_steps:  # room for one action to learn
            raise ValueError(f"prefix_max must be in 0..{self.horizon - self.n_obs_steps}, got {self.prefix_max}")
        if self.discrete_scale < 1.0:
            raise ValueError(f"discrete_scale (f) must be >= 1, got {self.discrete_scale}")

    def to_dict(self) -> dict:
        return asdict(self)


class DiffusionPolicy(ChunkShape, checkpoint.ConfigCheckpoint, nn.Module):
    """A transformer diffusion policy (DP-T). Acceleration is configuration: ``set_sampler``,
    ``set_warm_start`` (RTI, policy/accel/warmstart.py), ``set_cache`` (BAC,
    policy/accel/cache.py), ``set_deploy`` (a runner, policy/accel/runners.py)."""
    FORMAT, VERSION, SECTION, CONFIG = "dpctrl-policy", 1, "policy", PolicyConfig

    def __init__(self, cfg: PolicyConfig, normalizer: Normalizer | None = None, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.encoders = nn.ModuleDict({k.replace(".", "_"): ImageEncoder(cfg.image_crop, widths=tuple(cfg.image_widths),
                                                                          out_dim=cfg.image_feature_dim)
                                       for k in cfg.image_keys})
        self.cond_dim = cond_dim = sum(cfg.obs_dims.values()) + cfg.image_feature_dim * len(cfg.image_keys)
        self.net = Transformer(TransformerConfig(
            action_dim=cfg.action_dim, cond_dim=cond_dim, horizon=cfg.horizon, n_obs_steps=cfg.n_obs_steps,
            n_layer=cfg.n_layer, n_head=cfg.n_head, n_emb=cfg.n_emb, n_cond_layers=cfg.n_cond_layers,
            p_drop_emb=cfg.p_drop_emb, p_drop_attn=cfg.p_drop_attn, prefix_flag=cfg.prefix_max > 0))
        self.schedule = NoiseSchedule(cfg.schedule, cfg.num_train_timesteps)
        self.normalizer = normalizer
        self.generator = torch.Generator().manual_seed(seed)
        self.episodes = EpisodeNoise(seed)  # per-episode streams, when reset(seeds=...) starts them
        self.nfe_last = 0  # network calls of the last prediction (counted, not assumed)
        self.warm: WarmStart | None = None
        self.cache = None  # a policy.accel.cache hook (BlockCache / BlockRecorder) or None
        self.runner = make_runner(self, None)
        self.set_sampler(cfg.sampler, cfg.num_inference_steps)

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_tensors(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Weights (``dtype=torch.float16`` halves the file) and the normalizer's tensors."""
        if self.normalizer is None:
            raise checkpoint.CheckpointError("policy has no normalizer; fit one before saving")
        tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
                   for k, v in self.state_dict().items()}
        tensors.update({f"normalizer.{k}": v.contiguous() for k, v in self.normalizer.state_dict().items()})
        return tensors

    @classmethod
    def from_checkpoint(cls, cfg: PolicyConfig, tensors: dict, seed: int = 0):
        norm = {k[len("normalizer."):]: v.float() for k, v in tensors.items() if k.startswith("normalizer.")}
        state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()
                 if not k.startswith("normalizer.")}
        return cls(cfg, Normalizer.from_state_dict(norm), seed=seed), state

    # ---------------------------------------------------------------- configuration
    def set_sampler(self, name: str, n_steps: int) -> None:
        check_sampler(self.cfg.family, name)
        kw = {} if self.cfg.family == "flow" else {"prediction_type": self.cfg.prediction_type,
                                        "clip_sample": self.cfg.clip_sample}
        self.sampler: Sampler = make_sampler(name, self.schedule, **kw)
        self.sampler.grid(n_steps)  # validates the step count now, not at the first prediction
        self.cfg.sampler, self.cfg.num_inference_steps = name, n_steps
        self._reprepare()

    def _reprepare(self) -> None:
        """A captured runner bakes in the sampler, warm start and cache: rebuild its captures
        now, so that a control loop never captures mid-episode (and a configuration that cannot
        be captured fails here)."""
        self.runner.release()
        self.runner.prepare()

    def set_warm_start(self, cfg: WarmStartConfig | None) -> None:
        """RTI warm starts on (a config) or off (None). Discrete dims default to the policy's."""
        if cfg is not None and not cfg.discrete_dims:
            cfg.discrete_dims = list(self.cfg.discrete_action_dims)
        if cfg is not None and self.cfg.family == "diffusion" and cfg.start_t >= self.cfg.num_train_timesteps:
            raise ValueError(f"warm-start level K'={cfg.start_t} must be < {self.cfg.num_train_timesteps}")
        if cfg is not None and cfg.discrete_mode == "scale" and self.cfg.discrete_scale == 1.0:
            raise ValueError("discrete_mode 'scale' needs a policy trained with discrete_scale > 1")
        self.warm = WarmStart(cfg) if cfg is not None else None
        self._reprepare()

    def warm_plan(self) -> StepPlan:
        """The step plan of a warm-started run under the current warm start."""
        return self.warm.plan(self.sampler, self.cfg.num_inference_steps, self.cfg.num_train_timesteps,
                              self.cfg.family)

    def cold_plan(self) -> StepPlan:
        return StepPlan.of(self.sampler, self.cfg.num_inference_steps)

    def set_cache(self, cache) -> None:
        """Route every transformer branch through ``cache`` (None: plain calls, zero overhead)."""
        if cache is not None and not self.runner.allows_cache:
            raise ValueError("a block cache needs the eager denoiser; call set_deploy(None) first")
        self.cache = cache
        self.net.branch_hook = cache
        self._reprepare()

    def set_deploy(self, kind: str | None, batch: int = 1, precision: str = "fp32", compile: bool = False,
                   fused: bool = False) -> None:
        """How the denoiser runs; weights and checkpoints are unaffected.
        - None: eager;
        - ``"torchscript"``: a frozen trace of the network for ``batch`` rows (CPU deploy path);
        - ``"cuda_graph"``: whole chunks captured as CUDA graphs for ``batch`` rows at
          ``precision`` fp32 | tf32 | bf16 (GPU path, policy/accel/graph.py). Move the policy
          to its CUDA device first; the cold and RTI chunks are captured here. ``compile``: the
          network goes through torch.compile before capture (not with a block cache); ``fused``:
          each step's decoder runs as Triton kernels (policy/accel/fused.py; fp32 or tf32, not
          with a block cache).
        - ``"static"``: the CUDA-graph path's static buffers without capture (any device)."""
        self.runner.release()  # free captured graphs now, not at a later collection
        self.runner = make_runner(self, None)
        runner = make_runner(self, kind, batch, precision, compile, fused)
        runner.prepare()
        self.runner = runner

    @property
    def deploy(self) -> str:
        return self.runner.name

    def describe(self) -> dict:
        return {"sampler": self.cfg.sampler, "num_inference_steps": self.cfg.num_inference_steps,
                "warm_start": None if self.warm is None else vars(self.warm.cfg),
                "cache": None if self.cache is None else getattr(self.cache, "kind", type(self.cache).__name__),
                "deploy": self.deploy, "config": self.cfg.to_dict()}

    def note_executed(self, n: int, ids: list[int] | None = None) -> None:
        """How many actions of the last chunk ran since it was predicted (for the warm start)."""
        if self.warm is not None:
            self.warm.note_executed(n, ids)

    def reset(self, ids: list[int] | None = None, seeds: list[int] | None = None) -> None:
        """Start of an episode: forget the state carried between chunks (of ``ids`` only, if given).
        ``seeds``: each row's episode seed; its actions then depend on it alone (policy/noise.py)."""
        self.nfe_last = 0
        if self.warm is not None:
            self.warm.reset(ids)
        self.episodes.reset(ids, seeds)
        self.net.min_rows = ROWS_MIN if self.episodes.streams else 0

    # ---------------------------------------------------------------- observations and actions
    def expected_obs(self) -> dict[str, tuple[int, ...]]:
        To = self.cfg.n_obs_steps
        shapes = {k: (To, d) for k, d in self.cfg.obs_dims.items()}
        shapes.update({k: (To, self.cfg.image_size, self.cfg.image_size, 3) for k in self.cfg.image_keys})
        return shapes

    def validate_obs(self, obs: Mapping[str, np.ndarray | torch.Tensor], batched: bool = False) -> None:
        validate_obs(self.expected_obs(), obs, batched)

    def encode_obs(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """{key: (B, To, ...)} in robot units -> conditioning tokens (B, To, cond_dim)."""
        parts = [self.normalizer.normalize(k, obs[k].float()) for k in self.cfg.obs_dims]
        for k in self.cfg.image_keys:
            img = obs[k]
            B, To = img.shape[:2]
            parts.append(self.encoders[k.replace(".", "_")](img.flatten(0, 1)).view(B, To, -1))
        return torch.cat(parts, dim=-1)

    def _per_device(self, name: str, like: torch.Tensor, build) -> torch.Tensor:
        """A small constant tensor built once per device and dtype: indexing with a host list
        copies the index to the device on every call (a synchronizing copy, and one a CUDA
        graph cannot capture)."""
        cache = self.__dict__.setdefault("_consts", {})
        key = (name, like.device, like.dtype)
        if key not in cache:
            cache[key] = build().to(like.device)
        return cache[key]

    def _discrete_factor(self, x: torch.Tensor) -> torch.Tensor:
        def build():
            f = torch.ones(x.shape[-1], dtype=x.dtype)
            f[self.cfg.discrete_action_dims] = 1.0 / self.cfg.discrete_scale
            return f
        return self._per_device("discrete_factor", x, build)

    def _binarize(self, actions: torch.Tensor) -> torch.Tensor:
        """Discrete dimensions of actions in robot units to +-1 by their sign (warm starts)."""
        def build():
            m = torch.zeros(actions.shape[-1], dtype=torch.bool)
            m[self.warm.cfg.discrete_dims] = True
            return m
        mask = self._per_device("binarize_mask", actions, build)
        return torch.where(mask, torch.where(actions >= 0, 1.0, -1.0).to(actions.dtype), actions)

    def normalize_actions(self, a: torch.Tensor) -> torch.Tensor:
        """Robot units -> the diffusion space: min-max to [-1, 1], discrete dims times 1/f."""
        x = self.normalizer.normalize("action", a)
        return x * self._discrete_factor(x) if self.cfg.discrete_scale != 1.0 else x

    def unnormalize_actions(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.discrete_scale != 1.0:
            x = x / self._discrete_factor(x)
        return self.normalizer.unnormalize("action", x)

    # ---------------------------------------------------------------- training
    def forward(self, batch: Mapping, noise: torch.Tensor | None = None,
                t: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss (so that DistributedDataParallel's forward sees it)."""
        return self.loss(batch, noise=noise, t=t)

    def loss(self, batch: Mapping, generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
             t: torch.Tensor | None = None) -> torch.Tensor:
        """Denoising loss on a batch {"obs": {key: (B, To, ...)}, "action": (B, T, A)}; the
        noise and timesteps are drawn from ``generator`` unless given (a shard of a global draw)."""
        cond = self.encode_obs(batch["obs"])
        x0 = self.normalize_actions(batch["action"].float())
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        if t is None:
            t = self.sampler.train_timesteps(x0.shape[0], generator=generator, device=x0.device)
        noisy, target = self.sampler.noisy(x0, noise, t), self.sampler.target(x0, noise, t)
        if not self.cfg.prefix_max:
            return F.mse_loss(self.net(noisy, self.sampler.model_time(t), cond), target)
        flags = draw_flags(*x0.shape[:2], self.cfg.n_obs_steps - 1, self.cfg.prefix_max, generator, x0.device)
        noisy = torch.where(flags[..., None], x0, noisy)  # the committed prefix enters clean
        return masked_mse(self.net(noisy, self.sampler.model_time(t), cond, flags), target, flags)

    def param_groups(self, weight_decay: float) -> list[dict]:
        groups = self.net.optim_groups(weight_decay)
        enc = list(self.encoders.parameters())
        return groups + ([{"params": enc, "weight_decay": weight_decay}] if enc else [])

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def sample(self, cond: torch.Tensor, x: torch.Tensor | None = None, plan: StepPlan | None = None,
               guide: InpaintGuide | None = None) -> torch.Tensor:
        """One run from conditioning ``cond`` (B, To, cond_dim): from pure noise on the
        sampler's grid, or from ``x`` on ``plan``. Returns normalized actions (B, T, A) and
        counts network calls in ``nfe_last``. Every draw is made first, on the host, from
        ``self.generator`` (the same numbers in the same order on every device and path)."""
        shape = (cond.shape[0], self.cfg.horizon, self.cfg.action_dim)
        if x is None:
            (x,) = draw_start(self.generator, [shape])
        plan = plan or self.cold_plan()
        noise = draw_noise(self.generator, self.sampler, plan, [shape], guide and guide.noise_shape).to(cond.device)
        x = self.runner.run(x.to(cond.device), cond, plan, noise, guide)
        self.nfe_last = len(plan)
        return x

    def denoise_tensors(self, x, cond, plan: StepPlan, noise, guide=None, denoiser=None, times=None):
        """The denoising run from device tensors (policy/denoise.py). ``denoiser``: the network
        to call (default the eager one); ``times``: its per-step time inputs (default the plan's
        floats). A denoiser with ``run_memory`` gets the run's cross-attention memory once and
        is called as ``decode(x, memory[i])``, one with ``decode_step`` (the fused kernels)
        also applies the sampler's affine step (DDIM)."""
        net = self.net if denoiser is None else denoiser
        times = plan.net_times if times is None else times
        memory = net.run_memory(times, cond) if hasattr(net, "run_memory") else None
        if memory is None:  # flags: a prefix-trained network's committed tokens (policy/prefix.py)
            model = lambda x, i, **flags: net(x, times[i], cond, **flags)  # noqa: E731
        else:
            model = lambda x, i, **flags: net.decode(x, memory[i], **flags)  # noqa: E731
        fused = (lambda x, i, step: net.decode_step(x, memory[i], step)) \
            if memory is not None and hasattr(net, "decode_step") else None
        return denoise(model, self.sampler, x, plan, noise, guide, hook=self.cache, fused_step=fused)

    def chunk_tensors(self, obs, x, plan: StepPlan, noise, guide=None, denoiser=None,
                      times=None) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk from device tensors to device tensors, no host reads and no random draws
        (what the GPU path captures whole): observations in robot units -> conditioning; the
        run; the actions in robot units (discrete dimensions binarized with a warm start that
        asks for it). Returns (normalized sample, actions)."""
        x = self.denoise_tensors(x, self.encode_obs(obs), plan, noise, guide, denoiser, times)
        actions = self.unnormalize_actions(x)
        if self.warm is not None and self.warm.cfg.binarize and self.warm.cfg.discrete_dims:
            actions = self._binarize(actions)
        return x, actions

    @property
    def overlap_modes(self) -> tuple[str, ...]:
        """What predict_batch's ``committed`` can ask for (``prefix``: a prefix-trained network)."""
        return COMMITTED if self.cfg.prefix_max else tuple(m for m in COMMITTED if m != "prefix")

    @torch.no_grad()
    def predict_batch(self, obs: Mapping[str, np.ndarray | torch.Tensor],
                      committed: np.ndarray | None = None, ids: list[int] | None = None) -> np.ndarray:
        """{key: (B, To, ...)} -> actions (B, T, A) in robot units. ``committed``: actions
        ``(d, A)`` or ``(B, d, A)`` already scheduled from the previous chunk, to inpaint the new
        prefix, or a ``Prefix`` (``guide_for``; mode ``bid``: ``samples`` candidates per row, the
        most coherent with the prefix kept). ``ids``: which env each row is (for warm starts
        across a changing batch)."""
        self.validate_obs(obs, batched=True)
        tobs = self.runner.upload(obs)
        B = next(iter(tobs.values())).shape[0]
        ids = list(range(B)) if ids is None else list(ids)
        bid = committed if isinstance(committed, Prefix) and committed.mode == "bid" else None
        if bid is not None and np.asarray(bid.actions).size:
            return self._predict_bid(tobs, bid, ids)
        x, actions = self._run(tobs, B, ids, None if bid is not None else guide_for(self, committed, B))
        if self.warm is not None:
            self.warm.store(ids, x)
        return finite_actions(self.runner.download(actions))  # never hand a NaN to a robot

    def _run(self, tobs: dict, B: int, ids: list[int], guide, copies: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``B`` rows (each ``copies`` times in a row), cold or warm: (normalized sample, actions)."""
        device = next(iter(tobs.values())).device
        if guide is not None:
            weights = getattr(guide, "weights", None)
            guide = replace(guide, target=guide.target.to(device),
                            **({} if weights is None else {"weights": weights.to(device)}))
        shape = (B * copies, self.cfg.horizon, self.cfg.action_dim)
        guess = self.warm.guess(ids, self.cfg.n_action_steps) if self.warm is not None else None
        source = self.episodes.source(self.generator, ids, copies)
        if guess is None:
            (x,), plan = draw_start(source, [shape]), self.cold_plan()
        else:
            x, plan = guess.repeat_interleave(copies, 0), self.warm_plan()
        if copies > 1:
            tobs = {k: v.repeat_interleave(copies, 0) for k, v in tobs.items()}
        noise = draw_noise(source, self.sampler, plan, [shape], guide and guide.noise_shape).to(device)
        x, actions = self.runner.chunk(tobs, x.to(device), plan, noise, guide)
        self.nfe_last = len(plan)
        return x, actions

    def _predict_bid(self, tobs: dict, prefix: Prefix, ids: list[int]) -> np.ndarray:
        """Bidirectional decoding (backward half): ``prefix.samples`` candidates per row in one
        batched pass, per row the one most coherent with the prefix (policy/guidance.py)."""
        cfg, B, N = self.cfg, len(ids), prefix.samples
        x, actions = self._run(tobs, B, ids, None, copies=N)
        acts = finite_actions(self.runner.download(actions)).reshape(B, N, cfg.horizon, cfg.action_dim)
        pick = most_coherent(self, acts, prefix)
        if self.warm is not None:
            self.warm.store(ids, x[torch.as_tensor(np.arange(B) * N + pick, device=x.device)])
        return acts[np.arange(B), pick]

    def predict_chunk(self, obs_window: Mapping[str, np.ndarray], committed: np.ndarray | None = None) -> np.ndarray:
        """{key: (To, ...)} -> actions (T, A) in robot units (see ``predict_batch``)."""
        self.validate_obs(obs_window)
        return self.predict_batch({k: np.asarray(obs_window[k])[None] for k in self.expected_obs()}, committed)[0]
