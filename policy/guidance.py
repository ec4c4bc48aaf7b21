"""Committed actions -> guides for the denoising loop (policy/denoise.py), for a chunk policy
with a normalizer and chunk geometry (``cfg.horizon``, ``cfg.n_obs_steps``, ``cfg.action_dim``,
``normalize_actions``).

- ``inpaint_guide``: hard replacement of the new chunk's first executed steps by the committed
  actions, weight 1 on the first half of them, then exponential decay (``InpaintGuide``);
- ``guide_for``: what ``predict_batch(committed=...)`` asks for: an array (inpainting) or a
  ``Prefix`` (policy/chunking.py) with mode ``inpaint`` or ``rtc`` (``RTCGuide``, the soft mask
  of real-time chunking, ``rtc_weights``);
- ``most_coherent``: for a ``bid`` prefix, which of N sampled candidates to keep.
"""
from __future__ import annotations

import numpy as np
import torch

from dpctrl.policy import chunking
from dpctrl.policy.chunking import Prefix, rtc_weights
from dpctrl.policy.denoise import InpaintGuide, RTCGuide
from dpctrl.policy.prefix import PrefixCondition


def committed_actions(policy, actions) -> np.ndarray:
    acts = np.asarray(actions, dtype=np.float32)
    if acts.ndim == 2:
        acts = acts[None]
    if acts.ndim != 3 or acts.shape[2] != policy.cfg.action_dim:
        raise ValueError(f"committed actions must be (d, {policy.cfg.action_dim}) or (B, d, {policy.cfg.action_dim}), "
                         f"got {np.asarray(actions).shape}")
    return acts


def _target(policy, acts: np.ndarray, d: int) -> torch.Tensor:
    """Normalized committed actions at horizon indices To-1 .. To-1+d-1, zeros elsewhere."""
    cfg = policy.cfg
    target = torch.zeros(acts.shape[0], cfg.horizon, cfg.action_dim)
    s = cfg.n_obs_steps - 1
    target[:, s:s + d] = policy.normalize_actions(torch.as_tensor(acts[:, :d]))
    return target


def inpaint_guide(policy, actions: np.ndarray, decay: float = 2.0) -> InpaintGuide:
    """Real-time-chunking-style inpainting from committed actions ``(d, A)`` (one for the whole
    batch) or ``(B, d, A)`` (one per row) in robot units, placed at horizon indices
    To-1 .. To-1+d-1 (the new chunk's first executed steps): weight 1 on the first half of
    them, then exp decay, 0 beyond."""
    cfg = policy.cfg
    acts = committed_actions(policy, actions)
    d = min(acts.shape[1], cfg.horizon - cfg.n_obs_steps + 1)
    w = torch.zeros(cfg.horizon)
    if d:
        s = cfg.n_obs_steps - 1
        full = max(1, d // 2)
        w[s:s + d] = torch.tensor([1.0 if i < full else float(np.exp(-(i - full + 1) / decay)) for i in range(d)])
    return InpaintGuide(_target(policy, acts, d), w)


def guide_for(policy, committed, batch: int) -> InpaintGuide | RTCGuide | PrefixCondition | None:
    """None for nothing committed; ``inpaint_guide`` for an array or an ``inpaint`` prefix; for an
    ``rtc`` prefix an ``RTCGuide`` whose mask is 1 on the prefix's ``delay`` steps, then decays;
    for a ``prefix`` one the ``delay`` actions (at most the policy's ``prefix_max``) as a
    ``PrefixCondition``. ``rtc`` and ``prefix`` need the eager network (gradients, flags)."""
    if committed is None:
        return None
    prefix = committed if isinstance(committed, Prefix) else Prefix(np.asarray(committed), 0, None, "inpaint")
    deploy = getattr(policy, "deploy", "eager")
    if prefix.mode in ("rtc", "prefix") and deploy != "eager":
        raise ValueError(f"--overlap {prefix.mode} needs the eager network ({'gradients' if prefix.mode == 'rtc' else 'prefix flags'}), "
                         f"which the {deploy!r} deploy path does not have; use the eager path (no --deploy)")
    if prefix.mode == "prefix" and not policy.cfg.prefix_max:
        raise ValueError("--overlap prefix needs a policy trained for it (dpctrl train --prefix-max D)")
    if np.asarray(prefix.actions).size == 0:
        return None
    acts = committed_actions(policy, prefix.actions)
    if len(acts) not in (1, batch):
        raise ValueError(f"committed actions for {len(acts)} rows, observations for {batch}")
    if prefix.mode == "inpaint":
        return inpaint_guide(policy, acts)
    cfg = policy.cfg
    if prefix.mode == "prefix":
        d = min(prefix.delay, acts.shape[1], cfg.prefix_max)
        flags = torch.zeros(cfg.horizon, dtype=torch.bool)
        flags[cfg.n_obs_steps - 1: cfg.n_obs_steps - 1 + d] = True
        return PrefixCondition(_target(policy, acts, d), flags) if d else None
    usable = cfg.horizon - cfg.n_obs_steps + 1
    r = min(acts.shape[1], usable)
    w = torch.zeros(cfg.horizon)
    w[cfg.n_obs_steps - 1:] = torch.as_tensor(rtc_weights(usable, prefix.delay, prefix.execute, r))
    return RTCGuide(_target(policy, acts, r), w, prefix.beta)


def most_coherent(policy, candidates: np.ndarray, prefix: Prefix) -> np.ndarray:
    """Bidirectional decoding's backward criterion for a ``bid`` prefix: of ``candidates``
    (B, N, T, A) in robot units, per row the index of the one whose executable actions (from
    index To-1) are closest to the committed ones under the rtc mask (``rtc_weights``)."""
    cfg = policy.cfg
    acts = committed_actions(policy, prefix.actions)
    if len(acts) not in (1, len(candidates)):
        raise ValueError(f"committed actions for {len(acts)} rows, observations for {len(candidates)}")
    usable = cfg.horizon - cfg.n_obs_steps + 1
    weights = rtc_weights(usable, prefix.delay, prefix.execute, min(acts.shape[1], usable))
    return chunking.most_coherent(candidates[:, :, cfg.n_obs_steps - 1:], acts, weights)
