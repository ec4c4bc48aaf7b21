import json

import numpy as np
import pytest
import torch

from helpers import ToyDataset, obs_window, tiny_policy
from dpctrl.policy.diffusion_policy import DiffusionPolicy
from dpctrl.policy.train import Trainer, TrainConfig


def _cfg(**kw):
    base = dict(steps=20, batch_size=16, lr=1e-3, warmup_steps=5, log_every=5, save_every=10, seed=0)
    return TrainConfig(**{**base, **kw})


def test_resume_continues_exactly(tmp_path):
    full = Trainer(tiny_policy(), ToyDataset(), _cfg(), tmp_path / "a", progress=False)
    full.run()
    half = Trainer(tiny_policy(), ToyDataset(), _cfg(), tmp_path / "b", progress=False)
    half.run(until=13)  # killed after step 13: the last saved state is step 10
    resumed = Trainer(tiny_policy(seed=99), ToyDataset(), _cfg(), tmp_path / "b", progress=False)
    assert resumed.step == 10
    resumed.run()
    for (k, a), b in zip(full.policy.state_dict().items(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(full.ema.parameters(), resumed.ema.parameters()):
        assert torch.equal(a, b)
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["event"] == "train"] == [5, 10, 15, 20]
    assert [r["step"] for r in log if r["event"] == "train"].count(10) == 1


def test_training_learns_and_checkpoint_loads(tmp_path):
    ds = ToyDataset()
    pol = tiny_policy(prediction_type="sample")  # epsilon needs far more steps on this toy
    calls = []
    tr = Trainer(pol, ds, _cfg(steps=1000, batch_size=32, eval_every=500, save_every=1000), tmp_path,
                 eval_fn=lambda p, step: calls.append(step) or {"success_rate": 0.5}, progress=False)
    tr.run()
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["event"] == "train"]
    assert losses[-1] < 0.5 * losses[0]
    assert calls == [500, 1000]
    loaded = DiffusionPolicy.load(tmp_path / "checkpoint")
    assert json.loads((tmp_path / "checkpoint" / "config.json").read_text())["train_step"] == 1000
    # the trained policy maps observation -> action as the data does (DDIM-10, EMA weights)
    obs = {k: v[:8] for k, v in ds.obs.items()}
    err = np.abs(loaded.predict_batch(obs) - ds.action[:8])
    # action token 0 cannot see the last observation step (the t >= s-1 memory mask), so only
    # tokens >= To-1 = 1, the ones a policy executes, are held to the data
    assert err[:, 1:].mean() < 0.1


def test_ema_and_lr_schedules():
    cfg = TrainConfig(steps=1000, warmup_steps=100, lr=1e-3)
    assert cfg.lr_at(0) == pytest.approx(1e-5) and cfg.lr_at(99) == pytest.approx(1e-3)
    assert cfg.lr_at(550) == pytest.approx(5e-4) and cfg.lr_at(1000) == pytest.approx(0.0, abs=1e-12)
    assert cfg.ema_decay(0) == 0.0 and 0.99 < cfg.ema_decay(10_000) <= 0.9999
    assert cfg.ema_decay(10**9) == 0.9999


def test_empty_dataset_is_an_error(tmp_path):
    class Empty(ToyDataset):
        def __len__(self):
            return 0
    with pytest.raises(ValueError, match="no training windows"):
        Trainer(tiny_policy(), Empty(), _cfg(), tmp_path)


def test_tensorboard_curves_and_a_resumed_run_equal_an_uninterrupted_one(tmp_path):
    """The curves read back with TensorBoard's own reader: each logged field at each log step,
    EMA eval success at each evaluation; an interrupted run that logged past its last saved state
    (step 15 > 10) is purged there on resume, so its curves equal the uninterrupted run's."""
    pytest.importorskip("tensorboard")
    from dpctrl.policy.curves import read_curves
    evals = lambda p, step: {"success_rate": step / 100}  # noqa: E731
    full = Trainer(tiny_policy(), ToyDataset(), _cfg(eval_every=10), tmp_path / "a", progress=False, eval_fn=evals)
    full.run()
    half = Trainer(tiny_policy(), ToyDataset(), _cfg(eval_every=10), tmp_path / "b", progress=False, eval_fn=evals)
    half.run(until=17)
    Trainer(tiny_policy(), ToyDataset(), _cfg(eval_every=10), tmp_path / "b", progress=False, eval_fn=evals).run()
    a, b = read_curves(tmp_path / "a" / "tb"), read_curves(tmp_path / "b" / "tb")
    assert set(a) == {"train/loss", "train/lr", "train/grad_norm", "train/samples_per_s", "eval/success_rate"}
    assert [s for s, _ in a["train/loss"]] == [5, 10, 15, 20]
    assert a["eval/success_rate"] == [(10, pytest.approx(0.1)), (20, pytest.approx(0.2))]
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [v for _, v in a["train/loss"]] == pytest.approx([r["loss"] for r in log if r["event"] == "train"])
    assert all(v > 0 for _, v in a["train/grad_norm"])
    for tag in ("train/loss", "train/lr", "train/grad_norm", "eval/success_rate"):
        assert [s for s, _ in b[tag]] == [s for s, _ in a[tag]], tag
        assert [v for _, v in b[tag]] == pytest.approx([v for _, v in a[tag]], rel=1e-6), tag


def test_no_curves_when_asked(tmp_path):
    Trainer(tiny_policy(), ToyDataset(), _cfg(), tmp_path / "a", progress=False, curves=False).run()
    assert not (tmp_path / "a" / "tb").exists()
