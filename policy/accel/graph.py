"""GPU deploy path: whole chunks captured as CUDA graphs.

A chunk prediction for a fixed step list is the same sequence of kernels every time; only
the values in a few tensors change. ``GraphDeploy`` records ``DiffusionPolicy.chunk_tensors`` (the
observations' normalization, a warm start's noising, all network calls, the sampler's
updates, the guide, the block cache and the actions' scaling) once per chunk shape into a
``torch.cuda.CUDAGraph`` over static buffers, then replays it: one launch per chunk instead
of hundreds of small kernels each paid in Python and launch overhead. ``run`` does the same
for a bare denoising run (``DiffusionPolicy.denoise_tensors``, what ``sample`` calls).

A chunk's shape (its ``key``): batch, the (t, t_next) pairs, the network times, the warm
start's noise level, the inputs' names, shapes and dtypes (observations go in as float32,
uint8 images as uint8). The cold chunk (the configured sampler from pure noise) and the RTI
chunk (the warm start's step list) are two keys; ``prepare()`` captures both before a
control loop starts, any other shape is captured at its first use (logged). Changing the
sampler, the warm start or the cache drops the captured runs (``release()``), since they bake
those in.

Inputs of a chunk (static buffers, copied in before each replay): the observations, the
start sample (noise, or the shifted previous chunk), the warm start's noise, the per-step
noise (DDPM's, the guide's), the guide's target and weights. The noise is drawn on the host
from the policy's generator in the eager order, so a graph chunk and an eager chunk of one
prediction see the same numbers, and the action difference between them is a measurement of
the deploy path, not of the noise.

Precision (of the network only; the sampler's arithmetic stays float32):
- ``fp32``: the eager kernels, replayed; equal to eager up to float rounding;
- ``tf32``: float32 matmuls on the tensor cores (10-bit mantissa inputs);
- ``bf16``: the network under ``torch.autocast(bfloat16)``, outputs cast back to float32.
``dpctrl bench gpu`` reports each one's action error against eager float32.

Host transfers go through pinned buffers (``upload``/``download``): observations in with a
non-blocking copy, actions out with one, then a single stream synchronize.

``compile=True`` also puts the network through ``torch.compile`` (inductor) before capture,
so the graph replays fused kernels; the block cache's per-branch hook cannot be compiled, so
a cached policy refuses it.

``fused=True`` runs each step's decoder as the Triton kernels of policy/accel/fused.py
(6 per layer instead of ~19) at fp32 (float32 products) or tf32; the run's memory stays
eager. Like ``compile``, it has no per-branch hook, so a cached policy refuses it.

``graph=False`` runs the identical static-buffer path without capture (any device): the
CPU tests check the plumbing (buffers, noise order, guide, cache) against the eager path
with it, and the GPU tests check the captured replay the same way.
"""
from __future__ import annotations

import contextlib
import gc
import logging

import numpy as np
import torch

from dpctrl.policy.denoise import InpaintGuide, RunNoise, draw_noise

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "tf32", "bf16")


