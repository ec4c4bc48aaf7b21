"""PAD: the DiT's structure (adaLN-Zero start, image-to-action mask), the loss and its lambda
ramp, sampling, checkpoints, and the frame/action samples over a store."""
import numpy as np
import pytest
import torch

from dpctrl.data import ReplayBuffer
from dpctrl.data.samples import FrameActionSamples
from dpctrl.policy.nets.dit import DiT, DiTConfig
from dpctrl.policy.pad import PadConfig, PadPolicy

SMALL = dict(image_size=16, patch=4, width=32, depth=2, heads=2, horizon=4, n_action_steps=2, state_dim=5,
             action_dim=3)
PAD_SMALL = dict(SMALL, model_size=8)  # 16 x 16 frames pooled to 8 x 8 (2 x 2 patches of 4)


def dit_inputs(cfg, B=2):
    S = cfg.image_size
    return (torch.randn(B, 3, S, S), torch.randn(B, 3 * cfg.k_future, S, S), torch.randn(B, cfg.horizon, cfg.action_dim),
            torch.randn(B, cfg.state_dim), torch.tensor([10.0, 50.0]), torch.zeros(B, dtype=torch.long))


def test_dit_starts_at_zero_output_and_the_mask_hides_the_action_token_from_images():
    cfg = DiTConfig(**{k: v for k, v in SMALL.items() if k != "n_action_steps"})
    net = DiT(cfg)
    fut, act = net(*dit_inputs(cfg))
    assert fut.shape == (2, 3, 16, 16) and act.shape == (2, 4, 3)
    assert fut.abs().max() == 0 and act.abs().max() == 0  # adaLN-Zero + zero output layers
    for p in net.parameters():  # leave the zero start to see information flow
        torch.nn.init.normal_(p, std=0.1)
    cur, noisy, actions, state, t, task = dit_inputs(cfg)
    f1, a1 = net(cur, noisy, actions, state, t, task)
    f2, a2 = net(cur, noisy, actions + 1.0, state + 1.0, t, task)
    torch.testing.assert_close(f1, f2)  # image tokens never see the action token
    assert not torch.allclose(a1, a2)
    net_open = DiT(DiTConfig(**{**cfg.__dict__, "mask_image_to_action": False}))
    net_open.load_state_dict(net.state_dict())
    f3, _ = net_open(cur, noisy, actions + 1.0, state + 1.0, t, task)
    assert not torch.allclose(f1, f3)  # without the mask they do


def pad_batch(B=8, S=16, k=1):  # observed size 16
    g = torch.Generator().manual_seed(0)
    return {"state": torch.randn(B, 5, generator=g), "image": torch.randint(0, 255, (B, S, S, 3), generator=g, dtype=torch.uint8),
            "future": torch.randint(0, 255, (B, k, S, S, 3), generator=g, dtype=torch.uint8),
            "action": torch.rand(B, 4, 3, generator=g) * 2 - 1, "task": torch.zeros(B, dtype=torch.long)}


def test_loss_learns_a_fixed_batch_and_lambda_ramps():
    torch.manual_seed(0)
    pol = PadPolicy(PadConfig(**PAD_SMALL, lambda_start=0.1, lambda_end=1.0, lambda_steps=10))
    pol.set_stats(np.random.randn(50, 5), np.random.rand(50, 3) * 2 - 1)
    opt = torch.optim.AdamW(pol.parameters(), 3e-3)
    batch = pad_batch()
    lams, losses = [], []
    for _ in range(60):
        g = torch.Generator().manual_seed(1)  # the same noise every step: a fixed target
        loss = pol.loss(batch, generator=g)
        lams.append(pol.last_losses["lambda"])
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert lams[0] == pytest.approx(0.1) and lams[-1] == pytest.approx(1.0) and lams[5] < lams[9]
    assert int(pol.loss_calls) == 60
    assert losses[-1] < 0.5 * losses[10]
    ablation = PadPolicy(PadConfig(**PAD_SMALL, image_loss_weight=0.0))
    ablation.loss(batch)
    assert ablation.last_losses["image"] > 0  # computed and reported, not trained on


