"""The one denoising loop every model samples through: DP-T, PAD, the maze planners and the
driving planner.

    plan = StepPlan.of(sampler, 10)                       # or StepPlan.through(levels), a warm plan
    noise = draw_noise(generator, sampler, plan, [shape])  # every random draw, on the host, first
    x = denoise(model, sampler, x, plan, noise)            # model(x, i) -> network output at step i

A run is a pure function of its tensors once the noise is drawn: no host reads and no random
draws inside, which is what a CUDA graph captures (policy/accel/graph.py) and why every
device and deploy path sees the same numbers in the same order. Extensions plug in through
arguments, never by reaching into the loop:

- ``plan.start_level``: a given start sample (a warm start's guess, SDEdit proposals, noised
  anchors) is first forward-diffused to that level with ``noise.start``;
- ``guide``: committed actions the new chunk should agree with. ``InpaintGuide``: after every
  step the sample is pulled toward the target forward-diffused to the new level (hard
  prefix inpainting); ``RTCGuide``: inside every step the predicted clean sample is pulled
  toward the target through the network's vector-Jacobian product (real-time chunking);
- ``project``: a hard constraint applied to the start sample and after every step (the
  planners write the start state and the goal back in);
- ``hook``: per-step notice to a branch cache (``reset()`` per run, ``begin_step(net_t)``);
- ``fused_step``: a denoiser that applies the sampler's affine step in its last kernel.

A sample may be one tensor or a tuple of tensors (PAD: future frames and actions) stepped
with the same (t, t_next), each with its own sampler state and its own step noise.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch

from dpctrl.policy.noise import randn

Sample = Union[torch.Tensor, tuple]


@dataclass(frozen=True)
class StepPlan:
    """Which steps a run takes: ``pairs`` of sampler levels ``(t, t_next)`` (``t_next`` is the
    sampler's clean level at the end), the network's time input at each step, and the level a
    given start sample is forward-diffused to before the first step (None: used as given)."""
    pairs: tuple
    net_times: tuple
    start_level: Any = None

    def __post_init__(self):
        if len(self.pairs) != len(self.net_times) or not self.pairs:
            raise ValueError(f"a step plan needs one network time per step and at least one step "
                             f"(got {len(self.pairs)} pairs, {len(self.net_times)} times)")

    @classmethod
    def of(cls, sampler, n_steps: int, start_t=None, start_level=None) -> "StepPlan":
        """The sampler's own grid of ``n_steps`` calls (from level ``start_t`` if given)."""
        pairs = sampler.steps(n_steps, start_t=start_t)
        return cls(tuple(pairs), tuple(sampler.model_time(t) for t, _ in pairs), start_level)

    @classmethod
    def through(cls, sampler, levels: Sequence, start_level=None, net_times: Sequence | None = None) -> "StepPlan":
        """Steps through explicit descending ``levels`` down to clean (truncated schedules)."""
        levels = list(levels)
        pairs = tuple(zip(levels, levels[1:] + [sampler.clean]))
        times = tuple(net_times) if net_times is not None else tuple(sampler.model_time(t) for t in levels)
        return cls(pairs, times, start_level)

    def __len__(self) -> int:
        return len(self.pairs)


@dataclass
class RunNoise:
    """Every random draw of one run, made on the host before it starts: the start level's
    forward-diffusion noise (one per component), the sampler's per-step noise (DDPM: one
    stack ``(n_steps, ...)`` per component) and the guide's per-step noise ``(n_steps, ...)``."""
    start: tuple | None = None
    steps: tuple | None = None
    guide: torch.Tensor | None = None

    def to(self, device) -> "RunNoise":
        move = lambda ts: None if ts is None else tuple(t.to(device) for t in ts)  # noqa: E731
        return RunNoise(move(self.start), move(self.steps), None if self.guide is None else self.guide.to(device))


def draw_noise(generator, sampler, plan: StepPlan, shapes: Sequence[tuple],
               guide_shape: tuple | None = None, start: bool | None = None) -> RunNoise:
    """The draws of one run from ``generator`` (a ``torch.Generator``, or per-episode
    ``RowStreams``, policy/noise.py), in one fixed order: the start noise of each
    component (if ``plan.start_level`` is a noisy level, or ``start=True``), then step by step
    each component's sampler noise (DDPM only) and the guide's (zeros where the step's new
    level is clean)."""
    if start is None:
        start = plan.start_level is not None and plan.start_level != sampler.clean
    start_noise = tuple(randn(generator, s) for s in shapes) if start else None
    ddpm = sampler.name == "ddpm"
    if not ddpm and guide_shape is None:
        return RunNoise(start_noise)
    steps: list[list[torch.Tensor]] = [[] for _ in shapes]
    guide: list[torch.Tensor] = []
    for _, t_next in plan.pairs:
        if ddpm:
            for c, s in enumerate(shapes):
                steps[c].append(randn(generator, s))
        if guide_shape is not None:
            guide.append(torch.zeros(guide_shape) if t_next == sampler.clean
                         else randn(generator, guide_shape))
    return RunNoise(start_noise, tuple(torch.stack(s) for s in steps) if ddpm else None,
                    torch.stack(guide) if guide_shape is not None else None)


def draw_start(generator, shapes: Sequence[tuple]) -> tuple:
    """Pure noise to start a cold run from, one tensor per component."""
    return tuple(randn(generator, s) for s in shapes)


@dataclass
class InpaintGuide:
    """Pull the sample toward ``target`` (normalized, broadcastable to the sample) after every
    step, by per-horizon-step ``weights`` (1: replace, 0: free): the target is forward-
    diffused to the step's new level with the run's guide noise first."""
    target: torch.Tensor
    weights: torch.Tensor
    in_step = False  # acts after the sampler's step

    @property
    def shape(self) -> tuple:
        return tuple(self.target.shape)

    @property
    def noise_shape(self) -> tuple:
        return self.shape  # one forward-diffusion draw per step

    def apply(self, sampler, x: torch.Tensor, noise: torch.Tensor, t_next) -> torch.Tensor:
        level = sampler.diffuse(self.target, noise, t_next)
        w = _per_row(self.weights.to(x))
        return w * level + (1 - w) * x


@dataclass
class RTCGuide:
    """Inference-time real-time chunking (Black et al. 2025, docs/references.md §9): at every
    step the clean chunk the network predicts, x0(x_t), is pulled toward ``target`` (the running
    chunk's remaining actions, normalized) under the soft mask ``weights`` by the vector-Jacobian
    product g = ((target - x0) * W)^T dx0/dx_t (pseudo-inverse guidance). The guided
    x0 + noise(t) * min(beta, (signal^2 + noise^2) / (signal * noise)) * g goes through the
    unchanged sampler step; for flow matching this is the published velocity correction, for
    DDPM/DDIM the same in the schedule's signal and noise coefficients. One backward pass through
    the network per step; no random draws."""
    target: torch.Tensor
    weights: torch.Tensor
    beta: float = 5.0
    in_step = True  # replaces the network call of each step
    noise_shape = None

    def output(self, model, sampler, x: torch.Tensor, i: int, t) -> torch.Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            out = model(xg, i)
            x0 = sampler.x0_unclipped(xg, out, t)
            err = (self.target.to(x0) - x0.detach()) * _per_row(self.weights.to(x0))
            (g,) = torch.autograd.grad(x0, xg, grad_outputs=err)
        signal, noise = sampler.signal_noise(t)
        scale = noise * min(self.beta, (signal ** 2 + noise ** 2) / max(signal * noise, 1e-12))
        return sampler.output_for_x0(x, x0.detach() + scale * g, t)


def _per_row(w: torch.Tensor) -> torch.Tensor:
    """Per-horizon-step weights ``(H,)`` or ``(B, H)`` broadcast over ``(B, H, A)``."""
    return w.view(1, -1, 1) if w.dim() == 1 else w.unsqueeze(-1)


def denoise(model: Callable[[Sample, int], Sample], sampler, x: Sample, plan: StepPlan,
            noise: RunNoise | None = None, guide: InpaintGuide | RTCGuide | None = None, hook=None,
            project: Callable[[Sample], Sample] | None = None,
            fused_step: Callable[[torch.Tensor, int, dict], torch.Tensor] | None = None) -> Sample:
    """Run ``plan`` from ``x``; ``model(x, i)`` is the network's output for the sample at step
    ``i`` (it reads ``plan.net_times[i]`` itself, in whatever form its network takes). Returns
    the final sample (normalized), of the structure of ``x``."""
    noise = noise or RunNoise()
    multi = isinstance(x, tuple)
    xs = list(x) if multi else [x]
    if plan.start_level is not None and noise.start is not None:
        xs = [sampler.diffuse(c, n, plan.start_level) for c, n in zip(xs, noise.start)]
    if guide is not None and multi:
        raise ValueError("an inpainting guide acts on a single-tensor sample")
    pack = (lambda cs: tuple(cs)) if multi else (lambda cs: cs[0])
    if project is not None:
        xs = list(project(pack(xs))) if multi else [project(xs[0])]
    states = [sampler.new_state() for _ in xs]
    if hook is not None:
        hook.reset()  # cached block outputs never cross runs
    for i, ((t, t_next), net_t) in enumerate(zip(plan.pairs, plan.net_times)):
        if hook is not None:
            hook.begin_step(net_t)
        in_step = guide is not None and guide.in_step
        affine = fused_step is not None and noise.steps is None and not in_step and sampler.affine(t, t_next)
        if affine:
            xs = [fused_step(xs[0], i, affine)]
        else:
            out = guide.output(model, sampler, xs[0], i, t) if in_step else model(pack(xs), i)
            outs = list(out) if multi else [out]
            xs = [sampler.step(c, o, t, t_next, s, noise=None if noise.steps is None else noise.steps[k][i])
                  for k, (c, o, s) in enumerate(zip(xs, outs, states))]
        if guide is not None and not in_step:
            xs = [guide.apply(sampler, xs[0], noise.guide[i], t_next)]
        if project is not None:
            xs = list(project(pack(xs))) if multi else [project(xs[0])]
    return pack(xs)