class _Run:
    """One captured (or, with ``graph=False``, merely buffered) run of ``fn`` over static inputs."""

    def __init__(self, fn, inputs: dict[str, torch.Tensor], graph: bool, context):
        self.fn, self.context, self.graph = fn, context, None
        self.inputs = {k: v.clone() for k, v in inputs.items()}
        if not graph:
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), context():
            for _ in range(2):  # warm-up outside the graph: cuBLAS handles, lazy inits
                fn(**self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # No garbage collection while capturing: a collected CUDAGraph (say, of a deploy path
        # dropped earlier and caught in a reference cycle) is destroyed with a CUDA call that
        # is illegal during capture and invalidates it (seen on an H200).
        was_enabled = gc.isenabled()
        gc.collect()
        gc.disable()
        try:
            with context(), torch.cuda.graph(self.graph):
                self.out = fn(**self.inputs)
        finally:
            if was_enabled:
                gc.enable()

    def release(self) -> None:
        """Free the captured graph now (not whenever the garbage collector gets to it)."""
        if self.graph is not None:
            self.graph.reset()
            self.graph = None

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        for k, v in inputs.items():
            self.inputs[k].copy_(v, non_blocking=True)
        if self.graph is None:
            with self.context():
                return self.fn(**self.inputs)
        self.graph.replay()
        # the static outputs are overwritten by the next replay
        return tuple(o.clone() for o in self.out) if isinstance(self.out, tuple) else self.out.clone()


class GraphDeploy:
    """A runner (policy/accel/runners.py) over captured or static buffers."""
    allows_cache = True

    def __init__(self, policy, batch: int, precision: str = "fp32", graph: bool = True, compile: bool = False,
                 fused: bool = False):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; known: {PRECISIONS}")
        if fused and (compile or precision == "bf16"):
            raise ValueError("the fused kernels run fp32 or tf32, uncompiled; got "
                             f"precision {precision!r}{' with compile' if compile else ''}")
        self.device = next(policy.parameters()).device
        if graph and self.device.type != "cuda":
            raise ValueError(f"a CUDA graph needs the policy on a CUDA device (policy.to('cuda')); "
                             f"it is on {self.device}")
        if precision != "fp32" and self.device.type != "cuda":
            raise ValueError(f"precision {precision!r} is a CUDA path; on {self.device} use 'fp32'")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.policy, self.batch, self.precision, self.graph = policy, batch, precision, graph
        # torch.compile (inductor, default mode) of the network: fuses its small pointwise and
        # normalization kernels; the graph then replays the fused kernels. Compiled at the
        # first warm-up run of the first capture (tens of seconds), not per step.
        self.compiled = torch.compile(policy.net, fullgraph=True, dynamic=False) if compile else None
        self.fused = None
        if fused:
            from dpctrl.policy.accel.fused import FusedDecoder
            self.fused = FusedDecoder(policy.net, "ieee" if precision == "fp32" else "tf32")
        self.runs: dict[tuple, _Run] = {}
        self._pin = self.device.type == "cuda"
        self._host_in: dict[str, torch.Tensor] = {}  # per key, allocated at first use (the obs dtype)
        cfg = policy.cfg
        self._host_out = torch.empty((batch, cfg.horizon, cfg.action_dim), dtype=torch.float32, pin_memory=self._pin)

    @property
    def name(self) -> str:
        return (f"{'cuda_graph' if self.graph else 'static'}-{self.precision}"
                f"{'+compile' if self.compiled is not None else ''}{'+fused' if self.fused is not None else ''}")

    # ---------------------------------------------------------------- runs
    def release(self) -> None:
        for run in self.runs.values():
            run.release()
        self.runs.clear()

    def _context(self):
        if self.precision == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)  # a cast cache breaks capture
        if self.precision == "tf32" and self.fused is None:  # fused: the kernels' own tf32 products
            return _tf32()
        return contextlib.nullcontext()

    def _check_cache(self) -> None:
        from dpctrl.policy.accel.cache import BlockCache
        cache = self.policy.cache
        if cache is not None and (not isinstance(cache, BlockCache) or cache.gate is not None):
            what = "a TeaCache-gated BlockCache" if isinstance(cache, BlockCache) else type(cache).__name__
            raise ValueError(f"{what} decides on the host during a run and cannot be captured; only a "
                             "scheduled BlockCache can (or call set_deploy(None) to run it eagerly)")

    @torch.no_grad()
    def run(self, x, cond, plan, noise, guide=None) -> torch.Tensor:
        """The final sample of one run (as ``DiffusionPolicy.denoise_tensors``;
        ``DiffusionPolicy.sample`` calls it), captured on first use."""
        inputs = {"x": x, "cond": cond, **_noise_inputs(noise, guide)}
        pol, (net, times) = self.policy, self._net(plan.net_times)

        def fn(x, cond, **noise_in):
            noise, guide = _noise_of(noise_in)
            return pol.denoise_tensors(x, cond, plan, noise, guide, denoiser=net, times=times)
        return self._replay(("run",), plan, inputs, fn)

    @torch.no_grad()
    def chunk(self, obs, x, plan, noise, guide=None) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole chunk (as ``DiffusionPolicy.chunk_tensors``: observations in robot units to
        the normalized sample and the actions; ``predict_batch`` calls it), captured on first
        use: the observation normalization, a warm start's noising and the action scaling
        replay inside the graph too, so a chunk is one launch between the copies in and out."""
        inputs = {"x": x, **{f"obs:{k}": v for k, v in obs.items()}, **_noise_inputs(noise, guide)}
        pol, (net, times) = self.policy, self._net(plan.net_times)

        def fn(x, **named):
            noise, guide = _noise_of({k: v for k, v in named.items() if not k.startswith("obs:")})
            obs = {k[4:]: v for k, v in named.items() if k.startswith("obs:")}
            return pol.chunk_tensors(obs, x, plan, noise, guide, denoiser=net, times=times)
        return self._replay(("chunk",), plan, inputs, fn)

    def _replay(self, kind: tuple, plan, inputs: dict, fn):
        """Replay the captured run of this shape (``kind``, steps, inputs' names, shapes and
        dtypes), capturing it first if new."""
        if inputs["x"].shape[0] != self.batch:
            raise ValueError(f"the {'CUDA graph' if self.graph else 'static'} deploy path was built for batch "
                             f"{self.batch}, got {inputs['x'].shape[0]}; set_deploy again with "
                             f"batch={inputs['x'].shape[0]}")
        self._check_cache()
        for what, on in (("a compiled network", self.compiled), ("the fused kernels", self.fused)):
            if on is not None and self.policy.cache is not None:
                raise ValueError(f"{what} has no per-block hook; block caching runs without "
                                 f"(set_deploy(..., compile=False, fused=False))")
        key = (*kind, plan.start_level, tuple(plan.pairs), tuple(float(t) for t in plan.net_times),
               tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(inputs.items())))
        run = self.runs.get(key)
        if run is None:
            log.info("capturing a %s %s of %d network calls (batch %d, %s)", "CUDA graph" if self.graph else "static",
                     kind[0], len(plan), self.batch, self.precision)
            run = self.runs[key] = _Run(fn, inputs, self.graph, self._context)
        return run(inputs)

    def _net(self, net_times) -> tuple:
        """The denoiser a run calls (eager, compiled or fused; float32 outputs) and its time inputs."""
        # one 0-dim tensor per step, each its own storage: views of one tensor would differ in
        # storage offset, which a compiled network guards on (a recompile per step)
        times = [torch.tensor(float(t), dtype=torch.float32, device=self.device) for t in net_times]
        if self.compiled is not None:
            return _Float(self.compiled), times
        return _Float(self.fused if self.fused is not None else self.policy.net, decode=True), times

    @torch.no_grad()
    def prepare(self) -> int:
        """Capture the chunks a control loop will make: the cold one and, with a warm start, the
        RTI one, each unguided (guided chunks are captured at first use), for observations of
        the policy's shapes (float32; images uint8). Returns how many."""
        pol = self.policy
        B, shape = self.batch, (self.batch, pol.cfg.horizon, pol.cfg.action_dim)
        gen = torch.Generator().manual_seed(0)  # not the policy's: preparing must not shift its noise
        obs = {}
        for k, s in pol.expected_obs().items():
            v = torch.rand((B, *s), generator=gen)
            obs[k] = (v * 255).to(torch.uint8) if k in pol.cfg.image_keys else v
            obs[k] = obs[k].to(self.device)
        plans = [pol.cold_plan()] + ([pol.warm_plan()] if pol.warm is not None else [])
        for plan in plans:
            noise = draw_noise(gen, pol.sampler, plan, [shape]).to(self.device)
            self.chunk(obs, torch.randn(shape, generator=gen).to(self.device), plan, noise)
        return len(plans)

    # ---------------------------------------------------------------- host transfers
    def upload(self, obs: dict) -> dict[str, torch.Tensor]:
        """Observations ``{key: (B, To, ...)}`` -> device tensors through pinned buffers, as
        float32 (uint8 images stay uint8): the dtypes the network reads them in anyway, and the
        ones ``prepare`` captured, so float64 arrays from a simulator replay the same graph."""
        out = {}
        images = self.policy.cfg.image_keys
        for k in self.policy.expected_obs():
            v = torch.as_tensor(np.asarray(obs[k]))
            if v.shape[0] != self.batch:
                raise ValueError(f"the deploy path was built for batch {self.batch}, got {v.shape[0]} rows of {k!r}")
            dtype = torch.uint8 if k in images and v.dtype == torch.uint8 else torch.float32
            buf = self._host_in.get(k)
            if buf is None or buf.dtype != dtype or buf.shape != v.shape:
                buf = self._host_in[k] = torch.empty(v.shape, dtype=dtype, pin_memory=self._pin)
            buf.copy_(v)
            out[k] = buf.to(self.device, non_blocking=True)
        return out

    def download(self, actions: torch.Tensor) -> np.ndarray:
        self._host_out.copy_(actions, non_blocking=True)
        if self.device.type == "cuda":
            torch.cuda.current_stream().synchronize()
        return self._host_out.numpy().copy()


