import numpy as np
import pytest
import torch

from dpctrl.policy.normalizer import Normalizer


def test_round_trip_and_range():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(500, 4)) * [1, 10, 0.01, 0] + [0, 5, 3, 7]).astype(np.float32)
    norm = Normalizer.from_stats({"a": {"min": x.min(0), "max": x.max(0)}})
    xt = torch.from_numpy(x)
    xn = norm.normalize("a", xt)
    assert torch.allclose(xn[:, :3].min(0).values, torch.full((3,), -1.0), atol=1e-5)
    assert torch.allclose(xn[:, :3].max(0).values, torch.full((3,), 1.0), atol=1e-5)
    assert torch.all(xn[:, 3] == 0)  # constant dimension maps to 0
    torch.testing.assert_close(norm.unnormalize("a", xn), xt, rtol=1e-5, atol=1e-4)
    # through a state dict (what a checkpoint stores) and on a (B, T, D) batch
    norm2 = Normalizer.from_state_dict(norm.state_dict())
    batch = xt[:12].reshape(3, 4, 4)
    torch.testing.assert_close(norm2.unnormalize("a", norm2.normalize("a", batch)), batch, rtol=1e-5, atol=1e-4)


def test_errors():
    norm = Normalizer.from_stats({"a": {"min": np.zeros(2), "max": np.ones(2)}})
    with pytest.raises(KeyError, match="'b'"):
        norm.normalize("b", torch.zeros(2))
    with pytest.raises(ValueError, match="last dim"):
        norm.normalize("a", torch.zeros(3))
    with pytest.raises(ValueError, match="min <= max"):
        Normalizer.from_stats({"a": {"min": np.ones(2), "max": np.zeros(2)}})
