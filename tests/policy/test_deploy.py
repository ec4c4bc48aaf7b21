import numpy as np
import pytest

from helpers import obs_window, tiny_policy
from dpctrl.policy.diffusion_policy import DiffusionPolicy


def test_traced_denoiser_equals_eager_and_leaves_the_checkpoint_alone(tmp_path):
    pol = tiny_policy().eval()
    keys = sorted(pol.state_dict())
    outs = {}
    for kind in (None, "torchscript"):
        pol.set_deploy(kind)
        pol.generator.manual_seed(3)
        outs[kind] = np.stack([pol.predict_chunk(obs_window(i)) for i in range(3)])
    np.testing.assert_allclose(outs["torchscript"], outs[None], atol=1e-5)
    assert sorted(pol.state_dict()) == keys  # the trace is not a submodule
    pol.save(tmp_path / "ck")  # saving while deployed writes the eager weights
    assert sorted(DiffusionPolicy.load(tmp_path / "ck").state_dict()) == keys
    # the prediction really goes through the frozen trace: swapping in a new eager weight
    # tensor (the trace holds the old one) changes eager outputs only
    import torch
    pol.net.head.weight = torch.nn.Parameter(pol.net.head.weight.detach() * 0.5)
    pol.generator.manual_seed(3)
    np.testing.assert_allclose(np.stack([pol.predict_chunk(obs_window(i)) for i in range(3)]), outs["torchscript"],
                               atol=1e-6)
    pol.set_deploy(None)
    pol.generator.manual_seed(3)
    assert np.abs(np.stack([pol.predict_chunk(obs_window(i)) for i in range(3)]) - outs[None]).max() > 1e-3


def test_traced_denoiser_refuses_caches_and_other_batch_sizes():
    from dpctrl.policy.accel.cache import BlockCache
    pol = tiny_policy().eval()
    pol.set_deploy("torchscript", batch=1)
    with pytest.raises(ValueError, match="eager denoiser"):
        pol.set_cache(BlockCache())
    batch = {k: np.stack([v, v]) for k, v in obs_window().items()}
    with pytest.raises(ValueError, match="batch 1, got 2"):
        pol.predict_batch(batch)
    pol.set_deploy(None)
    pol.set_cache(BlockCache())
    with pytest.raises(ValueError, match="detach the block cache"):
        pol.set_deploy("torchscript")
    with pytest.raises(ValueError, match="unknown deploy path"):
        pol.set_deploy("tensorrt")


def test_traced_run_memory_equals_eager_for_any_run_length():
    """The memory trace is made once (2 steps) and must stay right for other run lengths."""
    import torch
    pol = tiny_policy().eval()
    pol.set_deploy("torchscript", batch=1)
    cond = torch.randn(1, 2, pol.cond_dim)
    for times in ([90.0], [20.0, 10.0, 0.0], [float(t) for t in range(99, -1, -1)]):
        got, ref = pol.runner.denoiser.run_memory(times, cond), pol.net.run_memory(times, cond)
        assert len(got) == len(ref) == len(times)
        for i in (0, len(times) - 1):
            for (kg, vg), (kr, vr) in zip(got[i], ref[i]):
                torch.testing.assert_close(kg, kr, atol=1e-6, rtol=0)
                torch.testing.assert_close(vg, vr, atol=1e-6, rtol=0)
