"""The GPU deploy path (policy/accel/graph.py).

On any machine: the static-buffer path (the graph path without capture) must give exactly
the eager actions for every sampler, guided or warm-started or cached, and must refuse what
it cannot capture. With CUDA: the captured replay must equal eager on the same GPU.
"""
import numpy as np
import pytest
import torch

from dpctrl.policy.accel.runners import make_runner

from dpctrl.policy.accel.cache import BlockCache, TeaCacheGate, uniform_schedule
from dpctrl.policy.accel.warmstart import WarmStartConfig
from dpctrl.policy.diffusion_policy import DiffusionPolicy, PolicyConfig
from dpctrl.policy.normalizer import Normalizer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CASES = [("diffusion", "ddpm", 100), ("diffusion", "ddim", 10), ("diffusion", "dpmpp", 10), ("flow", "flow", 10)]


def make_policy(family="diffusion", sampler="ddim", steps=10, device="cpu"):
    cfg = PolicyConfig(obs_dims={"s": 5}, action_dim=3, n_layer=2, n_emb=32, n_head=2, family=family,
                       sampler=sampler, num_inference_steps=steps, discrete_action_dims=[2])
    torch.manual_seed(1)
    norm = Normalizer({"s": (torch.ones(5), torch.zeros(5)), "action": (0.5 * torch.ones(3), torch.zeros(3))})
    return DiffusionPolicy(cfg, norm).eval().to(device)


def episode(pol, mode: str, seed=3, dtype=np.float32) -> np.ndarray:
    """Three chunks of one episode (the 2nd and 3rd warm in the warm modes)."""
    rng = np.random.default_rng(0)
    pol.generator.manual_seed(seed)
    pol.reset()
    out = []
    for _ in range(3):
        obs = {"s": rng.normal(size=(2, 2, 5)).astype(np.float32).astype(dtype)}
        kw = {"committed": rng.uniform(-1, 1, size=(4, 3)).astype(np.float32)} if mode == "guide" else {}
        out.append(pol.predict_batch(obs, **kw))
        pol.note_executed(4)
    return np.stack(out)


def setup(pol, mode: str) -> None:
    pol.set_cache(None)
    pol.set_warm_start(None)
    if mode.startswith("warm"):
        start = 10 if pol.cfg.family == "flow" else 2
        pol.set_warm_start(WarmStartConfig(start_t=start, noise=mode == "warm-noise"))
    if mode == "cache":
        grid = [pol.sampler.model_time(t) for t, _ in pol.sampler.steps(pol.cfg.num_inference_steps)]
        pol.set_cache(BlockCache(uniform_schedule(pol.net.branch_names(), grid, 3)))


def compare(pol, kind, mode, precision="fp32"):
    setup(pol, mode)
    pol.set_deploy(None)
    eager = episode(pol, mode)
    pol.set_deploy(kind, batch=2, precision=precision)
    setup(pol, mode)  # drops the captured runs; they are captured again at first use
    fast = episode(pol, mode)
    runs = len(pol.runner.runs)
    pol.set_deploy(None)
    return eager, fast, runs


@pytest.mark.parametrize("family,sampler,steps", CASES)
@pytest.mark.parametrize("mode", ["plain", "guide", "warm", "warm-noise", "cache"])
def test_static_path_gives_exactly_the_eager_actions(family, sampler, steps, mode):
    if mode == "cache" and family == "flow":
        pytest.skip("block caching is calibrated for the diffusion samplers")
    pol = make_policy(family, sampler, steps)
    eager, fast, runs = compare(pol, "static", mode)
    # the cold run, + the RTI run (warm) or the guided run (captured at its first use)
    assert runs == (2 if mode.startswith("warm") or mode == "guide" else 1)
    np.testing.assert_array_equal(fast, eager)


def test_prepare_captures_cold_and_rti_runs_without_shifting_the_noise():
    pol = make_policy()
    pol.set_warm_start(WarmStartConfig(start_t=20, tail="coarse"))
    ref = episode(pol, "warm")
    pol.set_deploy("static", batch=2)
    assert len(pol.runner.runs) == 2 and pol.deploy == "static-fp32"
    np.testing.assert_array_equal(episode(pol, "warm"), ref)
    assert len(pol.runner.runs) == 2  # nothing captured mid-episode
    # float64 observations (as simulators hand them out) go in as float32, the dtype the network
    # reads anyway: the same chunks, and still no capture mid-episode
    np.testing.assert_array_equal(episode(pol, "warm", dtype=np.float64), ref)
    assert len(pol.runner.runs) == 2
    keys = set(pol.runner.runs)
    pol.set_sampler("ddim", 5)  # a new step list: the old runs are dropped, the new ones captured at once
    assert len(pol.runner.runs) == 2 and not keys & set(pol.runner.runs)


