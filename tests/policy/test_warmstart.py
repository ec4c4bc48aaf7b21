import numpy as np
import pytest
import torch

from helpers import obs_window, tiny_policy
from dpctrl.policy.accel.warmstart import WarmStartConfig, shift_chunk


class CountingNet(torch.nn.Module):
    """Wraps the denoiser and records the timestep of every call."""

    def __init__(self, net):
        super().__init__()
        self.inner, self.times = net, []

    def forward(self, x, t, cond):
        self.times.append(float(t) if not torch.is_tensor(t) else float(t.flatten()[0]))
        return self.inner(x, t, cond)


def counted(policy):
    policy.net = CountingNet(policy.net)
    return policy.net


def test_calls_and_timesteps_per_cycle():
    pol = tiny_policy().eval()
    net = counted(pol)
    pol.set_warm_start(WarmStartConfig(start_t=2))
    pol.predict_chunk(obs_window())
    assert net.times == [90.0, 80.0, 70.0, 60.0, 50.0, 40.0, 30.0, 20.0, 10.0, 0.0] and pol.nfe_last == 10
    net.times.clear()
    pol.note_executed(4)
    pol.predict_chunk(obs_window(1))
    assert net.times == [2.0, 1.0, 0.0] and pol.nfe_last == 3  # K'=2: 3 calls, matching timesteps
    net.times.clear()
    pol.reset()
    pol.predict_chunk(obs_window())
    assert len(net.times) == 10  # cold again after reset


def test_reproduce_mode_feeds_the_published_mismatched_timesteps():
    pol = tiny_policy().eval()
    net = counted(pol)
    pol.set_warm_start(WarmStartConfig(start_t=2, reproduce=True))
    pol.predict_chunk(obs_window())
    net.times.clear()
    pol.predict_chunk(obs_window())
    assert net.times == [20.0, 10.0, 0.0]


def test_coarse_tail_runs_the_configured_grid_below_k():
    pol = tiny_policy().eval()
    net = counted(pol)
    pol.set_warm_start(WarmStartConfig(start_t=25, tail="coarse"))
    pol.predict_chunk(obs_window())
    net.times.clear()
    pol.predict_chunk(obs_window(1))
    assert net.times == [25.0, 20.0, 10.0, 0.0] and pol.nfe_last == 4  # K' itself, then DDIM-10's grid below it
    with pytest.raises(ValueError, match="tail"):
        WarmStartConfig(tail="medium")
    with pytest.raises(ValueError, match="reproduce"):
        WarmStartConfig(tail="coarse", reproduce=True)


def test_first_call_and_after_reset_bit_identical_to_cold_and_off_equals_plain():
    plain = tiny_policy(seed=5).eval()
    warm = tiny_policy(seed=5).eval()
    warm.set_warm_start(WarmStartConfig(start_t=3))
    a, b = plain.predict_chunk(obs_window()), warm.predict_chunk(obs_window())
    np.testing.assert_array_equal(a, b)
    warm.predict_chunk(obs_window(2))  # a warm call in between
    warm.reset()
    plain.generator.manual_seed(77)
    warm.generator.manual_seed(77)
    np.testing.assert_array_equal(plain.predict_chunk(obs_window(3)), warm.predict_chunk(obs_window(3)))
    off = tiny_policy(seed=5).eval()
    off.set_warm_start(WarmStartConfig())
    off.set_warm_start(None)
    np.testing.assert_array_equal(tiny_policy(seed=5).eval().predict_chunk(obs_window()), off.predict_chunk(obs_window()))


@pytest.mark.parametrize("s", range(1, 9))
def test_shift_semantics(s):
    prev = torch.arange(8.0).view(1, 8, 1).repeat(2, 1, 3)
    g = shift_chunk(prev, s)
    expected = [min(i + s, 7) for i in range(8)]
    assert g[0, :, 0].tolist() == expected and g.shape == prev.shape
    with pytest.raises(ValueError):
        shift_chunk(prev, 9)


def test_guess_is_the_shifted_previous_chunk():
    """With the clean guess inserted at K'=0 (one call at t=0), the sampler's x0 estimate at
    t=0 equals the input for a clip-free DDIM, so the warm chunk is the shifted guess
    transformed by a single denoising call: check the guess handed to the sampler."""
    pol = tiny_policy().eval()
    pol.set_warm_start(WarmStartConfig(start_t=0, discrete_dims=[]))
    pol.predict_chunk(obs_window())
    prev = pol.warm.prev[0].clone()
    pol.note_executed(3)
    seen = {}
    orig = pol.chunk_tensors

    def spy(obs, x, *args, **kw):  # the chunk function predict_batch runs (the start sample: x)
        seen["x"] = x.clone()
        return orig(obs, x, *args, **kw)
    pol.chunk_tensors = spy
    pol.predict_chunk(obs_window())
    torch.testing.assert_close(seen["x"][0], shift_chunk(prev[None], 3)[0])


def test_discrete_dims_clipped_in_guess_and_binarized_in_output():
    pol = tiny_policy().eval()
    pol.set_warm_start(WarmStartConfig(start_t=2, discrete_dims=[1], clip_factor=10.0))
    a = pol.predict_chunk(obs_window())
    assert set(np.unique(a[:, 1])) <= {-1.0, 1.0}
    stored = pol.warm.prev[0][:, 1]
    torch.testing.assert_close(stored.abs(), torch.full_like(stored, 0.1))


def test_noise_option_forward_diffuses_the_guess():
    outs = []
    for noise in (False, True):
        pol = tiny_policy(seed=1).eval()
        pol.set_warm_start(WarmStartConfig(start_t=20, noise=noise))
        pol.predict_chunk(obs_window())
        outs.append(pol.predict_chunk(obs_window()))
    assert np.abs(outs[0] - outs[1]).max() > 1e-4
    with pytest.raises(ValueError, match="K'"):
        tiny_policy().set_warm_start(WarmStartConfig(start_t=100))


def test_scale_mode_trains_discrete_dims_at_one_over_f_and_keeps_the_guess_unclipped():
    pol = tiny_policy(discrete_action_dims=[1], discrete_scale=10.0).eval()
    a = torch.tensor([[2.0, 1.0], [-2.0, 0.0]])  # robot units; dim 1 spans [0, 1]
    x = pol.normalize_actions(a)
    torch.testing.assert_close(x, torch.tensor([[1.0, 0.1], [-1.0, -0.1]]))
    torch.testing.assert_close(pol.unnormalize_actions(x), a)
    pol.set_warm_start(WarmStartConfig(start_t=2, discrete_mode="scale", binarize=False))
    pol.predict_chunk(obs_window())
    out = pol.normalize_actions(torch.as_tensor(pol.predict_chunk(obs_window(1))))  # a warm call
    stored = pol.warm.prev[0]
    torch.testing.assert_close(stored, out[0] if out.dim() == 3 else out)  # kept as predicted: no clipping
    assert len(set(stored[:, 1].abs().tolist())) > 1
    plain = tiny_policy(discrete_action_dims=[1]).eval()
    with pytest.raises(ValueError, match="discrete_scale > 1"):
        plain.set_warm_start(WarmStartConfig(discrete_mode="scale"))
    with pytest.raises(ValueError, match="discrete_scale"):
        tiny_policy(discrete_scale=0.5)
