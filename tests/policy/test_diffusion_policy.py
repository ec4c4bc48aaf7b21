import numpy as np
import pytest
import torch

from helpers import obs_window, tiny_policy

from dpctrl.policy.guidance import inpaint_guide


def test_chunk_shape_units_and_nfe():
    pol = tiny_policy().eval()
    for name, n in [("ddim", 10), ("ddpm", 20), ("dpmpp", 5)]:
        pol.set_sampler(name, n)
        a = pol.predict_chunk(obs_window())
        assert a.shape == (8, 2) and a.dtype == np.float32
        assert pol.nfe_last == n
        # clip_sample keeps normalized actions in [-1, 1] -> robot units within the data range
        assert (a[:, 0] >= -2 - 1e-5).all() and (a[:, 0] <= 2 + 1e-5).all()
    batch = pol.predict_batch(obs_window(batch=3))
    assert batch.shape == (3, 8, 2)


def test_flow_family_samples_only_with_flow():
    pol = tiny_policy(family="flow", sampler="flow", num_inference_steps=4).eval()
    assert pol.predict_chunk(obs_window()).shape == (8, 2) and pol.nfe_last == 4
    with pytest.raises(ValueError, match="flow-trained"):
        pol.set_sampler("ddim", 10)
    with pytest.raises(ValueError, match="diffusion-trained"):
        tiny_policy().set_sampler("flow", 10)


@pytest.mark.parametrize("mutate, match", [
    (lambda o: o.pop("pos"), "missing key 'pos'"),
    (lambda o: o.__setitem__("pos", np.zeros((2, 4), np.float32)), r"'pos': expected shape \(2, 3\)"),
    (lambda o: o.__setitem__("pos", np.zeros((3, 3), np.float32)), r"'pos': expected shape"),
    (lambda o: o.__setitem__("object", np.full((2, 4), "x")), "'object'.*not numeric"),
    (lambda o: o["object"].__setitem__((0, 0), np.nan), "'object' contains NaN"),
    (lambda o: o["pos"].__setitem__((1, 2), np.inf), "'pos' contains NaN/Inf"),
])
def test_bad_observations_raise_naming_the_key(mutate, match):
    pol = tiny_policy().eval()
    obs = obs_window()
    mutate(obs)
    with pytest.raises(ValueError, match=match):
        pol.predict_chunk(obs)


def test_non_finite_network_output_never_reaches_the_caller():
    pol = tiny_policy().eval()
    with torch.no_grad():
        pol.net.head.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite"):
        pol.predict_chunk(obs_window())


def test_sampling_is_seeded():
    a = tiny_policy(seed=3).eval().predict_chunk(obs_window())
    b = tiny_policy(seed=3).eval().predict_chunk(obs_window())
    np.testing.assert_array_equal(a, b)


def test_inpainting_pulls_the_prefix_to_committed_actions():
    pol = tiny_policy().eval()
    committed = np.array([[1.5, 0.9], [1.5, 0.9], [1.5, 0.9], [1.5, 0.9]], np.float32)
    free = pol.predict_chunk(obs_window())
    guided = pol.predict_chunk(obs_window(), committed=committed)
    To = pol.n_obs_steps
    # full-weight part (first half of the committed steps) lands on the committed actions
    np.testing.assert_allclose(guided[To - 1: To + 1], committed[:2], atol=1e-4)
    assert np.abs(free[To - 1: To + 1] - committed[:2]).max() > 0.1  # the untrained net would not
    g = inpaint_guide(pol, committed)
    w = g.weights
    assert w[To - 1: To + 1].tolist() == [1.0, 1.0] and 0 < w[To + 2] < w[To + 1] < 1 and w[To + 3:].sum() == 0


def test_image_policy_trains_and_predicts(tmp_path):
    """Image observations go through the GroupNorm ResNet encoder (random crop in training,
    center crop in eval), a training step moves every encoder weight, and the encoder's
    widths survive a checkpoint round trip."""
    from dpctrl.policy.diffusion_policy import DiffusionPolicy, PolicyConfig
    from dpctrl.policy.normalizer import Normalizer
    torch.manual_seed(0)
    cfg = PolicyConfig(obs_dims={"pos": 3}, action_dim=2, image_keys=["cam_image"], image_size=32, image_crop=28,
                       image_feature_dim=16, image_widths=[8, 16], n_layer=1, n_head=2, n_emb=32, horizon=8,
                       n_action_steps=4)
    stats = {"pos": {"min": -np.ones(3), "max": np.ones(3)}, "action": {"min": -np.ones(2), "max": np.ones(2)}}
    pol = DiffusionPolicy(cfg, Normalizer.from_stats(stats))
    rng = np.random.default_rng(0)
    batch = {"obs": {"pos": torch.rand(4, 2, 3), "cam_image": torch.from_numpy(rng.integers(0, 255, (4, 2, 32, 32, 3),
                                                                                             dtype=np.uint8))},
             "action": torch.rand(4, 8, 2) * 2 - 1}
    before = [p.clone() for p in pol.encoders.parameters()]
    opt = torch.optim.AdamW(pol.parameters(), lr=1e-3)
    pol.train()
    pol.loss(batch).backward()
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, pol.encoders.parameters()))
    pol.eval()
    obs = {"pos": np.zeros((2, 3), np.float32), "cam_image": rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)}
    assert pol.predict_chunk(obs).shape == (8, 2)
    assert pol.encoders["cam_image"].blocks[-1].conv2.out_channels == 16
    pol.save(tmp_path / "ck")
    back = DiffusionPolicy.load(tmp_path / "ck")
    assert back.cfg.image_widths == [8, 16]
    pol.generator.manual_seed(1)
    back.generator.manual_seed(1)
    np.testing.assert_array_equal(pol.predict_chunk(obs), back.predict_chunk(obs))
    with pytest.raises(ValueError, match="cam_image"):
        pol.predict_chunk({**obs, "cam_image": obs["cam_image"][:, :16]})
