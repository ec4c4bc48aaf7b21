"""Bidirectional decoding's backward half (``--overlap bid``): candidates in one batched pass,
the one most coherent with the committed prefix kept."""
import numpy as np
import pytest

from dpctrl.policy.chunking import Prefix, most_coherent, rtc_weights
from dpctrl.policy.registry import load_policy


def test_most_coherent_picks_the_smallest_weighted_distance():
    committed = np.zeros((2, 3, 1))
    cands = np.zeros((2, 3, 5, 1))
    cands[0, 0, :3], cands[0, 1, :3], cands[0, 2, :3] = 1.0, 0.1, 0.5
    cands[1, 0, 2], cands[1, 1, 0], cands[1, 2, :3] = 1.0, 0.3, 0.3  # row 1: a far step weighs less
    w = np.array([1.0, 1.0, 0.05])
    assert most_coherent(cands, committed, w).tolist() == [1, 0]
    # steps past the committed ones (or past the weights) do not count
    cands[0, 1, 3:] = 100.0
    assert most_coherent(cands, committed, w)[0] == 1


def obs(policy, B, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0, 0.3, (B, *s)).astype(np.float32) for k, s in policy.expected_obs().items()}


@pytest.mark.parametrize("warm", [False, True])
def test_bid_keeps_the_candidate_closest_to_the_prefix(warm):
    policy = load_policy("lift", seed=3)
    if warm:
        from dpctrl.policy.accel.warmstart import rti_for
        policy.set_warm_start(rti_for("lift", policy))
        policy.predict_batch(obs(policy, 2))  # a previous chunk to start from
        policy.note_executed(8)
    o = obs(policy, 2)
    To, N = policy.n_obs_steps, 6
    committed = np.full((2, 7, policy.cfg.action_dim), 0.05, np.float32)
    prefix = Prefix(committed, delay=2, execute=8, mode="bid", samples=N)
    state = policy.generator.get_state()
    saved = (dict(policy.warm.prev), dict(policy.warm.executed)) if warm else None
    out = policy.predict_batch(o, committed=prefix)
    assert out.shape == (2, policy.horizon, policy.cfg.action_dim) and np.isfinite(out).all()
    # the same draws without selection: N candidates per row (rows repeated in a row, as bid does)
    selected = dict(policy.warm.prev) if warm else None
    policy.generator.set_state(state)
    if warm:  # each row's candidates start from that row's shifted previous chunk
        policy.warm.prev = {r * N + j: saved[0][r] for r in range(2) for j in range(N)}
        policy.warm.executed = {r * N + j: saved[1][r] for r in range(2) for j in range(N) if r in saved[1]}
    cands = policy.predict_batch({k: np.repeat(v, N, 0) for k, v in o.items()}).reshape(2, N, policy.horizon, -1)
    w = rtc_weights(policy.horizon - To + 1, 2, 8, 7)[:7]
    cost = ((((cands[:, :, To - 1:To + 6] - committed[:, None]) ** 2).sum(-1)) * w).sum(-1)
    pick = cost.argmin(1)
    np.testing.assert_allclose(out, cands[np.arange(2), pick], atol=1e-5)
    if warm:  # the warm start keeps the selected candidate for the next chunk
        for r in range(2):
            np.testing.assert_allclose(selected[r].numpy(), policy.warm.prev[r * N + pick[r]].numpy(), atol=1e-6)
    assert len({round(float(c), 6) for c in cost[0]}) == N  # the candidates do differ


def test_bid_with_nothing_committed_is_a_plain_chunk():
    policy = load_policy("lift", seed=3)
    o = obs(policy, 1)
    state = policy.generator.get_state()
    a = policy.predict_batch(o, committed=Prefix(np.zeros((1, 0, 7), np.float32), 0, 8, "bid"))
    policy.generator.set_state(state)
    np.testing.assert_array_equal(a, policy.predict_batch(o))
    with pytest.raises(ValueError, match="at least 1 candidate"):
        Prefix(np.zeros((1, 2, 7)), 0, 8, "bid", samples=0)
