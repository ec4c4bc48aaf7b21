"""Trajectory planners (Diffuser / Trajectory-Diffuser style) on synthetic trajectories."""
import numpy as np
import pytest
import torch

from dpctrl.policy.planner import PlannerConfig, TrajectoryPlanner


def _lines(n=256, points=16, seed=0):
    """Straight constant-speed paths from a random start to a random end (x, y, vx, vy)."""
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(-2, 2, (n, 2)), rng.uniform(-2, 2, (n, 2))
    s = np.linspace(0, 1, points)[None, :, None]
    pos = a[:, None] + s * (b - a)[:, None]
    vel = np.repeat((b - a)[:, None], points, 1)
    return np.concatenate([pos, vel], -1).astype(np.float32)


def _tiny(method):
    return PlannerConfig(method=method, n_points=16, stride=2, chunk=4, unet_dim=8, unet_mults=(1, 2), d_model=32,
                         n_layers=1, n_heads=2)


@pytest.mark.parametrize("method", ["diffuser", "trajdiff"])
def test_plans_keep_start_and_goal_and_learn(method, tmp_path):
    torch.manual_seed(0)
    data = _lines()
    p = TrajectoryPlanner(_tiny(method))
    p.fit_states(data)
    opt = torch.optim.Adam(p.parameters(), 3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(300):
        idx = torch.randint(0, len(data), (64,), generator=gen).numpy()
        loss = p.loss({"traj": torch.from_numpy(data[idx])}, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:20])
    p.eval()
    test = _lines(8, seed=1)
    plan = p.plan(test[:, 0], test[:, -1, :2])
    assert plan.shape == (8, 16, 4) and np.isfinite(plan).all()
    np.testing.assert_allclose(plan[:, 0], test[:, 0], atol=1e-5)  # inpainted start state
    np.testing.assert_allclose(plan[:, -1, :2], test[:, -1, :2], atol=1e-5)  # inpainted goal
    # it learned the straight line: mid-points well closer to it than standing at the start
    err = np.abs(plan[:, 8, :2] - test[:, 8, :2]).mean()
    standing = np.abs(test[:, 0, :2] - test[:, 8, :2]).mean()
    assert err < 0.6 * standing, (err, standing)
    # checkpoint round trip: same seed -> the same plans
    p.save(tmp_path / "ck")
    q = TrajectoryPlanner.load(tmp_path / "ck", seed=0)
    r = TrajectoryPlanner.load(tmp_path / "ck", seed=0)
    np.testing.assert_array_equal(q.plan(test[:, 0], test[:, -1, :2]), r.plan(test[:, 0], test[:, -1, :2]))


def test_trajdiff_refines_with_its_few_steps_only():
    p = TrajectoryPlanner(_tiny("trajdiff")).eval()
    calls = []
    p.net.unet.register_forward_pre_hook(lambda mod, args: calls.append(int(args[1][0])))
    p.plan(np.zeros((1, 4), np.float32), np.ones((1, 2), np.float32))
    assert calls == [10, 7, 3]  # refine_steps=3 DDIM steps from refine_t=10
    with pytest.raises(ValueError, match="refines"):
        p.plan(np.zeros((1, 4), np.float32), np.ones((1, 2), np.float32), n_steps=20)
    with pytest.raises(ValueError, match="1..5"):
        PlannerConfig(method="trajdiff", refine_steps=8)


def test_bad_inputs_are_refused():
    p = TrajectoryPlanner(_tiny("diffuser")).eval()
    with pytest.raises(ValueError, match="non-finite"):
        p.plan(np.full((1, 4), np.nan, np.float32), np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        p.plan(np.zeros((1, 3), np.float32), np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="unknown planner"):
        PlannerConfig(method="mpc")
