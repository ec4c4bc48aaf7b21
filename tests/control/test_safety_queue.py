import numpy as np
import pytest

from dpctrl.policy.chunking import ActionQueue
from dpctrl.control.safety import SafetyFilter, WatchdogTimeout


def sf(**kw):
    base = dict(low=-np.ones(2), high=np.ones(2), safe_action=np.zeros(2), max_delta=0.5, max_hold_cycles=3)
    return SafetyFilter(**{**base, **kw})


def test_bounds_rate_limit_and_nan_guard():
    f = sf()
    np.testing.assert_allclose(f.filter(np.array([5.0, -0.2])), [1.0, -0.2])
    np.testing.assert_allclose(f.filter(np.array([-1.0, -0.2])), [0.5, -0.2])  # limited to 0.5 per step
    held = f.filter(np.array([np.nan, 0.0]))
    np.testing.assert_allclose(held, [0.5, -0.2])
    np.testing.assert_allclose(f.filter(np.array([np.inf, 0.0])), [0.5, -0.2])
    assert f.stats.clipped == 1 and f.stats.rate_limited == 1 and f.stats.rejected_non_finite == 2


def test_watchdog_holds_then_times_out():
    f = sf()
    np.testing.assert_allclose(f.filter(None), [0.0, 0.0])  # nothing sent yet: the safe action
    f.filter(np.array([0.3, 0.3]))
    for _ in range(3):
        np.testing.assert_allclose(f.filter(None), [0.3, 0.3])
    with pytest.raises(WatchdogTimeout):
        f.filter(None)
    assert f.stats.holds == 5 and f.stats.longest_hold == 4


def test_bad_safe_action():
    with pytest.raises(ValueError, match="safe action"):
        sf(safe_action=np.array([2.0, 0.0]))


def test_queue_timestamps_and_late_chunks():
    q = ActionQueue(0.1)
    q.push(np.arange(4)[:, None] * [1.0, 1.0], t_first=1.0, now=1.0)
    np.testing.assert_array_equal(q.pop(1.0), [0, 0])
    assert q.pop(1.02) is None  # next action is due at 1.1
    np.testing.assert_array_equal(q.pop(1.1), [1, 1])
    # skip a cycle: the action due at 1.2 expires, 1.3 is served
    np.testing.assert_array_equal(q.pop(1.3), [3, 3])
    assert q.stats.expired == 1
    # a late chunk computed from an observation at 1.3 arriving at 1.55: 3 of 5 actions dropped
    q.push(np.full((5, 2), 7.0), t_first=1.3, now=1.55)
    assert q.stats.dropped_late == 2 and len(q) == 3


@pytest.mark.parametrize("mode", ["replace", "blend"])
def test_overlap_modes(mode):
    q = ActionQueue(0.1, mode=mode, blend_tau=1.0)
    q.push(np.zeros((4, 1)), t_first=0.0, now=0.0)
    q.push(np.ones((4, 1)), t_first=0.2, now=0.2)  # overlaps slots 0.2 and 0.3
    got = [q.pop(t)[0] for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)]
    if mode == "replace":
        assert got == [0, 0, 1, 1, 1, 1]
    else:
        w0, w1 = 1.0, np.exp(-1.0)
        assert got == pytest.approx([0, 0, 1 - w0, 1 - w1, 1, 1])
