import numpy as np
import pytest
import torch

from dpctrl.policy.denoise import RunNoise
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import obs_window, tiny_policy
from dpctrl.policy.accel.cache import (BlockCache, BlockRecorder, TeaCacheGate, acs_steps, acs_steps_brute_force,
                                action_error_segments,
                                bubbling_union, rederive, schedule_value, similarity_and_change,
                                uniform_schedule)


def random_similarity(K, seed):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(K, 6)).cumsum(axis=0)  # drifting features: realistic structure
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    return unit @ unit.T


@pytest.mark.parametrize("objective", ["adjacent", "cached", "action"])
@pytest.mark.parametrize("K", [3, 5, 8])
def test_acs_equals_brute_force(objective, K):
    for seed in range(5):
        S = random_similarity(K, seed)
        if objective == "action":  # segment values: minus a cost that grows with the segment
            S = -np.triu(np.random.default_rng(seed).uniform(0, 1, (K, K))).cumsum(axis=1)
        for M in range(2, K + 1):
            steps = acs_steps(S, M, objective)
            ref_steps, ref_value = acs_steps_brute_force(S, M, objective)
            assert steps[0] == 0 and steps[-1] == K - 1 and len(steps) == M
            assert schedule_value(S, steps, objective) == pytest.approx(ref_value, abs=1e-9), (steps, ref_steps)


class _Inject:
    """Branch hook adding eps * (o_a - o_t) to one block's output at the steps of a segment."""

    def __init__(self, block, a, seg, eps, ref):
        self.block, self.a, self.seg, self.eps, self.ref = block, a, seg, eps, ref

    def reset(self):
        self.i = -1

    def begin_step(self, t):
        self.i += 1

    def __call__(self, name, fn, args):
        out = fn(*args)
        if name == self.block and self.i in self.seg:
            out = out + self.eps * (self.ref[self.a] - self.ref[self.i])
        return out


@pytest.mark.parametrize("block,a,b", [("layer0.sa", 2, 5), ("layer1.ffn", 0, 3), ("layer1.ca", 3, 8)])
def test_action_segments_equal_a_finite_difference_through_the_run(block, a, b):
    """V[a, b] is minus the squared first-order change of the final sample's continuous dims
    when steps a+1..b reuse step a's output of the block: injecting eps * (o_a - o_t) at
    those steps of the same run (same start, same DDPM noise) moves it by eps * that."""
    pol = tiny_policy(seed=3, discrete_action_dims=[1]).eval()
    pol.set_sampler("ddpm", 10)
    cond = pol.encode_obs({k: torch.as_tensor(v) for k, v in obs_window(batch=2).items()})
    shape = (2, pol.horizon, 2)
    basis = torch.eye(2 * pol.horizon * 2).view(-1, *shape)  # exact norm
    V, ts = action_error_segments(pol, cond, seed=5, probes=basis)
    assert ts == [float(t) for t in pol.sampler.grid(10)] and V[block].shape == (10, 10)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(shape, generator=g)
    noise = torch.randn((10, *shape), generator=g)
    plan, run_noise = pol.cold_plan(), RunNoise(steps=(noise,))
    rec = BlockRecorder()
    pol.set_cache(rec)
    with torch.no_grad():
        pol.denoise_tensors(x, cond, plan, run_noise)
        ref = [o.view(2, pol.horizon, -1) for o in rec.outputs[block]]

        def final(eps):
            pol.set_cache(_Inject(block, a, range(a + 1, b + 1), eps, ref))
            return pol.denoise_tensors(x, cond, plan, run_noise)[..., 0]
        eps = 1e-1
        delta = (final(eps) - final(-eps)) / (2 * eps)
    pol.set_cache(None)
    assert float((delta ** 2).sum()) > 0
    assert -V[block][a, b] == pytest.approx(float((delta ** 2).sum()), rel=1e-2)
    assert V[block][a, a] == 0.0  # the update step itself has no error


BLOCKS = [f"layer{i}.{b}" for i in range(3) for b in ("sa", "ca", "ffn")]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sets(st.integers(0, 19), min_size=1), min_size=9, max_size=9),
       st.lists(st.floats(0, 10), min_size=9, max_size=9), st.integers(0, 9))
def test_bubbling_union_invariants(step_sets, changes, n):
    pre = dict(zip(BLOCKS, step_sets))
    change = dict(zip(BLOCKS, changes))
    post = bubbling_union(pre, change, top_n=n)
    assert all(post[b] >= pre[b] for b in BLOCKS)  # only adds update steps
    chosen = sorted(change, key=lambda k: -change[k])[:n]
    for u in chosen:
        layer = int(u[5])
        for b in BLOCKS:
            if b.endswith(".ffn") and int(b[5]) >= layer:
                assert post[u] >= pre[b]
    for b in set(BLOCKS) - set(chosen):
        assert post[b] == pre[b]
    if n == 0:
        assert post == pre


def test_all_update_schedule_is_bit_identical_and_cache_counts():
    plain = tiny_policy(seed=2).eval()
    cached = tiny_policy(seed=2).eval()
    grid = cached.sampler.grid(10)
    cache = BlockCache({b: set(map(float, grid)) for b in cached.net.branch_names()})
    cached.set_cache(cache)
    np.testing.assert_array_equal(plain.predict_chunk(obs_window()), cached.predict_chunk(obs_window()))
    assert cache.executed == 10 * 6 and cache.reused == 0  # 2 layers x 3 blocks x 10 steps
    # gate that always updates: identical too
    gated = tiny_policy(seed=2).eval()
    gated.set_cache(BlockCache(gate=TeaCacheGate(0.0)))
    fresh = tiny_policy(seed=2).eval()
    np.testing.assert_array_equal(fresh.predict_chunk(obs_window()), gated.predict_chunk(obs_window()))


def test_sparse_schedule_reuses_and_resets_per_prediction():
    pol = tiny_policy(seed=2).eval()
    grid = [float(t) for t in pol.sampler.grid(10)]
    sched = uniform_schedule(pol.net.branch_names(), grid, every=3)
    cache = BlockCache(sched)
    pol.set_cache(cache)
    a = pol.predict_chunk(obs_window())
    assert cache.executed == 6 * 4 and cache.reused == 6 * 6  # update steps 0, 3, 6, 9 of 10
    b = pol.predict_chunk(obs_window(batch=None))
    assert np.isfinite(a).all() and np.isfinite(b).all()
    pol.set_cache(None)
    assert pol.net.branch_hook is None


def test_recorder_similarity_and_rederive():
    pol = tiny_policy(seed=0).eval()
    rec = BlockRecorder()
    pol.set_cache(rec)
    pol.predict_chunk(obs_window())
    assert rec.timesteps == [float(t) for t in pol.sampler.grid(10)]
    S, change = similarity_and_change(rec.outputs["layer0.ffn"])
    assert S.shape == (10, 10) and np.allclose(np.diag(S), 1.0) and change > 0
    # a DDPM-100 schedule mapped onto DDIM-10's grid and onto an RTI tail
    sched = {"layer0.ffn": {99.0, 55.0, 12.0, 0.0}}
    assert rederive(sched, [90.0, 80.0, 70.0, 60.0, 50.0, 40.0, 30.0, 20.0, 10.0, 0.0])["layer0.ffn"] == \
        {90.0, 60.0, 20.0, 0.0}
    assert rederive(sched, [2.0, 1.0, 0.0])["layer0.ffn"] == {2.0, 0.0}
