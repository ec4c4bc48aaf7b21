"""Samplers: DDPM, DDIM (eta=0), DPM-Solver++(2M) and flow-matching Euler (docs/references.md §4).

One small interface so that a run can start at any noise level (warm starts, truncated
diffusion) and every network call gets the timestep that matches its input::

    pairs = sampler.steps(n_steps, start_t=None)     # [(t, t_next), ...], t_next = -1 is clean
    state = sampler.new_state()                       # per-run multistep memory
    for t, t_next in pairs:
        out = net(x, sampler.model_time(t), cond)
        x = sampler.step(x, out, t, t_next, state, noise)

Timestep grids follow diffusers' defaults ("leading" spacing for DDPM/DDIM, "linspace" for
DPM-Solver++), and so do the update formulas, so outputs match diffusers on the same model
outputs (tests/policy/test_samplers.py). Training goes through the same object:
``train_timesteps``, ``noisy`` and ``target``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dpctrl.policy.schedule import NoiseSchedule

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


class Sampler:
    """One way of walking a noise schedule down to a clean sample. Subclass it and
    ``register_sampler`` the class to make it a choice of ``set_sampler`` (docs/extending/sampler.md):
    a subclass gives ``name``, ``family`` (which training it samples: "diffusion" or "flow"),
    ``grid(n)`` and ``step(...)``."""
    name = "base"
    family = "diffusion"

    def __init__(self, schedule: NoiseSchedule, prediction_type: str = "epsilon", clip_sample: bool = True,
                 clip_range: float = 1.0):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; known: {PREDICTION_TYPES}")
        self.schedule, self.prediction_type = schedule, prediction_type
        self.clip_sample, self.clip_range = clip_sample, clip_range

    # ---------------------------------------------------------------- step lists
    def grid(self, n_steps: int) -> list:
        """Descending timesteps of a full run of ``n_steps`` network calls."""
        raise NotImplementedError

    def steps(self, n_steps: int, start_t: Any = None) -> list[tuple]:
        """(t, t_next) pairs; with ``start_t`` the run starts from a sample at that level and
        continues on the grid below it. Raises rather than return an empty run."""
        grid = self.grid(n_steps)
        if start_t is not None:
            self._check_level(start_t)
            grid = [start_t] + [t for t in grid if t < start_t]
        if not grid:
            raise ValueError(f"{self.name}: no denoising steps for n_steps={n_steps}, start_t={start_t}")
        return list(zip(grid, grid[1:] + [self.clean]))

    clean: Any = -1

    def _check_level(self, t) -> None:
        T = self.schedule.num_train_timesteps
        if not (isinstance(t, (int, np.integer)) and 0 <= t < T):
            raise ValueError(f"{self.name}: start timestep must be an integer in [0, {T - 1}], got {t!r}")

    def new_state(self) -> dict:
        return {}

    def model_time(self, t):
        """The timestep value the network is given for a sample at level ``t`` (scalar or tensor)."""
        return t if torch.is_tensor(t) else float(t)

    def diffuse(self, x0: torch.Tensor, noise: torch.Tensor, level) -> torch.Tensor:
        """``x0`` forward-diffused to level ``level`` with ``noise``, from host scalars only (no
        device-side table lookup, so it runs inside a CUDA graph); the clean level is ``x0``."""
        if level == self.clean:
            return x0
        a = self.schedule.abar(int(level)).to(x0.dtype)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    # ---------------------------------------------------------------- predictions
    def _coeffs(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.schedule.abar(int(t))
        return a ** 0.5, (1 - a) ** 0.5

    def x0_eps(self, x: torch.Tensor, out: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) implied by the network output at level ``t``; x0 clipped if configured."""
        sa, sb = self._coeffs(t)
        if self.prediction_type == "epsilon":
            x0, eps = (x - sb * out) / sa, out
        elif self.prediction_type == "sample":
            x0, eps = out, (x - sa * out) / sb
        else:
            x0, eps = sa * x - sb * out, sa * out + sb * x
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_range, self.clip_range)
        return x0, eps

    def step(self, x, out, t, t_next, state: dict, noise: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def signal_noise(self, t) -> tuple[float, float]:
        """(signal, noise) coefficients of a sample at level ``t``: x_t = signal x0 + noise eps."""
        sa, sb = self._coeffs(t)
        return float(sa), float(sb)

    def x0_unclipped(self, x: torch.Tensor, out: torch.Tensor, t) -> torch.Tensor:
        """The clean sample the network output implies, without clipping (what guidance
        differentiates: a clip has no gradient where it acts)."""
        sa, sb = self._coeffs(t)
        if self.prediction_type == "epsilon":
            return (x - sb * out) / sa
        if self.prediction_type == "sample":
            return out
        return sa * x - sb * out

    def output_for_x0(self, x: torch.Tensor, x0: torch.Tensor, t) -> torch.Tensor:
        """The network output that implies clean sample ``x0`` for sample ``x`` at level ``t``
        (the inverse of ``x0_unclipped``), so a guided x0 steps through the unchanged sampler."""
        sa, sb = self._coeffs(t)
        if self.prediction_type == "sample":
            return x0
        eps = (x - sa * x0) / sb
        return eps if self.prediction_type == "epsilon" else sa * eps - sb * x0

    def affine(self, t, t_next) -> dict | None:
        """The step as scalars a kernel can apply to (x, out) in its epilogue, or None where the
        step needs more (noise, multistep state): x0 = clip(p x + q out), eps = u x + v out,
        x_next = a x0 + b eps, ``clip`` the x0 range or None. Only DDIM has one."""
        return None

    def _x0_eps_coeffs(self, t) -> dict:
        """(p, q, u, v) of ``x0_eps`` at level ``t`` as host floats (eps is always the
        unclipped one, as there)."""
        sa, sb = (float(c) for c in self._coeffs(t))
        if self.prediction_type == "epsilon":
            return {"p": 1 / sa, "q": -sb / sa, "u": 0.0, "v": 1.0}
        if self.prediction_type == "sample":
            return {"p": 0.0, "q": 1.0, "u": 1 / sb, "v": -sa / sb}
        return {"p": sa, "q": -sb, "u": sb, "v": sa}

    # ---------------------------------------------------------------- training
    def train_timesteps(self, batch: int, generator: torch.Generator | None = None,
                        device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.randint(0, self.schedule.num_train_timesteps, (batch,), generator=generator, device=device)

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.schedule.add_noise(x0, noise, t)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        a = self.schedule.alphas_cumprod.to(x0.device)[t].to(x0.dtype).view(-1, *[1] * (x0.dim() - 1))
        return a.sqrt() * noise - (1 - a).sqrt() * x0


class DDPM(Sampler):
    """Ancestral sampling, "fixed_small" variance, as diffusers' DDPMScheduler."""
    name = "ddpm"

    def grid(self, n_steps: int) -> list[int]:
        return _leading_grid(self.schedule.num_train_timesteps, n_steps)

    def step(self, x, out, t, t_next, state, noise=None):
        a_t, a_prev = self.schedule.abar(t), self.schedule.abar(t_next)
        alpha = a_t / a_prev
        beta = 1 - alpha
        x0, _ = self.x0_eps(x, out, t)
        mean = (a_prev ** 0.5 * beta / (1 - a_t)) * x0 + (alpha ** 0.5 * (1 - a_prev) / (1 - a_t)) * x
        if t > 0:
            var = ((1 - a_prev) / (1 - a_t) * beta).clamp(min=1e-20)
            if noise is None:
                noise = torch.randn_like(x)
            mean = mean + var ** 0.5 * noise
        return mean


class DDIM(Sampler):
    """Deterministic DDIM (eta = 0), final abar = 1, as diffusers' DDIMScheduler."""
    name = "ddim"

    def grid(self, n_steps: int) -> list[int]:
        return _leading_grid(self.schedule.num_train_timesteps, n_steps)

    def step(self, x, out, t, t_next, state, noise=None):
        a_prev = self.schedule.abar(t_next)
        x0, eps = self.x0_eps(x, out, t)
        return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps

    def affine(self, t, t_next) -> dict:
        a_prev = float(self.schedule.abar(t_next))
        return {**self._x0_eps_coeffs(t), "a": a_prev ** 0.5, "b": (1 - a_prev) ** 0.5,
                "clip": self.clip_range if self.clip_sample else None}


class DPMSolverPP(Sampler):
    """DPM-Solver++(2M), midpoint form, first order on the first and the last step.
    The history of data predictions lives in ``state`` (reset for every prediction)."""
    name = "dpmpp"

    def __init__(self, schedule, prediction_type="epsilon", clip_sample=False, clip_range=1.0):
        super().__init__(schedule, prediction_type, clip_sample, clip_range)

    def grid(self, n_steps: int) -> list[int]:
        T = self.schedule.num_train_timesteps
        _check_n(n_steps, T)
        return [int(t) for t in np.linspace(0, T - 1, n_steps + 1).round()[::-1][:-1]]

    def new_state(self) -> dict:
        return {"x0": [], "lambda": []}

    def _coeffs(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        # DPM-Solver's parametrization by sigma = sqrt((1 - abar) / abar), in float32 as in
        # diffusers: near t = T-1 (abar ~ 1e-8) a one-ulp difference in alpha is amplified
        # ~1e4x by the epsilon -> x0 conversion, so the rounding path matters for agreement.
        if t < 0:
            return torch.tensor(1.0), torch.tensor(0.0)
        a = self.schedule.abar(int(t))
        sigma = ((1 - a) / a) ** 0.5
        alpha = 1 / (sigma ** 2 + 1) ** 0.5
        return alpha, sigma * alpha

    def step(self, x, out, t, t_next, state, noise=None):
        x0, _ = self.x0_eps(x, out, t)
        a_s, s_s = self._coeffs(t)
        a_t, s_t = self._coeffs(t_next)
        lam_s = torch.log(a_s) - torch.log(s_s)
        lam_t = torch.log(a_t) - torch.log(s_t)  # +inf at the clean end: exp(-h) = 0
        h = lam_t - lam_s
        x_next = (s_t / s_s) * x - (a_t * (torch.exp(-h) - 1.0)) * x0
        if state.get("x0") and t_next >= 0:  # second order except on the first and last steps
            r0 = (lam_s - state["lambda"][-1]) / h
            d1 = (1.0 / r0) * (x0 - state["x0"][-1])
            x_next = x_next - 0.5 * (a_t * (torch.exp(-h) - 1.0)) * d1
        state.setdefault("x0", []).append(x0)
        state.setdefault("lambda", []).append(lam_s)
        return x_next


class FlowEuler(Sampler):
    """Flow matching (pi0 style): x_t = t * eps + (1 - t) * a, velocity = eps - a, Euler steps
    from t = 1 (noise) to 0. Levels are floats in (0, 1]; the network sees t * T so that the
    same time embedding serves both families."""
    name = "flow"
    family = "flow"
    clean = 0.0

    def __init__(self, schedule, prediction_type="velocity", clip_sample=False, clip_range=1.0):
        self.schedule, self.prediction_type = schedule, "velocity"
        self.clip_sample, self.clip_range = clip_sample, clip_range

    def grid(self, n_steps: int) -> list[float]:
        _check_n(n_steps, None)
        return [float(t) for t in np.linspace(1.0, 0.0, n_steps + 1)[:-1]]

    def _check_level(self, t) -> None:
        if not (isinstance(t, (float, int, np.floating)) and 0.0 < float(t) <= 1.0):
            raise ValueError(f"flow: start level must be in (0, 1], got {t!r}")

    def model_time(self, t):
        T = self.schedule.num_train_timesteps
        return t * T if torch.is_tensor(t) else float(t) * T

    def step(self, x, out, t, t_next, state, noise=None):
        return x + (t_next - t) * out

    def diffuse(self, x0, noise, level):
        if level == self.clean:
            return x0
        t = torch.tensor(float(level), dtype=torch.float32)
        return t * noise + (1 - t) * x0

    def train_timesteps(self, batch, generator=None, device="cpu"):
        return torch.rand((batch,), generator=generator, device=device)

    def noisy(self, x0, noise, t):
        t = t.to(x0.dtype).view(-1, *[1] * (x0.dim() - 1))
        return t * noise + (1 - t) * x0

    def target(self, x0, noise, t):
        return noise - x0

    def x0_eps(self, x, out, t):
        x0 = x - float(t) * out
        return x0, x0 + out

    def signal_noise(self, t) -> tuple[float, float]:
        return 1.0 - float(t), float(t)

    def x0_unclipped(self, x, out, t):
        return x - float(t) * out

    def output_for_x0(self, x, x0, t):
        return (x - x0) / float(t)


def _check_n(n_steps: int, max_steps: int | None) -> None:
    if n_steps < 1 or (max_steps is not None and n_steps > max_steps):
        raise ValueError(f"n_steps must be in [1, {max_steps or 'inf'}], got {n_steps}")


def _leading_grid(T: int, n_steps: int) -> list[int]:
    _check_n(n_steps, T)
    ratio = T // n_steps
    return [int(t) for t in (np.arange(0, n_steps) * ratio).round()[::-1]]


SAMPLERS = {cls.name: cls for cls in (DDPM, DDIM, DPMSolverPP, FlowEuler)}


def register_sampler(cls: type[Sampler]) -> type[Sampler]:
    """Add a ``Sampler`` subclass under its ``name`` (usable as a class decorator); a name that is
    taken or a class that is not a ``Sampler`` is refused."""
    if not (isinstance(cls, type) and issubclass(cls, Sampler)) or cls.name in ("base", ""):
        raise TypeError(f"register_sampler takes a Sampler subclass with its own name, got {cls!r}")
    if cls.family not in ("diffusion", "flow"):
        raise ValueError(f"{cls.__name__}.family must be 'diffusion' or 'flow', not {cls.family!r}")
    if SAMPLERS.get(cls.name, cls) is not cls:
        raise ValueError(f"a sampler named {cls.name!r} is registered already ({SAMPLERS[cls.name].__name__})")
    SAMPLERS[cls.name] = cls
    return cls


def samplers_for(family: str) -> list[str]:
    """The registered samplers that sample a ``family``-trained policy."""
    return [name for name, cls in SAMPLERS.items() if cls.family == family]


def check_sampler(family: str, sampler: str) -> None:
    ok = samplers_for(family)
    if sampler not in ok:
        raise ValueError(f"a {family}-trained policy samples with {list(ok)}, not {sampler!r}")


def make_sampler(name: str, schedule: NoiseSchedule, **kw) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {sorted(SAMPLERS)}")
    return SAMPLERS[name](schedule, **kw)
