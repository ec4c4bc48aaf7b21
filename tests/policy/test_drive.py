"""Truncated anchored diffusion and its baselines (policy/drive.py, policy/trajectories.py)."""
import numpy as np
import pytest
import torch

from dpctrl.policy import checkpoint
from dpctrl.policy.drive import DriveConfig, DrivePlanner, focal_loss
from dpctrl.policy.train import TrainConfig, Trainer
from dpctrl.policy.trajectories import kmeans, lateral_side, mode_diversity

W = 8


def fork_data(n=512, seed=0):
    """A bimodal toy: the same scene, futures go 4 m left or right (half each)."""
    rng = np.random.default_rng(seed)
    t = 0.5 * np.arange(1, W + 1)
    side = rng.choice([-1.0, 1.0], n)
    s = np.clip(t / 3, 0, 1)
    fut = np.stack([np.broadcast_to(25 * t, (n, W)), side[:, None] * 4 * (3 * s ** 2 - 2 * s ** 3)], -1)
    fut = fut + rng.normal(0, 0.1, fut.shape)
    ego = np.tile(np.array([4.0, 25.0, 0.0, 0.0], np.float32), (n, 1))
    agents = np.zeros((n, 8, 5), np.float32)
    agents[:, 0] = [1.0, 30.0, 0.0, -15.0, 0.0]
    return {"ego": ego, "agents": agents}, fut.astype(np.float32)


class Toy:
    def __init__(self, obs, fut):
        self.obs, self.fut = obs, fut

    def __len__(self):
        return len(self.fut)

    def get_batch(self, idx):
        return {"obs": {k: torch.from_numpy(v[idx]) for k, v in self.obs.items()},
                "future": torch.from_numpy(self.fut[idx])}


def small(method, **kw):
    return DriveConfig(method=method, d_model=32, n_heads=2, enc_layers=1, n_anchors=kw.pop("n_anchors", 6), **kw)


def test_kmeans_finds_separated_clusters_in_size_order():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-5, 0.1, (300, 2)), rng.normal(5, 0.1, (100, 2))])
    c = kmeans(x, 2, seed=1)
    np.testing.assert_allclose(c, [[-5, -5], [5, 5]], atol=0.05)  # largest cluster first


def test_mode_diversity_is_zero_for_copies_and_high_for_disjoint_paths():
    t = 0.5 * np.arange(1, W + 1)
    straight = np.stack([20 * t, np.zeros(W)], -1)
    assert mode_diversity(np.stack([straight] * 5)) == pytest.approx(0.0)
    left, right = straight + [0, -8], straight + [0, 8]
    assert mode_diversity(np.stack([left, right])) > 0.4
    assert list(lateral_side(np.stack([left, straight, right]))) == [-1, 0, 1]


def test_focal_loss_prefers_the_right_anchor():
    target = torch.tensor([[0.0, 1.0, 0.0]])
    good, bad = torch.tensor([[-4.0, 4.0, -4.0]]), torch.tensor([[4.0, -4.0, 4.0]])
    assert focal_loss(good, target) < 0.01 < focal_loss(bad, target)


def test_anchored_inference_runs_exactly_the_truncated_levels():
    obs, fut = fork_data(64)
    planner = DrivePlanner(small("anchored", infer_ts=(40, 20)))
    planner.fit_trajectories(fut)
    seen = []
    decode = planner.net.decode
    planner.net.decode = lambda mem, pad, x, t, **kw: seen.append(t.tolist()) or decode(mem, pad, x, t, **kw)
    plan = planner.plan({k: v[:2] for k, v in obs.items()})
    assert [s[0] for s in seen] == [40.0, 20.0] and all(len(set(s)) == 1 for s in seen)
    assert plan.trajs.shape == (2, 6, W, 2) and plan.scores.shape == (2, 6)
    assert plan.best.shape == (2, W, 2) and plan.top(3).shape == (2, 3, W, 2)
    with pytest.raises(ValueError, match="truncated"):
        planner.plan({k: v[:1] for k, v in obs.items()}, n_steps=20)
    with pytest.raises(ValueError, match="trained range"):
        small("anchored", infer_ts=(60, 20))


def test_vanilla_runs_its_ddim_grid_from_pure_noise():
    obs, fut = fork_data(16)
    planner = DrivePlanner(small("vanilla"))
    planner.fit_trajectories(fut)
    seen = []
    decode = planner.net.decode
    planner.net.decode = lambda mem, pad, x, t, **kw: seen.append((x.shape, kw)) or decode(mem, pad, x, t, **kw)
    plan = planner.plan({k: v[:3] for k, v in obs.items()}, n_steps=2, n_samples=5)
    assert len(seen) == 2 and seen[0][0] == (15, 1, 2 * W)  # 3 scenes x 5 samples, one query each
    assert seen[0][1] == {"residual": False}  # epsilon prediction by default
    assert plan.trajs.shape == (3, 5, W, 2)


def test_vanilla_epsilon_loss_is_the_noise_regression():
    torch.manual_seed(0)
    obs, fut = fork_data(32)
    planner = DrivePlanner(small("vanilla"))
    planner.fit_trajectories(fut)
    assert planner.cfg.prediction_type == "epsilon" and planner.sampler.clip_sample
    batch = {"obs": {k: torch.from_numpy(v) for k, v in obs.items()}, "future": torch.from_numpy(fut)}
    assert torch.isfinite(planner.loss(batch, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="not available"):
        small("anchored", prediction_type="epsilon")


def test_anchored_learns_both_modes_and_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    obs, fut = fork_data(512)
    planner = DrivePlanner(small("anchored"), seed=0)
    planner.fit_trajectories(fut)
    cfg = TrainConfig(steps=250, batch_size=64, lr=2e-3, warmup_steps=20, save_every=1000, log_every=50)
    Trainer(planner, Toy(obs, fut), cfg, tmp_path / "run", progress=False,
            save_fn=lambda m, p, extra=None: m.save(p, extra)).run()
    loaded = DrivePlanner.load(tmp_path / "run" / "checkpoint", seed=3)
    plan = loaded.plan({k: v[:1] for k, v in obs.items()})
    sides = set(lateral_side(plan.top(3)[0]).tolist())
    assert {-1, 1} <= sides  # both lanes among the 3 most confident
    best_err = np.abs(plan.best[0] - fut[:1]).min()
    assert np.isfinite(plan.trajs).all() and best_err < 10
    again = DrivePlanner.load(tmp_path / "run" / "checkpoint", seed=3).plan({k: v[:1] for k, v in obs.items()})
    np.testing.assert_array_equal(plan.trajs, again.trajs)


def test_drive_checkpoints_refuse_other_formats(tmp_path):
    with pytest.raises(checkpoint.CheckpointError):
        DrivePlanner.load(tmp_path)  # empty dir
    (tmp_path / "x.pkl").write_bytes(b"\x80\x04junk")
    with pytest.raises(checkpoint.CheckpointError, match="pickle"):
        DrivePlanner.load(tmp_path / "x.pkl")
    with pytest.raises(checkpoint.CheckpointError, match="expected 'dpctrl-drive'"):
        DrivePlanner.load("lift")  # a shipped policy, not a planner
