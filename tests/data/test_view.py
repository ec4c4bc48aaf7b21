"""Rerun recordings of episode stores and of the live loop (data/view.py), read back with
Rerun's own chunk reader: counts and values, not only that a file exists."""
import json

import numpy as np
import pytest

pytest.importorskip("rerun")

from dpctrl.data.replay_buffer import ReplayBuffer  # noqa: E402
from dpctrl.data.view import LiveRecording, read_rrd, view_store  # noqa: E402


def _episode(rng, length, loop=False):
    ep = {"action": rng.normal(size=(length, 3)).astype(np.float32),
          "state": rng.normal(size=(length, 2)).astype(np.float32),
          "agentview_image": rng.integers(0, 255, (length, 8, 8, 3), dtype=np.uint8)}
    if loop:
        arrived = np.zeros(length, np.uint8)
        arrived[::4] = 1
        ep.update(t=np.arange(length) * 0.05, held=(np.arange(length) == 5).astype(np.uint8),
                  queue=np.arange(length) % 4, chunk_arrived=arrived,
                  chunk=np.where(arrived[:, None, None] > 0, rng.normal(size=(length, 6, 3)), 0).astype(np.float32),
                  chunk_latency_ms=np.where(arrived > 0, 12.5, 0.0), chunk_delay=np.where(arrived > 0, 1, 0))
    return ep


@pytest.mark.parametrize("loop", [False, True])
def test_a_store_on_rerun_timelines(tmp_path, loop):
    rng = np.random.default_rng(0)
    rb = ReplayBuffer.create(tmp_path / "store.zarr")
    eps = [_episode(rng, n, loop) for n in (9, 13)]
    for i, ep in enumerate(eps):
        rb.add_episode(ep, meta={"seed": 40 + i, "success": bool(i)})
    res = view_store(tmp_path / "store.zarr", [1], tmp_path / "out.rrd")
    assert res["episodes"] == [1] and res["steps"] == 13 and res["loop_record"] is loop
    got = read_rrd(tmp_path / "out.rrd")
    assert not any(k.startswith("/episode_0") for k in got)  # only the episode asked for
    action = got["/episode_1/action"]
    assert action["step"] == list(range(13))
    np.testing.assert_allclose(np.array(action["Scalars:scalars"]), eps[1]["action"], rtol=1e-6)
    assert len(got["/episode_1/obs/state"]["step"]) == 13
    assert len(got["/episode_1/obs/agentview_image"]["Image:buffer"]) == 13
    meta = json.loads(got["/episode_1/meta"]["TextDocument:text"][0][0])
    assert meta == {"episode": 1, "seed": 41, "success": True}
    if loop:
        chunks = got["/episode_1/loop/chunk"]
        assert chunks["step"] == [0, 4, 8, 12]  # at the cycles they arrived
        # the chunk that arrived at step 4, dimension 2: observed 1 cycle before, its actions due from step 3
        first = np.array(chunks["LineStrips2D:strips"][1][2])
        np.testing.assert_allclose(first, np.stack([3 + np.arange(6), eps[1]["chunk"][4, :, 2]], 1), rtol=1e-6)
        assert got["/episode_1/loop/chunk_latency_ms"]["Scalars:scalars"] == [[12.5]] * 4
        assert np.array(got["/episode_1/loop/held"]["Scalars:scalars"]).ravel().tolist() == \
            eps[1]["held"].astype(float).tolist()
        assert "/episode_1/obs/chunk" not in got and "/episode_1/obs/t" not in got
    else:
        assert not any("/loop/" in k for k in got)


def test_bad_stores_and_episodes_are_refused_with_the_valid_range(tmp_path):
    rb = ReplayBuffer.create(tmp_path / "s.zarr")
    rb.add_episode(_episode(np.random.default_rng(1), 5))
    with pytest.raises(ValueError, match=r"episode 3 is out of range: .* holds episodes 0..0"):
        view_store(tmp_path / "s.zarr", [0, 3], tmp_path / "x.rrd")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="is not an episode store"):
        view_store(tmp_path / "plain", None, tmp_path / "x.rrd")
    with pytest.raises(FileNotFoundError):
        view_store(tmp_path / "missing.zarr", None, tmp_path / "x.rrd")
    with pytest.raises(ValueError, match=r"\.rrd file"):
        view_store(tmp_path / "s.zarr", None, tmp_path / "x.txt")
    assert not (tmp_path / "x.rrd").exists()  # nothing written for a refused request


def test_live_recording_logs_every_cycle_off_the_loop_thread(tmp_path):
    import threading
    live = LiveRecording(tmp_path / "live.rrd")
    seen_threads = []
    original = live.rec.log

    def log(*a, **kw):
        seen_threads.append(threading.current_thread().name)
        return original(*a, **kw)
    live.rec.log = log
    chunk = np.arange(12, dtype=np.float32).reshape(4, 3)
    for i in range(10):
        live.on_cycle(3, i, {"action": np.full(3, i, np.float32), "t": i * 0.05, "held": i == 2, "queue": 3 - i % 4,
                             "chunk_arrived": i % 4 == 0, "chunk": chunk if i % 4 == 0 else None,
                             "chunk_latency_ms": 9.0 if i % 4 == 0 else 0.0, "chunk_delay": 0,
                             "x": np.array([i, -i], np.float32)})
    live.on_episode_end({"action": np.zeros((10, 3))}, type("R", (), dict(seed=3, success=True, cycles=10,
                                                                        stopped="done", deadline_misses=1, chunks=3)))
    live.close()
    assert set(seen_threads) == {"dpctrl-rerun"} and live.logged == 10
    got = read_rrd(tmp_path / "live.rrd")
    assert got["/episode_seed3/action"]["step"] == list(range(10))
    assert got["/episode_seed3/loop/chunk"]["step"] == [0, 4, 8]
    assert np.array(got["/episode_seed3/obs/x"]["Scalars:scalars"])[:, 1].tolist() == [-i for i in range(10)]
    assert json.loads(got["/episode_seed3/meta"]["TextDocument:text"][0][0])["deadline_misses"] == 1


def test_a_picture_read_back_from_the_recording(tmp_path):
    from dpctrl.data.view import plot_recording
    rb = ReplayBuffer.create(tmp_path / "rec.zarr")
    rb.add_episode(_episode(np.random.default_rng(2), 12, loop=True), meta={"seed": 1})
    view_store(tmp_path / "rec.zarr", None, tmp_path / "rec.rrd")
    res = plot_recording(tmp_path / "rec.rrd", tmp_path / "rec.png")
    assert res == {"episode": "episode_0", "steps": 12, "chunks": 3}
    assert (tmp_path / "rec.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="has no episode 'episode_4'; it has episode_0"):
        plot_recording(tmp_path / "rec.rrd", tmp_path / "x.png", prefix="episode_4")
