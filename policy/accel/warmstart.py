"""Real-time-iteration warm starts (RTI-DP, docs/references.md §2).

After the first chunk of an episode (and after ``reset()``), the next chunk starts from the
previous prediction instead of pure noise: shift it (normalized space, whole horizon) by
the number of actions executed since it was predicted, repeat the last action to refill,
treat it as the sample at level K' and run only the remaining steps down to 0.

Faithful mode (default) runs the sampler's full-resolution grid below K' (for a 100-step
schedule: K', K'-1, ..., 0, i.e. K'+1 network calls) and feeds every call the timestep
that matches its input. ``noise=True`` forward-diffuses the guess to K' first (SDEdit);
the published code inserts the clean guess (``noise=False``). ``reproduce=True`` mimics the
published code's scheduler misuse: the update steps t -> t-1 on the fine grid, but the
network is given the timesteps of the last K'+1 entries of the configured coarse grid
(e.g. DDIM-10: 20, 10, 0), which do not match the sample's noise level.
``tail="coarse"`` runs the configured sampler's own grid below K' instead (DDIM-10 from
K'=20: 20 -> 10 -> 0 -> clean, 3 network calls), with matching timesteps: a few large
steps from a higher level, so the network can still correct the refilled tail.

Discrete dimensions (a gripper): in ``clip`` mode the stored guess has those dimensions
overwritten by +-1/f by their sign (f = 1 for state policies, 10 for image policies in the
paper); outputs of those dimensions are binarized at 0 (in robot units, to +-1). ``scale``
mode needs a policy trained with ``PolicyConfig.discrete_scale = f`` (the dimensions live at
+-1/f in the diffusion space); the guess is stored as predicted, without clipping.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dpctrl.policy.denoise import StepPlan

DISCRETE_MODES = ("none", "clip", "scale")
TAILS = ("fine", "coarse")


@dataclass
class WarmStartConfig:
    start_t: int = 2  # K': the level the guess is treated as (2 -> 3 network calls at T=100)
    noise: bool = False
    reproduce: bool = False
    discrete_dims: list[int] = field(default_factory=list)
    discrete_mode: str = "clip"
    clip_factor: float = 1.0  # f: stored discrete value is +-1/f
    binarize: bool = True
    tail: str = "fine"  # the step list below K': the 1-step grid, or the sampler's configured grid

    def __post_init__(self):
        if self.tail not in TAILS:
            raise ValueError(f"tail must be one of {TAILS}, got {self.tail!r}")
        if self.tail == "coarse" and self.reproduce:
            raise ValueError("reproduce mimics the fine-grid stepping; it does not combine with tail='coarse'")
        if self.discrete_mode not in DISCRETE_MODES:
            raise ValueError(f"discrete_mode must be one of {DISCRETE_MODES}, got {self.discrete_mode!r}")
        if self.start_t < 0:
            raise ValueError(f"start_t (K') must be >= 0, got {self.start_t}")


def shift_chunk(prev: torch.Tensor, executed: int) -> torch.Tensor:
    """``(B, T, A)`` -> the guess after ``executed`` actions: drop the first ``executed``
    steps and repeat the last one ``executed`` times."""
    T = prev.shape[1]
    if not 0 <= executed <= T:
        raise ValueError(f"executed steps {executed} outside [0, {T}]")
    return shift_rows(prev, torch.full((prev.shape[0],), executed, dtype=torch.long, device=prev.device))


def shift_rows(prev: torch.Tensor, executed: torch.Tensor) -> torch.Tensor:
    """``shift_chunk`` with a count per row (``executed``: (B,) int64), as one gather: what an
    exported graph runs (policy/accel/onnx_export.py)."""
    T = prev.shape[1]
    idx = (torch.arange(T, device=prev.device)[None, :] + executed[:, None]).clamp(max=T - 1)
    return torch.gather(prev, 1, idx[:, :, None].expand(-1, -1, prev.shape[2]))


def clip_discrete(x: torch.Tensor, cfg: "WarmStartConfig", mask: torch.Tensor) -> torch.Tensor:
    """What a warm start stores: in ``clip`` mode the discrete dimensions (``mask``, (A,) bool)
    set to +-1/f by their sign; ``x`` as it is otherwise."""
    if cfg.discrete_mode != "clip" or not cfg.discrete_dims:
        return x
    return torch.where(mask, torch.sign(x) / cfg.clip_factor, x)


def discrete_mask(cfg: "WarmStartConfig", action_dim: int, device=None) -> torch.Tensor:
    mask = torch.zeros(action_dim, dtype=torch.bool)
    mask[cfg.discrete_dims] = True
    return mask.to(device)


class WarmStart:
    """Per-episode memory of the last normalized chunk, one row per env id."""

    def __init__(self, cfg: WarmStartConfig):
        self.cfg = cfg
        self.prev: dict[int, torch.Tensor] = {}  # id -> (T, A) normalized
        self.executed: dict[int, int] = {}
        self._masks: dict[torch.device, torch.Tensor] = {}  # discrete dimensions, per device

    def reset(self, ids: list[int] | None = None) -> None:
        for i in list(self.prev) if ids is None else ids:
            self.prev.pop(i, None)
            self.executed.pop(i, None)
        if ids is None:
            self.executed.clear()

    def note_executed(self, n: int, ids: list[int] | None = None) -> None:
        """The loop tells how many actions of the last chunk were executed since it was made."""
        for i in ids if ids is not None else list(self.prev):
            self.executed[i] = n

    def guess(self, ids: list[int], default_executed: int) -> torch.Tensor | None:
        """Shifted guesses ``(B, T, A)`` if every id has a previous chunk, else None (cold)."""
        if not ids or any(i not in self.prev for i in ids):
            return None
        rows = [shift_chunk(self.prev[i][None], self.executed.get(i, default_executed))[0] for i in ids]
        return torch.stack(rows)

    def plan(self, sampler, n_inference_steps: int, n_train_timesteps: int, family: str = "diffusion") -> StepPlan:
        """The step plan of a warm-started run: its (t, t_next) pairs, the network times (the
        published code's mismatched ones with ``reproduce``) and the level the guess is
        forward-diffused to (``noise``; None: the guess is used as it is)."""
        return rti_plan(self.cfg, sampler, n_inference_steps, n_train_timesteps, family)

    def store(self, ids: list[int], x: torch.Tensor) -> None:
        x = x.detach().clone()
        mask = self._masks.get(x.device)
        if mask is None:  # built once per device: a host index list would be copied every call
            mask = self._masks[x.device] = discrete_mask(self.cfg, x.shape[-1], x.device)
        x = clip_discrete(x, self.cfg, mask)
        for row, i in enumerate(ids):
            self.prev[i] = x[row]
            self.executed.pop(i, None)


def rti_plan(w: WarmStartConfig, sampler, n_inference_steps: int, n_train_timesteps: int,
             family: str = "diffusion") -> StepPlan:
    """See ``WarmStart.plan``."""
    flow = family == "flow"
    level = w.start_t / n_train_timesteps if flow else w.start_t
    if flow or w.tail == "coarse":
        plan = StepPlan.of(sampler, n_inference_steps, start_t=level)
    else:
        fine = sampler.steps(n_train_timesteps, start_t=w.start_t)
        if w.reproduce:
            coarse = sampler.grid(n_inference_steps)[-len(fine):]
            times = [float(t) for t in [coarse[0]] * (len(fine) - len(coarse)) + coarse]
        else:
            times = [sampler.model_time(t) for t, _ in fine]
        plan = StepPlan(tuple(fine), tuple(times))
    start = level if w.noise and level != sampler.clean else None
    return StepPlan(plan.pairs, plan.net_times, start)


RTI_FILE = "rti.json"  # a checkpoint's calibration (``calibrate_rti``), next to its weights


def rti_config(policy, saved: dict | None = None, k: int | None = None, noise: bool | None = None,
               reproduce: bool = False, tail: str | None = None) -> WarmStartConfig:
    """K' (and tail, noise) from the arguments, else a saved calibration (``calibrate_rti``'s
    result, the checkpoint's rti.json), else K'=2 on the fine tail with the clean guess."""
    saved = saved or {}
    k = saved.get("recommended_k", 2) if k is None else k
    noise = saved.get("noise", False) if noise is None else noise
    # a policy trained with discrete_scale > 1 warm-starts in scale mode, else clip mode
    mode = "scale" if policy.cfg.discrete_scale > 1.0 else "clip"
    return WarmStartConfig(start_t=int(k), noise=noise, reproduce=reproduce, tail=tail or saved.get("tail", "fine"),
                           discrete_mode=mode, clip_factor=10.0 if policy.cfg.image_keys else 1.0)


def rti_for(checkpoint_name, policy, grid: bool = True, **kw) -> WarmStartConfig:
    """``rti_config`` from the checkpoint's rti.json (if it has one) and the options ``kw``.

    ``grid``: also put the policy on the sampler grid the calibration was made on (rti.json's
    ``sampler`` and ``steps``; a K' is only as good as the grid below it). Callers pass False
    when the user chose the sampler or its steps."""
    from dpctrl.policy.checkpoint import read_sidecar
    saved = read_sidecar(checkpoint_name, RTI_FILE)
    if grid and saved and saved.get("steps") and (saved["sampler"], saved["steps"]) != (
            policy.cfg.sampler, policy.cfg.num_inference_steps):
        policy.set_sampler(saved["sampler"], int(saved["steps"]))
    return rti_config(policy, saved, **kw)


@torch.no_grad()
def calibrate_rti(policy, windows: list[dict], next_windows: list[dict], candidates=(0, 1, 2, 3, 5, 8, 12, 20),
                  target: float = 0.5, tolerance: float = 0.01, seed: int = 0, tail: str = "fine",
                  noise: bool = False, max_calls: int | None = None) -> dict:
    """Choose the warm-start level K' offline, on pairs of observation windows Ta steps apart.

    1. the full (cold) solution A0 of each window, with the policy's sampler;
    2. the RTI guess for the next window: A0 shifted by Ta, as the loop would build it;
    3. for each candidate K' (under ``tail`` and ``noise``): the contraction ratio
       ||f(g + d) - f(g)|| / ||d|| of the warm-started map f (d: a random perturbation of the
       guess, the same noise), and the error of the warm result against the next window's
       own full solution.
    Recommends, with ``max_calls``, the lowest-error K' within that many network calls;
    otherwise the first K' that contracts below ``target`` within ``tolerance`` of the best
    error. The result is what ``rti_config`` reads back (saved as the checkpoint's rti.json)."""
    import numpy as np
    Ta = policy.n_action_steps
    policy.set_warm_start(None)
    gen = torch.Generator().manual_seed(seed)

    def batch(ws):
        return {k: torch.as_tensor(np.stack([w[k] for w in ws])) for k in policy.expected_obs()}

    cond, cond_next = policy.encode_obs(batch(windows)), policy.encode_obs(batch(next_windows))
    full = policy.sample(cond)
    full_next = policy.sample(cond_next)
    guess = shift_chunk(full, Ta)
    rows = []
    for k in candidates:
        policy.set_warm_start(WarmStartConfig(start_t=k, discrete_dims=[], tail=tail, noise=noise))
        plan = policy.warm_plan()
        state = policy.generator.get_state()  # the perturbed run sees the same noise
        warm = policy.sample(cond_next, x=guess, plan=plan)
        delta = 0.05 * torch.randn(guess.shape, generator=gen)
        policy.generator.set_state(state)
        warm_p = policy.sample(cond_next, x=guess + delta, plan=plan)
        ratio = float((warm_p - warm).flatten(1).norm(dim=1).mean() / delta.flatten(1).norm(dim=1).mean())
        err = float((warm - full_next).abs().mean())
        rows.append({"k": k, "network_calls": len(plan), "contraction": ratio, "error_vs_full": err})
    policy.set_warm_start(None)
    if max_calls is not None:  # a latency budget: the most accurate K' within it
        within = [r for r in rows if r["network_calls"] <= max_calls]
        if not within:
            raise ValueError(f"no candidate K' runs in <= {max_calls} network calls")
        pick = min(within, key=lambda r: r["error_vs_full"])
    else:
        best = min(r["error_vs_full"] for r in rows)
        ok = [r for r in rows if r["contraction"] <= target and r["error_vs_full"] <= best + tolerance]
        pick = ok[0] if ok else min(rows, key=lambda r: r["error_vs_full"])
    return {"recommended_k": pick["k"], "network_calls": pick["network_calls"], "tail": tail, "noise": noise,
            "max_calls": max_calls, "sampler": policy.cfg.sampler, "steps": policy.cfg.num_inference_steps,
            "target_contraction": target, "tolerance": tolerance,
            "guess_error_vs_full": float((guess - full_next).abs().mean()), "candidates": rows,
            "windows": len(windows)}


def calibrate_rti_grids(policy, windows: list[dict], next_windows: list[dict], grids: list[int],
                        max_calls: int | None, **kw) -> dict:
    """``calibrate_rti`` on the policy's sampler with each step count in ``grids`` (its grid of
    that many steps: the coarse tail below K' runs on it), recommending the most accurate
    (grid, K') of all within ``max_calls`` network calls; the policy is left on the winner's
    grid. At a fixed budget a coarser grid can start higher: on the shipped Stack policy, 3
    calls reach K'=20 on DDIM-10's grid but K'=50 on DDIM-4's, with a lower error. The result
    is ``calibrate_rti``'s for the winner, plus ``grids``: each grid's pick (or why none)."""
    if len(grids) > 1 and max_calls is None:
        raise ValueError("grids compare only at one latency budget: give max_calls (--max-calls)")
    sampler, results, rows = policy.cfg.sampler, [], []
    for n in grids:
        policy.set_sampler(sampler, n)
        try:
            res = calibrate_rti(policy, windows, next_windows, max_calls=max_calls, **kw)
        except ValueError as err:  # no candidate within the budget on this grid
            rows.append({"steps": n, "skipped": str(err)})
            continue
        pick = next(r for r in res["candidates"] if r["k"] == res["recommended_k"])
        results.append(res)
        rows.append({"steps": n, "recommended_k": res["recommended_k"], "network_calls": res["network_calls"],
                     "error_vs_full": pick["error_vs_full"]})
    if not results:
        raise ValueError(f"no grid of {grids} has a candidate K' within {max_calls} network calls")
    best = min(results, key=lambda r: next(c["error_vs_full"] for c in r["candidates"] if c["k"] == r["recommended_k"]))
    policy.set_sampler(sampler, best["steps"])
    return {**best, "grids": rows}
