import pytest

from dpctrl.control.clock import FakeClock, RateKeeper


def make(rate=50.0, **kw):
    clock = FakeClock(100.0)
    return RateKeeper(rate, spin_s=0.0, clock=clock, sleep=clock.sleep, **kw), clock


def test_absolute_deadlines_do_not_drift():
    rk, clock = make(50.0)
    rk.start()
    for k in range(1, 1001):
        clock.advance(0.013)  # work shorter than the period
        assert rk.wait() == pytest.approx(100.0 + k * 0.02, abs=1e-9)
    s = rk.stats.summary()
    assert s["cycles"] == 1001 and s["overruns"] == 0
    assert s["mean_period_ms"] == pytest.approx(20.0, abs=1e-6)
    assert s["compute_ms"]["p50"] == pytest.approx(13.0, abs=1e-6)


def test_overrun_skips_to_next_future_deadline_and_counts(caplog):
    rk, clock = make(100.0, warn_every=2)
    rk.start()
    clock.advance(0.035)  # 3.5 periods of work: deadlines 1, 2, 3 are gone
    t = rk.wait()
    assert t == pytest.approx(100.04)
    assert rk.stats.overruns == 1 and rk.stats.skipped_cycles == 3
    clock.advance(0.005)
    assert rk.wait() == pytest.approx(100.05)  # back on the grid, no burst of late cycles
    clock.advance(0.012)
    rk.wait()
    clock.advance(0.012)
    rk.wait()
    assert rk.stats.overruns == 3
    assert sum("overran" in r.message for r in caplog.records) == 2  # warned on the 1st and 3rd


def test_bad_rate_and_unstarted():
    with pytest.raises(ValueError, match="positive"):
        RateKeeper(0)
    rk, _ = make()
    with pytest.raises(RuntimeError, match="start"):
        rk.wait()
