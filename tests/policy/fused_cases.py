"""Cases of the fused decoder step (policy/accel/fused.py), run by tests/policy/test_fused.py in
a process of their own where Triton imports (see there for why).

Without a GPU the kernels run in Triton's interpreter (tests/conftest.py), so the arithmetic
of the exact kernels a GPU runs is checked here against the eager network: every layer's
masks, the memory mask offset, padded short dimensions, batches and horizons. With CUDA: the
compiled kernels, captured in the CUDA graph of a whole run, against eager on the same GPU.
"""
import numpy as np
import pytest
import torch

from dpctrl.policy.accel.fused import FusedDecoder, available
from dpctrl.policy.nets.transformer import Transformer, TransformerConfig
from tests.policy.test_graph import cuda, episode, make_policy, setup

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))
# where there is a GPU the same tests run the compiled kernels; tolerances: float32 products
# in another summation order than eager's
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ATOL = 1e-4 if DEVICE == "cuda" else 2e-5


def net_and_memory(B, T, n_emb=64, n_head=4, n_obs=2, seed=0, device=DEVICE):
    torch.manual_seed(seed)
    cfg = TransformerConfig(action_dim=7, cond_dim=5, horizon=16, n_obs_steps=n_obs, n_layer=2,
                            n_head=n_head, n_emb=n_emb)
    net = Transformer(cfg).eval().to(device)
    with torch.no_grad():
        for p in net.parameters():  # weights far from init, so every branch matters
            p.normal_(0.0, 0.3)
    cond = torch.randn(B, n_obs, 5, device=device)
    return net, torch.randn(B, T, 7, device=device), net.run_memory([70.0, 5.0], cond)


@pytest.mark.parametrize("B,T,n_emb,n_head,n_obs", [(1, 16, 64, 4, 2), (3, 16, 64, 2, 2), (2, 11, 32, 2, 3),
                                                     (20, 16, 64, 4, 1)])
def test_fused_decode_equals_the_eager_decoder(B, T, n_emb, n_head, n_obs):
    net, x, memory = net_and_memory(B, T, n_emb, n_head, n_obs)
    fused = FusedDecoder(net, linear_block=32 if B == 3 else 16, attend_block=32 if B == 3 else 16)
    with torch.no_grad():
        for step in range(len(memory)):
            ref = net.decode(x, memory[step])
            out = fused.decode(x, memory[step])
            assert out.shape == ref.shape
            torch.testing.assert_close(out, ref, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("prediction,clip", [("epsilon", True), ("v_prediction", False)])
def test_fused_decode_step_is_decode_then_the_ddim_step(prediction, clip):
    from dpctrl.policy.samplers import make_sampler
    from dpctrl.policy.schedule import NoiseSchedule
    ddim = make_sampler("ddim", NoiseSchedule("squaredcos_cap_v2", 100), prediction_type=prediction,
                        clip_sample=clip, clip_range=0.5)
    net, x, memory = net_and_memory(2, 16)
    fused = FusedDecoder(net)
    (t, t_next), (t_last, clean) = ddim.steps(10)[3], ddim.steps(10)[-1]
    with torch.no_grad():
        for step, (a, b) in enumerate([(t, t_next), (t_last, clean)]):
            ref = ddim.step(x, net.decode(x, memory[step]), a, b, {})
            torch.testing.assert_close(fused.decode_step(x, memory[step], ddim.affine(a, b)), ref,
                                       atol=ATOL, rtol=1e-5)
        if clip:  # the clip is live: some x0 entries hit it
            x0, _ = ddim.x0_eps(x, net.decode(x, memory[0]), t)
            assert (x0.abs() == 0.5).any()


def test_fused_decode_sees_a_change_in_every_input():
    """Not equal by accident: a change in the sample, in the memory, or in any layer's weights
    changes the fused output as it changes the eager one."""
    net, x, memory = net_and_memory(2, 16)
    with torch.no_grad():
        base = FusedDecoder(net).decode(x, memory[0])
        assert not torch.allclose(FusedDecoder(net).decode(x, memory[1]), base)
        x2 = x.clone()
        x2[1, -1] += 1.0  # the last action token: under the causal mask, only the last output row moves
        moved = FusedDecoder(net).decode(x2, memory[0])
        assert torch.allclose(moved[0], base[0], atol=1e-6) and torch.allclose(moved[1, :-1], base[1, :-1], atol=1e-6)
        assert not torch.allclose(moved[1, -1], base[1, -1])
        net.layers[1].ca.proj.bias.add_(torch.randn(64, device=DEVICE))  # not uniform: LN removes a uniform shift
        changed = FusedDecoder(net).decode(x, memory[0])
        assert not torch.allclose(changed, base)
        torch.testing.assert_close(changed, net.decode(x, memory[0]), atol=ATOL, rtol=1e-5)


def test_fused_decoder_refuses_what_it_cannot_run(monkeypatch):
    net, _, _ = net_and_memory(1, 16)
    with pytest.raises(ValueError, match="eval"):
        FusedDecoder(net.train())
    net.eval()
    with pytest.raises(ValueError, match="precision"):
        FusedDecoder(net, "bf16")
    net.branch_hook = lambda name, fn, args: fn(*args)
    with pytest.raises(ValueError, match="block cache"):
        FusedDecoder(net)
    net.branch_hook = None
    odd, _, _ = net_and_memory(1, 16, n_emb=48, n_head=2)  # head size 24: not a power of two
    with pytest.raises(ValueError, match="head size"):
        FusedDecoder(odd)
    with pytest.raises(ValueError, match="attend_block"):
        FusedDecoder(net, attend_block=24)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="GPU kernels"):
        FusedDecoder(net.cpu())


