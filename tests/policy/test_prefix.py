"""A policy trained on committed prefixes (policy/prefix.py, ``--overlap prefix``)."""
import numpy as np
import pytest
import torch

from dpctrl.policy.chunking import Prefix
from dpctrl.policy.diffusion_policy import DiffusionPolicy, PolicyConfig
from dpctrl.policy.normalizer import Normalizer
from dpctrl.policy.prefix import draw_flags, masked_mse


def prefix_policy(prefix_max=3, prediction_type="sample"):
    cfg = PolicyConfig(obs_dims={"x": 3}, action_dim=2, n_layer=1, n_emb=32, n_head=2, prefix_max=prefix_max,
                       prediction_type=prediction_type)
    stats = {"x": {"min": -np.ones(3), "max": np.ones(3)}, "action": {"min": -np.ones(2), "max": np.ones(2)}}
    torch.manual_seed(0)
    return DiffusionPolicy(cfg, Normalizer.from_stats(stats), seed=0).eval()


def test_flags_cover_0_to_d_max_actions_from_the_first_executable_index():
    flags = draw_flags(4000, 16, 1, 3, torch.Generator().manual_seed(0), "cpu")
    counts = flags.sum(1)
    assert set(counts.tolist()) == {0, 1, 2, 3} and not flags[:, 0].any() and not flags[:, 4:].any()
    assert all(bool(flags[r, 1:1 + c].all()) for r, c in enumerate(counts.tolist()[:50]))
    assert abs(float((counts == 0).float().mean()) - 0.25) < 0.03  # uniform over 0..3


def test_masked_mse_ignores_the_committed_positions():
    out, target = torch.zeros(2, 4, 3), torch.zeros(2, 4, 3)
    flags = torch.tensor([[False, True, False, False], [False, False, False, False]])
    out[0, 1] = 100.0  # flagged: not counted
    assert masked_mse(out, target, flags) == 0.0
    out[1, 2] = 1.0
    assert torch.isclose(masked_mse(out, target, flags), torch.tensor(3.0 / (7 * 3)))


def test_training_reaches_the_flag_and_masks_the_prefix_loss():
    policy = prefix_policy().train()
    batch = {"obs": {"x": torch.randn(8, 2, 3)}, "action": torch.rand(8, 16, 2) * 2 - 1}
    loss = policy.loss(batch, generator=torch.Generator().manual_seed(1))
    loss.backward()
    assert torch.isfinite(loss) and policy.net.prefix_emb.grad.abs().sum() > 0
    plain = prefix_policy(prefix_max=0)
    assert not hasattr(plain.net, "prefix_emb") and plain.overlap_modes == ("inpaint", "rtc", "bid")
    assert "prefix" in policy.overlap_modes
    with pytest.raises(ValueError, match="prefix_max must be in 0..14"):
        PolicyConfig(obs_dims={"x": 3}, action_dim=2, prefix_max=15)


@pytest.mark.parametrize("ptype", ["sample", "epsilon"])
def test_sampling_ends_on_the_committed_actions_and_flags_reach_the_network(ptype):
    policy = prefix_policy(prediction_type=ptype)
    with torch.no_grad():
        policy.net.prefix_emb.normal_(0, 1.0)
    obs = {"x": np.zeros((1, 2, 3), np.float32)}
    committed = np.array([[[0.5, -0.5], [0.4, -0.4], [0.3, -0.3], [0.2, -0.2]]], np.float32)

    def run(delay):
        policy.generator.manual_seed(4)
        return policy.predict_batch(obs, committed=Prefix(committed, delay, 8, "prefix"))[0]
    a = run(2)
    np.testing.assert_allclose(a[1:3], committed[0, :2], atol=1e-4)  # index To-1 on: the 2 frozen actions
    with torch.no_grad():
        policy.net.prefix_emb.zero_()
    b = run(2)
    assert np.abs(a[3:] - b[3:]).max() > 1e-3  # the flag changes what follows the prefix
    c = run(5)  # more frozen actions than the policy was trained on: the first prefix_max (3) are given
    np.testing.assert_allclose(c[1:4], committed[0, :3], atol=1e-4)
    assert np.abs(c[4] - committed[0, 3]).max() > 1e-3


def test_prefix_needs_a_trained_policy_and_the_eager_network():
    from dpctrl.envs.evaluate import check_overlap
    plain = prefix_policy(prefix_max=0)
    obs = {"x": np.zeros((1, 2, 3), np.float32)}
    with pytest.raises(ValueError, match="--prefix-max"):
        plain.predict_batch(obs, committed=Prefix(np.zeros((1, 3, 2), np.float32), 2, 8, "prefix"))
    with pytest.raises(ValueError, match="--prefix-max"):
        check_overlap(plain, "prefix", 2)
    with pytest.raises(ValueError, match="up to 3 actions"):
        check_overlap(prefix_policy(), "prefix", 4)
    policy = prefix_policy()
    policy.set_deploy("torchscript")
    with pytest.raises(ValueError, match="eager"):
        check_overlap(policy, "prefix", 2)


def test_init_from_a_checkpoint_starts_from_its_weights(tmp_path):
    from dpctrl.policy.recipes import PolicyRecipe, Recipe
    stats = {"x": {"min": -np.ones(3), "max": np.ones(3)}, "action": {"min": -np.ones(2), "max": np.ones(2)}}
    recipe = Recipe(demos=1, n_layer=1, n_emb=32)
    source = PolicyRecipe(recipe, {"x": 3}, 2).build(stats, seed=1)
    source.save(tmp_path / "src")
    tuned = PolicyRecipe(recipe, {"x": 3}, 2, prefix_max=3).build(stats, seed=5, init_from=tmp_path / "src")
    theirs = source.state_dict()
    for k, v in tuned.state_dict().items():
        if k == "net.prefix_emb":
            assert v.abs().sum() == 0
        else:
            torch.testing.assert_close(v, theirs[k])
    wider = Recipe(demos=1, n_layer=2, n_emb=32)
    with pytest.raises(ValueError, match="n_layer"):
        PolicyRecipe(wider, {"x": 3}, 2, prefix_max=3).build(stats, seed=5, init_from=tmp_path / "src")
