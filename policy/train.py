"""One trainer for the denoising policies (docs/references.md §1).

AdamW with decay groups, linear warmup + cosine decay, EMA of weights
(decay = 1 - (1 + step)^-power, capped), gradient clipping, a progress bar, a periodic
evaluation hook, and exact resumption: the training state (weights, EMA, AdamW moments,
RNG states, step) is a safetensors + JSON directory written atomically every
``save_every`` steps, never a pickle. Batches are drawn with replacement from a seeded
generator, so a run resumed at step k continues exactly as the uninterrupted run.

Layout of ``out_dir``: ``state/`` (resume), ``checkpoint/`` (EMA policy, policy.checkpoint
format), ``log.jsonl`` (one JSON object per log/eval event), ``tb/`` (the same numbers as
TensorBoard curves, policy/curves.py; ``curves=False`` leaves them out).

Data parallel (``torchrun --nproc_per_node N -m dpctrl.launch.cli train ...``, or any process group
initialized before the Trainer): the model is wrapped in DistributedDataParallel (gloo on
CPU, NCCL on GPU). Every rank draws the same global batch indices, noise and timesteps from
the shared seed and trains on its contiguous shard of ``batch_size / N``; DDP averages the
gradients, so the update equals the single-process update on the global batch (up to the
order of floating-point sums). Rank 0 alone logs, evaluates and writes files.
"""
from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

import torch.distributed as dist

from dpctrl.policy import checkpoint
from dpctrl.policy.curves import Curves
from dpctrl.policy.diffusion_policy import DiffusionPolicy


@dataclass
class TrainConfig:
    steps: int = 20000
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_power: float = 0.75
    ema_max: float = 0.9999
    seed: int = 0
    log_every: int = 100
    save_every: int = 1000
    eval_every: int = 0  # 0: only at the end

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        frac = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.lr * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

    def ema_decay(self, step: int) -> float:
        return min(max(1 - (1 + step) ** -self.ema_power, 0.0), self.ema_max)


EvalFn = Callable[[DiffusionPolicy, int], dict]