@pytest.mark.parametrize("mode", [pytest.param("plain", marks=pytest.mark.slow), "warm",
                                  pytest.param("guide", marks=pytest.mark.slow)])
def test_fused_static_path_gives_the_eager_actions(mode):
    """The whole policy through the deploy path's static buffers with the fused decoder: the
    same chunks as eager (DDIM-10; warm-started RTI runs after a cold one; guided runs). About
    35 s each in the interpreter, so only the warm case (both run shapes) is in the default run."""
    pol = make_policy("diffusion", "ddim", 10, device=DEVICE)
    eager, fast, runs = compare_fused(pol, "static", mode)
    assert runs >= 1
    np.testing.assert_allclose(fast, eager, atol=10 * ATOL, rtol=0)


def test_fused_path_refuses_a_block_cache_and_bf16():
    pol = make_policy("diffusion", "ddim", 10, device=DEVICE)
    pol.set_deploy("static", batch=2, fused=True)
    assert pol.deploy == "static-fp32+fused"
    with pytest.raises(ValueError, match="fused"):
        setup(pol, "cache")
        episode(pol, "cache")
    pol.set_cache(None)
    with pytest.raises(ValueError, match="fp32 or tf32"):
        pol.set_deploy("static", batch=2, precision="bf16", fused=True)
    with pytest.raises(ValueError, match="TorchScript"):
        pol.set_deploy("torchscript", fused=True)


@cuda
@pytest.mark.parametrize("precision,atol", [("fp32", 1e-4), ("tf32", 5e-2)])
@pytest.mark.parametrize("mode", ["plain", "warm"])
def test_fused_cuda_graph_equals_eager_on_the_gpu(precision, atol, mode):
    pol = make_policy("diffusion", "ddim", 10, device="cuda")
    eager, fast, runs = compare_fused(pol, "cuda_graph", mode, precision)
    assert runs >= 1
    np.testing.assert_allclose(fast, eager, atol=atol, rtol=0)


@cuda
def test_fused_decode_equals_eager_on_the_gpu_at_the_9m_size():
    net, x, memory = net_and_memory(8, 16, n_emb=256, n_head=4, device="cuda")
    fused = FusedDecoder(net)
    with torch.no_grad():
        ref = net.decode(x, memory[1])
        # float32 in another summation order, on activations of a few units (weights N(0, 0.3)):
        # seen 1.7e-4 at most on an H200; an error in the arithmetic is of the outputs' size
        torch.testing.assert_close(fused.decode(x, memory[1]), ref, atol=1e-4 * float(ref.abs().max()), rtol=1e-4)


def compare_fused(pol, kind, mode, precision="fp32"):
    setup(pol, mode)
    pol.set_deploy(None)
    eager = episode(pol, mode)
    pol.set_deploy(kind, batch=2, precision=precision, fused=True)
    setup(pol, mode)
    fast = episode(pol, mode)
    runs = len(pol.runner.runs)
    pol.set_deploy(None)
    return eager, fast, runs