def test_graph_path_refuses_what_it_cannot_capture():
    pol = make_policy()
    pol.set_deploy("static", batch=2)
    with pytest.raises(ValueError, match="built for batch 2"):
        pol.predict_batch({"s": np.zeros((1, 2, 5), np.float32)})
    with pytest.raises(ValueError, match="TeaCache"):  # refused when set, not mid-episode
        pol.set_cache(BlockCache(gate=TeaCacheGate(0.3)))
    pol.set_deploy(None)
    pol.set_cache(None)
    pol.set_deploy("static", batch=2)
    with pytest.raises(ValueError, match="unknown precision"):
        pol.set_deploy("static", precision="fp8")
    with pytest.raises(ValueError, match="CUDA path"):
        pol.set_deploy("static", precision="bf16")
    with pytest.raises(ValueError, match="unknown deploy path"):
        pol.set_deploy("tensorrt")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA device"):
            pol.set_deploy("cuda_graph")


def test_bench_gpu_refuses_without_cuda_and_its_loop_runs_on_the_static_path(tmp_path):
    from dpctrl.launch.bench.gpu import gpu_loop
    if not torch.cuda.is_available():
        from dpctrl.launch.bench.gpu import bench_gpu
        with pytest.raises(RuntimeError, match="CUDA"):
            bench_gpu("lift", "unused")
    pol = DiffusionPolicy.load("lift").eval()
    res = gpu_loop(pol, "lift", "RTI", rate_hz=20.0, cycles=30, precision="fp32", kind="static")
    assert res["cycles"] == 30 and res["policy_errors"] == 0 and res["nfe"] == 3
    assert pol.deploy == "eager" and pol.warm is None  # the loop leaves the policy as it found it


# ------------------------------------------------------------------ CUDA only
@cuda
@pytest.mark.parametrize("family,sampler,steps", CASES)
@pytest.mark.parametrize("mode", ["plain", "guide", "warm-noise", "cache"])
def test_cuda_graph_replay_equals_eager_on_the_gpu(family, sampler, steps, mode):
    if mode == "cache" and family == "flow":
        pytest.skip("block caching is calibrated for the diffusion samplers")
    pol = make_policy(family, sampler, steps, device="cuda")
    eager, fast, runs = compare(pol, "cuda_graph", mode)
    assert runs >= 1
    np.testing.assert_allclose(fast, eager, atol=1e-5, rtol=0)


@cuda
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_reduced_precision_graphs_stay_close_and_finite(precision):
    pol = make_policy("diffusion", "ddim", 10, device="cuda")
    eager, fast, _ = compare(pol, "cuda_graph", "plain", precision)
    assert np.isfinite(fast).all()
    assert np.abs(fast - eager).mean() < 5e-2


@cuda
def test_replays_follow_new_inputs():
    """A replay must read the new observation and noise, not those it was captured with."""
    pol = make_policy(device="cuda")
    obs = [{"s": np.full((2, 2, 5), v, np.float32)} for v in (0.0, 1.0, 0.0)]
    pol.generator.manual_seed(0)
    eager = [pol.predict_batch(o) for o in obs]
    pol.set_deploy("cuda_graph", batch=2)
    pol.generator.manual_seed(0)
    fast = [pol.predict_batch(o) for o in obs]
    for e, f in zip(eager, fast):
        np.testing.assert_allclose(f, e, atol=1e-5, rtol=0)
    assert not np.allclose(fast[0], fast[1]) and not np.allclose(fast[0], fast[2])  # new obs, new noise


@cuda
def test_switching_deploy_paths_repeatedly_keeps_capturing():
    """Dropped graphs must not be destroyed in the middle of a later capture (that invalidates
    it: seen on an H200 when `dpctrl bench gpu` switched paths per variant)."""
    pol = make_policy("diffusion", "ddpm", 100, device="cuda")
    pol.set_warm_start(WarmStartConfig(start_t=2))
    for precision in ("fp32", "tf32", "bf16", "fp32"):
        pol.set_deploy("cuda_graph", batch=2, precision=precision)
        assert np.isfinite(episode(pol, "warm")).all()
        pol.runner = make_runner(pol, None)  # dropped without release(): garbage in a reference cycle


@pytest.mark.slow
def test_compiled_static_path_matches_eager_on_cpu():
    """torch.compile (inductor needs a C++ compiler on CPU: slow, hence `slow`)."""
    pol = make_policy("diffusion", "ddim", 10)
    eager, fast, _ = compare_compiled(pol, "static")
    np.testing.assert_allclose(fast, eager, atol=1e-4, rtol=0)


@cuda
def test_compiled_cuda_graph_matches_eager_and_refuses_caches():
    pol = make_policy("diffusion", "ddim", 10, device="cuda")
    eager, fast, runs = compare_compiled(pol, "cuda_graph")
    assert runs >= 1
    np.testing.assert_allclose(fast, eager, atol=1e-4, rtol=0)


def compare_compiled(pol, kind):
    setup(pol, "warm")
    eager = episode(pol, "warm")
    pol.set_deploy(kind, batch=2, compile=True)
    assert pol.deploy.endswith("+compile")
    fast = episode(pol, "warm")
    runs = len(pol.runner.runs)
    with pytest.raises(ValueError, match="compiled"):
        setup(pol, "cache")
    pol.set_deploy(None)
    return eager, fast, runs