class Trainer:
    def __init__(self, policy: DiffusionPolicy, dataset, cfg: TrainConfig, out_dir: str | Path,
                 eval_fn: EvalFn | None = None, progress: bool = True,
                 save_fn: Callable[..., object] | None = None, curves: bool = True):
        if len(dataset) == 0:
            raise ValueError("dataset has no training windows")
        self.policy, self.dataset, self.cfg = policy, dataset, cfg
        self.out = Path(out_dir)
        self.eval_fn, self.progress = eval_fn, progress
        self.save_fn = save_fn or (lambda m, path, extra=None: m.save(path, extra))  # writes a checkpoint
        self.world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.rank = dist.get_rank() if self.world > 1 else 0
        self.ddp = None
        if self.world > 1:
            if cfg.batch_size % self.world:
                raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {self.world} processes")
            # wrapping broadcasts rank 0's weights; done before the EMA copy so it starts equal too
            self.ddp = torch.nn.parallel.DistributedDataParallel(policy)
        self.ema = copy.deepcopy(policy).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.opt = torch.optim.AdamW(self._groups(), lr=cfg.lr, betas=cfg.betas)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.last_eval: dict = {}
        self.resumed_from: int | None = None
        if (self.out / "state").exists():
            self._load_state()
            self.resumed_from = self.step
        # events past the saved step (logged by an interrupted run after its last save) are purged
        purge = None if self.resumed_from is None else self.resumed_from + 1
        self.curves = Curves(self.out / "tb", purge_step=purge) if curves and not self.rank else None

    def _groups(self) -> list[dict]:
        return self.policy.param_groups(self.cfg.weight_decay)

    # ---------------------------------------------------------------- state
    def _save_state(self) -> None:
        tensors = {f"model.{k}": v for k, v in self.policy.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        opt = self.opt.state_dict()
        for idx, st in opt["state"].items():
            for name, v in st.items():
                tensors[f"optim.{idx}.{name}"] = torch.as_tensor(v)
        tensors["rng.batch"] = self.gen.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        meta = {"step": self.step, "train": asdict(self.cfg), "param_groups": opt["param_groups"],
                "last_eval": self.last_eval}

        def write(tmp: Path) -> None:
            save_file(tensors, str(tmp / "state.safetensors"))
            (tmp / "state.json").write_text(json.dumps(meta, indent=2) + "\n")

        checkpoint.write_atomic_dir(self.out / "state", write)

    def _load_state(self) -> None:
        d = self.out / "state"
        meta = json.loads((d / "state.json").read_text())
        tensors = load_file(str(d / "state.safetensors"))
        strip = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
        self.policy.load_state_dict(strip("model."), strict=False)
        self.ema.load_state_dict(strip("ema."), strict=False)
        state: dict = {}
        for k, v in strip("optim.").items():
            idx, name = k.split(".", 1)
            state.setdefault(int(idx), {})[name] = v
        self.opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.gen.set_state(tensors["rng.batch"])
        torch.set_rng_state(tensors["rng.torch"])
        self.step = int(meta["step"])
        self.last_eval = meta.get("last_eval", {})

    def _log(self, record: dict) -> None:
        if self.rank:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.curves is not None:
            self.curves.add(record)

    # ---------------------------------------------------------------- loop
    def _close_curves(self) -> None:
        if self.curves is not None:
            self.curves.close()

    def _update_ema(self) -> None:
        decay = self.cfg.ema_decay(self.step)
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.policy.parameters()):
                pe.mul_(decay).add_(p.detach(), alpha=1 - decay)

    def _ddp_loss(self, idx: np.ndarray) -> torch.Tensor:
        """This rank's shard of the global batch, with the global draw of noise and timesteps
        (drawn in the same order as ``DiffusionPolicy.loss`` draws them)."""
        B, T, A = len(idx), self.policy.cfg.horizon, self.policy.cfg.action_dim
        noise = torch.randn((B, T, A), generator=self.gen)
        t = self.policy.sampler.train_timesteps(B, generator=self.gen)
        lo, hi = self.rank * B // self.world, (self.rank + 1) * B // self.world
        dev = next(self.policy.parameters()).device
        batch = self.dataset.get_batch(idx[lo:hi])
        batch = {"obs": {k: v.to(dev) for k, v in batch["obs"].items()}, "action": batch["action"].to(dev)}
        return self.ddp(batch, noise=noise[lo:hi].to(dev), t=t[lo:hi].to(dev))

    def _evaluate(self) -> None:
        if self.eval_fn is None or self.rank:
            return
        self.last_eval = {"step": self.step, **self.eval_fn(self.ema, self.step)}
        self._log({"event": "eval", **self.last_eval})

    def run(self, until: int | None = None) -> dict:
        """Train to ``cfg.steps`` (or stop after step ``until``, as an interruption would)."""
        cfg = self.cfg
        self.policy.train()
        n = len(self.dataset)
        losses: list[float] = []
        norms: list[float] = []
        t0, samples = time.perf_counter(), 0
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step",
                   disable=not self.progress or self.rank > 0)
        while self.step < cfg.steps:
            idx = torch.randint(0, n, (cfg.batch_size,), generator=self.gen).numpy()
            for g in self.opt.param_groups:
                g["lr"] = cfg.lr_at(self.step)
            if self.ddp is None:
                loss = self.policy.loss(self.dataset.get_batch(idx), generator=self.gen)
            else:
                loss = self._ddp_loss(idx)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at step {self.step}; last state in {self.out / 'state'}")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.grad_clip)))
            self.opt.step()
            self.step += 1
            self._update_ema()
            losses.append(loss.item())
            samples += cfg.batch_size
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                rate = samples / (time.perf_counter() - t0)
                rec = {"event": "train", "step": self.step, "loss": float(np.mean(losses)),
                       "lr": cfg.lr_at(self.step - 1), "grad_norm": float(np.mean(norms)), "samples_per_s": rate}
                self._log(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", sps=f"{rate:.0f}")
                losses, norms = [], []
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                self._evaluate()
                self.policy.train()
            if (self.step % cfg.save_every == 0 or self.step == cfg.steps) and not self.rank:
                self._save_state()
                self.save_fn(self.ema, self.out / "checkpoint", extra={"train_step": self.step})
            if until is not None and self.step >= until:
                bar.close()
                self._close_curves()
                return {"step": self.step, "interrupted": True}
        bar.close()
        self._evaluate()
        self._close_curves()
        if self.eval_fn is not None and not self.rank:
            self._save_state()
        elapsed = time.perf_counter() - t0
        return {"step": self.step, "samples_per_s": samples / elapsed if samples else float("nan"),
                "eval": self.last_eval, "resumed_from": self.resumed_from}


def train_config_model(model, dataset, out: str | Path, recipe: dict, steps: int, batch_size: int, lr: float,
                       seed: int = 0, warmup_steps: int = 500, save_every: int = 1000, progress: bool = True) -> dict:
    """Train a ``ConfigCheckpoint`` model (the planners, PAD) with the recipe stored in every
    checkpoint; warm-up and checkpoint period shrink for short runs (a tenth / a quarter of
    ``steps``). The result adds the wall time, ms per batch and the parameter count."""
    tcfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                       warmup_steps=min(warmup_steps, steps // 10), save_every=max(save_every, steps // 4))
    trainer = Trainer(model, dataset, tcfg, out, progress=progress,
                      save_fn=lambda m, path, extra=None: m.save(path, {**(extra or {}), **recipe}))
    t0 = time.perf_counter()
    rec = trainer.run()
    rec["train_seconds"] = time.perf_counter() - t0
    ran = steps - (rec.get("resumed_from") or 0)  # a resumed run trains only the remaining steps
    rec["ms_per_batch"] = rec["train_seconds"] / max(1, ran) * 1000
    rec["params"] = sum(p.numel() for p in model.parameters())
    return rec
