"""The chunk policy: observations in robot units in, an action chunk in robot units out.

    policy.reset()
    actions = policy.predict_chunk({"robot0_eef_pos": (To, 3), ...})   # (T, A)
    executed = actions[policy.n_obs_steps - 1 : policy.n_obs_steps - 1 + policy.n_action_steps]

Normalizer, sampler and step count are configuration (``PolicyConfig``), not subclasses.
Training uses the same sampler object (``loss``), so a flow-trained policy samples with
flow and a diffusion-trained one with DDPM, DDIM or DPM-Solver++ on its schedule.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dpctrl.policy.accel.warmstart import WarmStart, WarmStartConfig
from dpctrl.policy.nets.transformer import Transformer, TransformerConfig
from dpctrl.policy.nets.vision import ImageEncoder
from dpctrl.policy.normalizer import Normalizer
from dpctrl.policy.samplers import Sampler, make_sampler
from dpctrl.policy.schedule import NoiseSchedule

DIFFUSION_SAMPLERS = ("ddpm", "ddim", "dpmpp")


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

    def __post_init__(self):
        if self.family not in ("diffusion", "flow"):
            raise ValueError(f"family must be 'diffusion' or 'flow', got {self.family!r}")
        check_sampler(self.family, self.sampler)
        if not 1 <= self.n_action_steps <= self.horizon - self.n_obs_steps + 1:
            raise ValueError("need 1 <= n_action_steps <= horizon - n_obs_steps + 1")
        if self.discrete_scale < 1.0:
            raise ValueError(f"discrete_scale (f) must be >= 1, got {self.discrete_scale}")

    def to_dict(self) -> dict:
        return asdict(self)


def check_sampler(family: str, sampler: str) -> None:
    ok = DIFFUSION_SAMPLERS if family == "diffusion" else ("flow",)
    if sampler not in ok:
        raise ValueError(f"a {family}-trained policy samples with {list(ok)}, not {sampler!r}")


class ChunkShape:
    """The chunk geometry every chunk policy exposes to loops and evaluators, from ``self.cfg``."""

    @property
    def n_obs_steps(self) -> int:
        return self.cfg.n_obs_steps

    @property
    def horizon(self) -> int:
        return self.cfg.horizon

    @property
    def n_action_steps(self) -> int:
        return self.cfg.n_action_steps


class DiffusionPolicy(ChunkShape, nn.Module):
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
            p_drop_emb=cfg.p_drop_emb, p_drop_attn=cfg.p_drop_attn))
        self.schedule = NoiseSchedule(cfg.schedule, cfg.num_train_timesteps)
        self.normalizer = normalizer
        self.set_sampler(cfg.sampler, cfg.num_inference_steps)
        self.generator = torch.Generator().manual_seed(seed)
        self.nfe_last = 0  # network calls of the last prediction (counted, not assumed)
        self.warm: WarmStart | None = None
        self.cache = None  # a policy.accel.cache hook (BlockCache / BlockRecorder) or None
        object.__setattr__(self, "_traced", None)  # set_deploy("torchscript"): a frozen trace
        object.__setattr__(self, "_graphs", None)  # set_deploy("cuda_graph"): captured runs

    # ---------------------------------------------------------------- configuration
    def set_sampler(self, name: str, n_steps: int) -> None:
        check_sampler(self.cfg.family, name)
        kw = {} if name == "flow" else {"prediction_type": self.cfg.prediction_type,
                                        "clip_sample": self.cfg.clip_sample}
        self.sampler: Sampler = make_sampler(name, self.schedule, **kw)
        self.sampler.grid(n_steps)  # validates the step count now, not at the first prediction
        self.cfg.sampler, self.cfg.num_inference_steps = name, n_steps
        self._drop_captured()

    def _drop_captured(self) -> None:
        """Captured runs (set_deploy("cuda_graph")) bake in the sampler, warm start and cache:
        drop them and capture the new configuration's cold and RTI runs now, so that a control
        loop never captures mid-episode (and a configuration that cannot be captured fails here)."""
        if getattr(self, "_graphs", None) is not None:
            self._graphs.clear()
            self._graphs.prepare()

    def set_warm_start(self, cfg: WarmStartConfig | None) -> None:
        """RTI warm starts on (a config) or off (None). Discrete dims default to the policy's."""
        if cfg is not None and not cfg.discrete_dims:
            cfg.discrete_dims = list(self.cfg.discrete_action_dims)
        if cfg is not None and self.cfg.family == "diffusion" and cfg.start_t >= self.cfg.num_train_timesteps:
            raise ValueError(f"warm-start level K'={cfg.start_t} must be < {self.cfg.num_train_timesteps}")
        if cfg is not None and cfg.discrete_mode == "scale" and self.cfg.discrete_scale == 1.0:
            raise ValueError("discrete_mode 'scale' needs a policy trained with discrete_scale > 1")
        self.warm = WarmStart(cfg) if cfg is not None else None
        self._drop_captured()

    def set_cache(self, cache) -> None:
        """Route every transformer branch through ``cache`` (None: plain calls, zero overhead)."""
        if cache is not None and self._traced is not None:
            raise ValueError("a block cache needs the eager denoiser; call set_deploy(None) first")
        self.cache = cache
        self.net.branch_hook = cache
        self._drop_captured()

    def set_deploy(self, kind: str | None, batch: int = 1, precision: str = "fp32", compile: bool = False,
                   fused: bool = False) -> None:
        """How the denoiser runs; weights and checkpoints are unaffected.
        - None: eager;
        - ``"torchscript"``: a frozen trace of the network for ``batch`` rows (CPU deploy path,
          policy/accel/deploy.py);
        - ``"cuda_graph"``: whole chunks captured as CUDA graphs for ``batch`` rows at
          ``precision`` fp32 | tf32 | bf16 (GPU path, policy/accel/graph.py). Move the policy
          to its CUDA device first; the cold and RTI chunks are captured here. ``compile``: the
          network goes through torch.compile before capture (not with a block cache); ``fused``:
          each step's decoder runs as Triton kernels (policy/accel/fused.py; fp32 or tf32, not
          with a block cache).
        - ``"static"``: the CUDA-graph path's static buffers without capture (any device; for
          checking that path where no GPU is present)."""
        if self._graphs is not None:
            self._graphs.clear()  # free the captured graphs now, not at a later collection
        object.__setattr__(self, "_traced", None)
        object.__setattr__(self, "_graphs", None)
        if kind is None:
            return
        if kind == "torchscript":
            if precision != "fp32" or compile or fused:
                raise ValueError("the TorchScript deploy path is float32, uncompiled and unfused only")
            from dpctrl.policy.accel.deploy import TracedDenoiser
            traced = TracedDenoiser(self.net, batch, self.cfg.horizon, self.cfg.action_dim,
                                    (self.cfg.n_obs_steps, self.cond_dim))
            object.__setattr__(self, "_traced", traced)  # not a submodule: state_dict stays the eager one
            return
        if kind not in ("cuda_graph", "static"):
            raise ValueError(f"unknown deploy path {kind!r}; known: torchscript, cuda_graph, static")
        from dpctrl.policy.accel.graph import GraphDeploy
        graphs = GraphDeploy(self, batch, precision, graph=kind == "cuda_graph", compile=compile, fused=fused)
        object.__setattr__(self, "_graphs", graphs)
        graphs.prepare()

    @property
    def deploy(self) -> str:
        if self._traced is not None:
            return "torchscript"
        if self._graphs is not None:
            g = self._graphs
            return (f"{'cuda_graph' if g.graph else 'static'}-{g.precision}"
                    f"{'+compile' if g.compiled is not None else ''}{'+fused' if g.fused is not None else ''}")
        return "eager"

    def note_executed(self, n: int, ids: list[int] | None = None) -> None:
        """How many actions of the last chunk ran since it was predicted (for the warm start)."""
        if self.warm is not None:
            self.warm.note_executed(n, ids)

    def reset(self, ids: list[int] | None = None) -> None:
        """Start of an episode: forget any state carried between chunks (of ``ids`` only, if given)."""
        self.nfe_last = 0
        if self.warm is not None:
            self.warm.reset(ids)

    def _rti_pairs(self) -> tuple[list, list]:
        """((t, t_next) pairs, network times) of a warm-started run (no guess needed)."""
        w = self.warm.cfg
        if self.cfg.family == "flow":
            level = w.start_t / self.cfg.num_train_timesteps
            pairs = self.sampler.steps(self.cfg.num_inference_steps, start_t=level)
            return pairs, [self.sampler.model_time(t) for t, _ in pairs]
        if w.tail == "coarse":
            pairs = self.sampler.steps(self.cfg.num_inference_steps, start_t=w.start_t)
            return pairs, [self.sampler.model_time(t) for t, _ in pairs]
        fine = self.sampler.steps(self.cfg.num_train_timesteps, start_t=w.start_t)
        if w.reproduce:
            coarse = self.sampler.grid(self.cfg.num_inference_steps)[-len(fine):]
            coarse = [coarse[0]] * (len(fine) - len(coarse)) + coarse
            return fine, [float(t) for t in coarse]
        return fine, [self.sampler.model_time(t) for t, _ in fine]

    def _rti_start(self) -> tuple[list, list, object]:
        """((t, t_next) pairs, network times, the level a stored guess is noised to or None) of
        a warm-started run."""
        w = self.warm.cfg
        pairs, net_times = self._rti_pairs()
        level = None
        if w.noise:
            level = w.start_t / self.cfg.num_train_timesteps if self.cfg.family == "flow" else w.start_t
            if level == self.sampler.clean:
                level = None  # a clean level: the guess as it is, no noise drawn
        return pairs, net_times, level

    def _rti_run(self, guess: torch.Tensor) -> tuple[torch.Tensor, list, list]:
        """(start sample, (t, t_next) pairs, network times) of a warm-started run."""
        pairs, net_times, level = self._rti_start()
        return (guess if level is None else self._noised(guess, level)), pairs, net_times

    # ---------------------------------------------------------------- observations
    def expected_obs(self) -> dict[str, tuple[int, ...]]:
        To = self.cfg.n_obs_steps
        shapes = {k: (To, d) for k, d in self.cfg.obs_dims.items()}
        shapes.update({k: (To, self.cfg.image_size, self.cfg.image_size, 3) for k in self.cfg.image_keys})
        return shapes

    def validate_obs(self, obs: Mapping[str, np.ndarray | torch.Tensor], batched: bool = False) -> None:
        """ValueError naming the key for a missing key, wrong shape, non-numeric dtype or NaN/Inf."""
        for k, shape in self.expected_obs().items():
            if k not in obs:
                raise ValueError(f"observation is missing key {k!r} (expected shape {shape})")
            v = obs[k]
            got = tuple(v.shape[1:] if batched else v.shape)
            if got != shape:
                raise ValueError(f"observation {k!r}: expected shape {'(B, ) + ' if batched else ''}{shape}, got {got}")
            kind = v.dtype.kind if isinstance(v, np.ndarray) else ("f" if v.is_floating_point() else "u")
            if kind not in "biuf":
                raise ValueError(f"observation {k!r}: dtype {v.dtype} is not numeric")
            if not bool(np.isfinite(np.asarray(v, dtype=np.float64)).all()):
                raise ValueError(f"observation {k!r} contains NaN/Inf")

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
        out = self.net(self.sampler.noisy(x0, noise, t), self.sampler.model_time(t), cond)
        return F.mse_loss(out, self.sampler.target(x0, noise, t))

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def sample(self, cond: torch.Tensor, x: torch.Tensor | None = None, start=None,
               n_steps: int | None = None, guide: tuple[torch.Tensor, torch.Tensor] | None = None,
               pairs: list | None = None, net_times: list | None = None) -> torch.Tensor:
        """Run the sampler from ``x`` at level ``start`` (pure noise at the top if None).
        ``guide = (target (B, T, A) normalized, weights (T,))`` inpaints: after every step the
        sample is pulled toward the target forward-diffused to the new level, by the weights
        (1: replace, 0: free), so the chunk's prefix follows actions already committed.
        Returns normalized actions (B, T, A) and counts network calls in ``nfe_last``.

        All noise of the run is drawn first, on the host, from ``self.generator`` (the same
        numbers in the same order on every device and deploy path); ``_denoise`` is then a
        pure function of its tensors, which is what a CUDA graph captures."""
        B = cond.shape[0]
        shape = (B, self.cfg.horizon, self.cfg.action_dim)
        if x is None:
            x = torch.randn(shape, generator=self.generator).to(cond.device)
        if pairs is None:
            pairs = self.sampler.steps(n_steps or self.cfg.num_inference_steps, start_t=start)
        if net_times is None:
            net_times = [self.sampler.model_time(t) for t, _ in pairs]
        step_noise, guide_noise = self._draw_noise(shape, pairs, guide)
        step_noise = None if step_noise is None else step_noise.to(cond.device)
        guide_noise = None if guide_noise is None else guide_noise.to(cond.device)
        if self._graphs is not None:
            x = self._graphs.run(x, cond, pairs, net_times, step_noise, guide_noise, guide)
        else:
            x = self._denoise(x, cond, pairs, net_times, step_noise, guide_noise, guide)
        self.nfe_last = len(pairs)
        return x

    def _draw_noise(self, shape, pairs, guide) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Per-step noise of a run, stacked ``(n_steps, ...)``: the sampler's (DDPM only) and
        the guide's (its target forward-diffused to each step's new level; zeros where that
        level is clean), drawn step by step in that order."""
        ddpm = self.sampler.name == "ddpm"
        if not ddpm and guide is None:
            return None, None
        step, gd = [], []
        for _, t_next in pairs:
            if ddpm:
                step.append(torch.randn(shape, generator=self.generator))
            if guide is not None:
                gshape = tuple(guide[0].shape)
                gd.append(torch.zeros(gshape) if t_next == self.sampler.clean
                          else torch.randn(gshape, generator=self.generator))
        return (torch.stack(step) if ddpm else None), (torch.stack(gd) if guide is not None else None)

    def _denoise(self, x, cond, pairs, net_times, step_noise, guide_noise, guide, net=None, times=None):
        """The denoising loop proper: tensors in, the final sample out, no host reads and no
        random draws. ``net``: the denoiser (default: the trace if set, else the network);
        ``times``: its per-step time inputs (default: the Python floats ``net_times``). A
        denoiser with ``run_memory`` gets the run's cross-attention memory computed once for
        all steps and is called as ``decode(x, memory[i])``; any other as ``net(x, t, cond)``.
        A denoiser with ``decode_step`` (the fused kernels) also takes the sampler's step when
        the sampler has an ``affine`` form (DDIM)."""
        if net is None:
            net = self._traced if self._traced is not None else self.net
        times = net_times if times is None else times
        memory = net.run_memory(times, cond) if hasattr(net, "run_memory") else None
        fused_step = memory is not None and hasattr(net, "decode_step") and step_noise is None
        state = self.sampler.new_state()
        if self.cache is not None:
            self.cache.reset()  # cached block outputs never cross predictions
        for i, ((t, t_next), net_t) in enumerate(zip(pairs, net_times)):
            if self.cache is not None:
                self.cache.begin_step(net_t)
            affine = fused_step and self.sampler.affine(t, t_next)
            if affine:  # the sampler's step in the network's last kernel (policy/accel/fused.py)
                x = net.decode_step(x, memory[i], affine)
            else:
                out = net(x, times[i], cond) if memory is None else net.decode(x, memory[i])
                x = self.sampler.step(x, out, t, t_next, state, noise=None if step_noise is None else step_noise[i])
            if guide is not None:
                target, w = guide
                level = self._diffuse(target, guide_noise[i], t_next)
                w = w.to(x).view(1, -1, 1)
                x = w * level + (1 - w) * x
        return x

    def _diffuse(self, x0: torch.Tensor, noise: torch.Tensor, level) -> torch.Tensor:
        """``x0`` forward-diffused to sampler level ``level`` with the given noise, using host
        scalars only (no device-side table lookups, so it can run inside a CUDA graph)."""
        if level == self.sampler.clean:
            return x0
        if self.cfg.family == "flow":
            t = torch.tensor(float(level), dtype=torch.float32)
            return t * noise + (1 - t) * x0
        a = self.schedule.abar(int(level)).to(x0.dtype)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def _noised(self, x0: torch.Tensor, level) -> torch.Tensor:
        """``x0`` forward-diffused to sampler level ``level`` (clean at the end of a run)."""
        if level == self.sampler.clean:
            return x0
        noise = torch.randn(x0.shape, generator=self.generator).to(x0.device)
        return self._diffuse(x0, noise, level)

    def guide_from_actions(self, actions: np.ndarray, decay: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Real-time-chunking-style guide from committed actions ``(d, A)`` in robot units,
        placed at horizon indices To-1 .. To-1+d-1 (the new chunk's first executed steps):
        weight 1 on the first half of them, then exp decay, 0 beyond."""
        d = min(len(actions), self.cfg.horizon - self.cfg.n_obs_steps + 1)
        target = torch.zeros(1, self.cfg.horizon, self.cfg.action_dim)
        w = torch.zeros(self.cfg.horizon)
        if d == 0:
            return target, w
        s = self.cfg.n_obs_steps - 1
        target[0, s:s + d] = self.normalize_actions(torch.as_tensor(np.asarray(actions[:d]), dtype=torch.float32))
        full = max(1, d // 2)
        w[s:s + d] = torch.tensor([1.0 if i < full else float(np.exp(-(i - full + 1) / decay)) for i in range(d)])
        return target, w

    @torch.no_grad()
    def predict_batch(self, obs: Mapping[str, np.ndarray | torch.Tensor],
                      committed: np.ndarray | None = None, ids: list[int] | None = None) -> np.ndarray:
        """{key: (B, To, ...)} -> actions (B, T, A) in robot units. ``committed``: actions
        ``(d, A)`` already scheduled from the previous chunk, to inpaint the new prefix.
        ``ids``: which env each row is (for warm starts across a changing batch)."""
        self.validate_obs(obs, batched=True)
        device = next(self.parameters()).device
        if self._graphs is not None:
            tobs = self._graphs.upload(obs)
        else:
            tobs = {k: torch.as_tensor(np.asarray(v)).to(device) for k, v in obs.items() if k in self.expected_obs()}
        guide = None
        if committed is not None and len(committed):
            target, w = self.guide_from_actions(committed)
            guide = (target.to(device), w.to(device))
        B = next(iter(tobs.values())).shape[0]
        shape = (B, self.cfg.horizon, self.cfg.action_dim)
        ids = list(range(B)) if ids is None else list(ids)
        guess = self.warm.guess(ids, self.cfg.n_action_steps) if self.warm is not None else None
        # every random draw on the host from self.generator, in the order of ``sample``
        level = start_noise = None
        if guess is None:
            x = torch.randn(shape, generator=self.generator).to(device)
            pairs = self.sampler.steps(self.cfg.num_inference_steps)
            net_times = [self.sampler.model_time(t) for t, _ in pairs]
        else:
            x = guess.to(device)
            pairs, net_times, level = self._rti_start()
            if level is not None:
                start_noise = torch.randn(x.shape, generator=self.generator).to(device)
        step_noise, guide_noise = self._draw_noise(shape, pairs, guide)
        step_noise = None if step_noise is None else step_noise.to(device)
        guide_noise = None if guide_noise is None else guide_noise.to(device)
        if self._graphs is not None:
            x, actions = self._graphs.chunk(tobs, x, pairs, net_times, step_noise, guide_noise, guide,
                                            start_noise, level)
        else:
            x, actions = self._chunk(tobs, x, pairs, net_times, step_noise, guide_noise, guide, start_noise, level)
        self.nfe_last = len(pairs)
        if self.warm is not None:
            self.warm.store(ids, x)
        actions = self._graphs.download(actions) if self._graphs is not None else actions.cpu().numpy()
        if not np.isfinite(actions).all():  # never hand a NaN to a robot
            raise FloatingPointError("policy produced non-finite actions")
        return actions

    def _chunk(self, obs, x, pairs, net_times, step_noise, guide_noise, guide, start_noise=None, level=None,
               net=None, times=None) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk from device tensors to device tensors, no host reads and no random draws
        (what the GPU path captures whole): observations in robot units -> conditioning; a
        warm start's guess noised to ``level`` with ``start_noise``; the denoising run
        (``_denoise``); the actions in robot units (discrete dimensions binarized with a warm
        start that asks for it). Returns (normalized sample, actions)."""
        cond = self.encode_obs(obs)
        if start_noise is not None:
            x = self._diffuse(x, start_noise, level)
        x = self._denoise(x, cond, pairs, net_times, step_noise, guide_noise, guide, net=net, times=times)
        actions = self.unnormalize_actions(x)
        if self.warm is not None and self.warm.cfg.binarize and self.warm.cfg.discrete_dims:
            actions = self._binarize(actions)
        return x, actions

    def predict_chunk(self, obs_window: Mapping[str, np.ndarray], committed: np.ndarray | None = None) -> np.ndarray:
        """{key: (To, ...)} -> actions (T, A) in robot units (see ``predict_batch``)."""
        self.validate_obs(obs_window)
        return self.predict_batch({k: np.asarray(obs_window[k])[None] for k in self.expected_obs()}, committed)[0]