def _noise_inputs(noise: RunNoise, guide) -> dict[str, torch.Tensor]:
    """A run's noise and guide as named static inputs."""
    out = {}
    if noise.start is not None:
        out["start_noise"] = noise.start[0]
    if noise.steps is not None:
        out["step_noise"] = noise.steps[0]
    if guide is not None:
        out.update(guide_noise=noise.guide, target=guide.target, w=guide.weights)
    return out


def _noise_of(named: dict) -> tuple[RunNoise, InpaintGuide | None]:
    """The inverse of ``_noise_inputs`` inside a captured function."""
    start, steps = named.get("start_noise"), named.get("step_noise")
    noise = RunNoise(None if start is None else (start,), None if steps is None else (steps,), named.get("guide_noise"))
    guide = InpaintGuide(named["target"], named["w"]) if "target" in named else None
    return noise, guide


class _Float:
    """The network as a run calls it, outputs in float32 (under bf16 autocast they are bf16).
    ``decode=True``: with the run's memory computed once (``Transformer.run_memory``) and the
    per-step ``decode``; a compiled network is called whole per step instead, since the
    per-step memory views differ in storage offset, which compiled code guards on."""

    def __init__(self, net, decode: bool = False):
        self.net = net
        if decode:
            self.run_memory = net.run_memory
            if hasattr(net, "decode_step"):  # the fused kernels: float32 already, sampler step included
                self.decode_step = net.decode_step

    def decode(self, x, kv):
        return self.net.decode(x, kv).float()

    def __call__(self, x, t, cond):
        return self.net(x, t, cond).float()


@contextlib.contextmanager
def _tf32():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
