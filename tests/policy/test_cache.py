import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import obs_window, tiny_policy
from policy.accel.cache import (BlockCache, BlockRecorder, TeaCacheGate, acs_steps, acs_steps_brute_force,
                                bubbling_union, rederive, schedule_value, similarity_and_change,
                                uniform_schedule)


def random_similarity(K, seed):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(K, 6)).cumsum(axis=0)  # drifting features: realistic structure
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    return unit @ unit.T


@pytest.mark.parametrize("objective", ["adjacent", "cached", "weighted"])
@pytest.mark.parametrize("K", [3, 5, 8])
def test_acs_equals_brute_force(objective, K):
    for seed in range(5):
        S = random_similarity(K, seed)
        w = np.random.default_rng(seed).uniform(0.1, 2.0, K)
        for M in range(2, K + 1):
            steps = acs_steps(S, M, objective, w)
            ref_steps, ref_value = acs_steps_brute_force(S, M, objective, w)
            assert steps[0] == 0 and steps[-1] == K - 1 and len(steps) == M
            assert schedule_value(S, steps, objective, w) == pytest.approx(ref_value, abs=1e-9), (steps, ref_steps)


def test_output_sensitivity_matches_a_finite_difference_through_the_sampler():
    """Perturbing the network output at one step of a DDPM run by h moves the final sample
    by w_k * h (the samplers are affine in the output for fixed noise)."""
    from policy.samplers import make_sampler
    from policy.schedule import NoiseSchedule
    from policy.accel.cache import output_sensitivity
    sampler = make_sampler("ddpm", NoiseSchedule("squaredcos_cap_v2", 100), prediction_type="sample",
                           clip_sample=False)
    pairs = sampler.steps(100)
    w = output_sensitivity(sampler, pairs)
    assert w[-1] == pytest.approx(1.0) and np.all(np.diff(w) >= 0)  # later steps matter more

    def final(k, h):
        x = torch.full((1, 1, 1), 0.3, dtype=torch.float64)
        for i, (t, t_next) in enumerate(pairs):
            out = torch.full_like(x, 0.5) + (h if i == k else 0.0)
            x = sampler.step(x, out, t, t_next, {}, noise=torch.zeros_like(x))
        return float(x)
    for k in (0, 50, 90, 99):
        assert (final(k, 1e-3) - final(k, 0.0)) / 1e-3 == pytest.approx(w[k], rel=1e-4, abs=1e-9)


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
