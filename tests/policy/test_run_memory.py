"""A run's cross-attention memory computed once for all its steps equals the per-step network."""
import numpy as np
import pytest
import torch

from helpers import obs_window, tiny_policy


@pytest.mark.parametrize("n_cond_layers", [0, 1])
def test_run_memory_then_decode_equals_the_whole_network_at_every_step(n_cond_layers):
    pol = tiny_policy(n_cond_layers=n_cond_layers).eval()
    net = pol.net
    torch.manual_seed(1)
    B = 3
    x, cond = torch.randn(B, 8, 2), torch.randn(B, 2, pol.cond_dim)
    times = [90.0, 41.0, 7.0, 0.0]
    with torch.no_grad():
        memory = net.run_memory(times, cond)
        assert len(memory) == len(times)
        for i, t in enumerate(times):
            whole = net(x, t, cond)
            # the same arithmetic, batched differently: equal up to float rounding
            torch.testing.assert_close(net.decode(x, memory[i]), whole, atol=1e-6, rtol=0)
        # the memory really depends on the step: decoding with another step's memory differs
        assert (net.decode(x, memory[0]) - net(x, times[-1], cond)).abs().max() > 1e-4


def test_a_sampled_chunk_goes_through_the_run_memory():
    """The policy's sampler calls ``decode`` once per step after one ``run_memory`` per run."""
    pol = tiny_policy().eval()
    calls = {"run_memory": 0, "decode": 0}
    net = pol.net
    run_memory, decode = net.run_memory, net.decode

    def counted(name, fn):
        def wrapper(*a):
            calls[name] += 1
            return fn(*a)
        return wrapper
    net.run_memory, net.decode = counted("run_memory", run_memory), counted("decode", decode)
    pol.set_sampler("ddim", 5)
    a = pol.predict_chunk(obs_window())
    assert calls == {"run_memory": 1, "decode": 5} and np.isfinite(a).all()