def test_prediction_checkpoint_round_trip_and_bad_observations(tmp_path):
    pol = PadPolicy(PadConfig(**PAD_SMALL, tasks=["reach", "push"]), seed=3)
    for p in pol.net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    pol.set_stats(np.random.randn(50, 5), np.random.rand(50, 3) * 4 - 2)
    obs = {"state": np.zeros((1, 5), np.float32), "corner_image": np.full((1, 16, 16, 3), 100, np.uint8)}
    pol.set_task("push")
    a = pol.predict_chunk(obs)
    assert a.shape == (4, 3) and pol.nfe_last == 10 and pol.last_frames.shape == (1, 8, 8, 3)
    assert pol.pooled(obs["corner_image"]).shape == (1, 8, 8, 3) and (pol.pooled(obs["corner_image"]) == 100).all()
    pol.save(tmp_path / "ck")
    back = PadPolicy.load(tmp_path / "ck", seed=3)
    back.set_task("push")
    np.testing.assert_allclose(back.predict_chunk(obs), a, atol=1e-6)
    with pytest.raises(ValueError, match="not 'lift'"):
        back.set_task("lift")
    with pytest.raises(ValueError, match="NaN"):
        back.predict_chunk({**obs, "state": np.full((1, 5), np.nan, np.float32)})
    with pytest.raises(ValueError, match="missing key"):
        back.predict_chunk({"state": obs["state"]})


def test_frame_action_samples_clamp_at_episode_ends(tmp_path):
    rb = ReplayBuffer.create(tmp_path / "s.zarr")
    for n, base in ((5, 0), (3, 100)):
        steps = np.arange(base, base + n)
        rb.add_episode({"state": np.repeat(steps[:, None], 5, 1).astype(np.float32),
                        "corner_image": np.repeat(steps, 16 * 16 * 3).reshape(n, 16, 16, 3).astype(np.uint8),
                        "action": np.repeat(steps[:, None], 3, 1).astype(np.float32)})
    ds = FrameActionSamples([rb], "corner_image", horizon=4, k_future=2, frame_stride=2)
    assert len(ds) == 8
    b = ds.get_batch(np.array([3, 5]))
    assert b["action"][0, :, 0].tolist() == [3, 4, 4, 4]  # episode 0 ends at step 4
    assert b["future"][0, :, 0, 0, 0].tolist() == [4, 4]
    assert b["action"][1, :, 0].tolist() == [100, 101, 102, 102]  # episode 1 starts at its own step 0
    assert b["future"][1, :, 0, 0, 0].tolist() == [102, 102]
    assert b["task"].tolist() == [0, 0]


def test_state_index_hides_the_other_columns_and_survives_a_checkpoint(tmp_path):
    # the network sees columns 0 and 3 only: changing the others must not change anything
    pol = PadPolicy(PadConfig(**PAD_SMALL, state_index=[0, 3]), seed=1)
    for p in pol.net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    states = np.random.default_rng(0).normal(size=(50, 5))
    pol.set_stats(states, np.random.rand(50, 3) * 2 - 1)
    assert pol.state_lo.shape == (2,) and float(pol.state_lo[1]) == pytest.approx(states[:, 3].min())
    assert pol.expected_obs()["state"] == (1, 5)  # the observation keeps its full shape
    img = np.full((1, 16, 16, 3), 90, np.uint8)
    seen = np.array([[0.3, 0.0, 0.0, -0.2, 0.0]], np.float32)
    hidden = seen + np.array([[0.0, 5.0, -5.0, 0.0, 5.0]], np.float32)
    moved = seen + np.array([[0.5, 0.0, 0.0, 0.0, 0.0]], np.float32)

    def chunk(policy, state):
        policy.generator.manual_seed(7)
        return policy.predict_chunk({"state": state, "corner_image": img})

    a = chunk(pol, seen)
    np.testing.assert_array_equal(chunk(pol, hidden), a)
    assert not np.allclose(chunk(pol, moved), a)  # a seen column does change the actions
    batch = pad_batch()
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    l1 = pol.loss(batch, generator=g())
    l2 = pol.loss({**batch, "state": batch["state"] + torch.tensor([0.0, 3.0, 3.0, 0.0, 3.0])}, generator=g())
    assert l1.item() == pytest.approx(l2.item(), rel=1e-6)
    pol.save(tmp_path / "ck")
    back = PadPolicy.load(tmp_path / "ck", seed=1)
    assert back.cfg.state_index == [0, 3]
    np.testing.assert_allclose(chunk(back, seen), a, atol=1e-6)
    for bad in ([], [0, 0], [5], [-1]):
        with pytest.raises(ValueError, match="state_index"):
            PadConfig(**PAD_SMALL, state_index=bad)
