import subprocess
import sys
import time
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from episodes import check_episode, make_episode

from dpctrl.data import ReplayBuffer

CHILD = str(Path(__file__).with_name("append_child.py"))


def run_child(path, start, count, kill_at=None):
    args = [sys.executable, CHILD, str(path), str(start), str(count)]
    if kill_at is not None:
        args.append(str(kill_at))
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("fmt", [2, 3])
def test_round_trip_and_reopen(tmp_path, fmt):
    rb = ReplayBuffer.create(tmp_path / "rb.zarr", zarr_format=fmt)
    for i in range(4):
        assert rb.add_episode(make_episode(i), meta={"seed": 100 + i, "success": True}) == i
    rb2 = ReplayBuffer.open(tmp_path / "rb.zarr")
    assert rb2.zarr_format == fmt
    assert rb2.n_episodes == 4 and rb2.keys() == ["action", "image", "obs"]
    assert rb2.n_steps == sum(len(make_episode(i)["obs"]) for i in range(4))
    for i in range(4):
        check_episode(rb2.episode(i), i)
        assert rb2.episode_meta(i) == {"seed": 100 + i, "success": True}
    check_episode(rb2.episode(-1), 3)
    with pytest.raises(IndexError):
        rb2.episode(4)
    with pytest.raises(PermissionError):
        rb2.add_episode(make_episode(4))


def test_create_refuses_existing(tmp_path):
    ReplayBuffer.create(tmp_path / "rb.zarr")
    with pytest.raises(FileExistsError):
        ReplayBuffer.create(tmp_path / "rb.zarr")
    with pytest.raises(FileNotFoundError):
        ReplayBuffer.open(tmp_path / "nope.zarr")


def test_reads_diffusion_policy_format2_file(tmp_path):
    """A file laid out the way Diffusion Policy's zarr-2 code writes it: Blosc, time chunks."""
    path = tmp_path / "dp.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    blosc = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE)
    eps = [make_episode(i) for i in range(3)]
    data = root.create_group("data")
    for k in eps[0]:
        full = np.concatenate([e[k] for e in eps])
        arr = data.create_array(k, shape=full.shape, chunks=(7,) + full.shape[1:], dtype=full.dtype,
                                compressors=blosc)
        arr[:] = full
    meta = root.create_group("meta")
    ends = np.cumsum([len(e["obs"]) for e in eps]).astype(np.int64)
    meta.create_array("episode_ends", shape=ends.shape, dtype="int64", compressors=blosc)[:] = ends
    assert (path / "data" / "obs" / ".zarray").exists()  # really format 2 on disk

    rb = ReplayBuffer.open(path)
    assert rb.n_episodes == 3 and rb.zarr_format == 2
    for i in range(3):
        check_episode(rb.episode(i), i)
    rb = ReplayBuffer.open(path, mode="a")  # and appending to it keeps its format
    rb.add_episode(make_episode(3))
    check_episode(ReplayBuffer.open(path).episode(3), 3)
    assert zarr.open_group(str(path), mode="r").metadata.zarr_format == 2


def _state(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(Path(path).rglob("*")) if p.is_file()}


@pytest.mark.parametrize("bad, match", [
    ({**make_episode(9), "action": np.zeros((3, 2), np.float32)}, "'action'.*ragged"),
    ({**make_episode(9), "action": np.full((16, 2), np.nan, np.float32)}, "'action'.*non-finite"),
    ({**make_episode(9), "obs": np.array([["a"]] * 16)}, "'obs'.*not numeric"),
    ({k: v for k, v in make_episode(9).items() if k != "image"}, "missing key 'image'"),
    ({**make_episode(9), "extra": np.zeros((16, 1))}, "unexpected key 'extra'"),
    ({**make_episode(9), "image": np.zeros((16, 4, 4, 3), np.float32)}, "'image'.*dtype"),
    ({**make_episode(9), "obs": np.zeros((16, 5), np.float32)}, "'obs'.*shape"),
])
def test_bad_input_raises_and_writes_nothing(tmp_path, bad, match):
    rb = ReplayBuffer.create(tmp_path / "rb.zarr")
    rb.add_episode(make_episode(0), meta={"seed": 0})
    before = _state(tmp_path / "rb.zarr")
    with pytest.raises(ValueError, match=match):
        rb.add_episode(bad, meta={"seed": 1})
    assert _state(tmp_path / "rb.zarr") == before
    assert ReplayBuffer.open(tmp_path / "rb.zarr").n_episodes == 1


def test_bad_metadata_and_empty(tmp_path):
    rb = ReplayBuffer.create(tmp_path / "rb.zarr")
    with pytest.raises(ValueError, match="zero steps"):
        rb.add_episode({"action": np.zeros((0, 2))})
    rb.add_episode(make_episode(0), meta={"seed": 0})
    with pytest.raises(ValueError, match="metadata keys"):
        rb.add_episode(make_episode(1), meta={"sed": 1})
    with pytest.raises(ValueError, match="metadata 'seed'.*non-finite"):
        rb.add_episode(make_episode(1), meta={"seed": float("nan")})
    assert rb.n_episodes == 1


def test_every_kill_point_of_an_append_leaves_committed_episodes(tmp_path):
    """Kill the writer before each of the zarr writes of one append (3 keys + 2 meta + commit)."""
    path = tmp_path / "rb.zarr"
    assert run_child(path, 0, 2).returncode == 0  # episodes 0, 1 committed
    probe = run_child(tmp_path / "probe.zarr", 0, 2)  # count the writes of the 2nd append
    assert probe.returncode == 0
    n_writes_per_append = 2 * (3 + 2 + 1)  # resize + write for each of 3 keys, 2 meta, ends
    for kill_at in range(1, n_writes_per_append + 1):
        trial = tmp_path / f"trial{kill_at}.zarr"
        subprocess.run(["cp", "-r", str(path), str(trial)], check=True)
        res = run_child(trial, 2, 1, kill_at=kill_at)
        assert res.returncode == -9, res.stderr
        rb = ReplayBuffer.open(trial)
        assert rb.n_episodes == 2, f"kill at write {kill_at}"
        for i in range(2):
            check_episode(rb.episode(i), i)
        assert rb.meta_column("seed").tolist() == [0, 1]
        # reopening for append trims the leftovers and appending goes on cleanly
        assert run_child(trial, 2, 2).returncode == 0
        rb = ReplayBuffer.open(trial)
        assert rb.n_episodes == 4
        for i in range(4):
            check_episode(rb.episode(i), i)
    # one write past the append's writes: the append completed
    res = run_child(tmp_path / "past.zarr", 0, 1, kill_at=n_writes_per_append + 1)
    assert res.returncode == 0 and ReplayBuffer.open(tmp_path / "past.zarr").n_episodes == 1


def test_kill_during_first_append_then_recover(tmp_path):
    path = tmp_path / "rb.zarr"
    assert run_child(path, 0, 1, kill_at=4).returncode == -9  # mid-way through the first episode
    assert ReplayBuffer.open(path).n_episodes == 0
    assert run_child(path, 0, 3).returncode == 0
    rb = ReplayBuffer.open(path)
    assert rb.n_episodes == 3
    for i in range(3):
        check_episode(rb.episode(i), i)


def test_random_kills_of_a_busy_writer(tmp_path):
    """SIGKILL at arbitrary times while a writer appends in a loop; the store stays readable."""
    path = tmp_path / "rb.zarr"
    rng = np.random.default_rng(0)
    next_ep = 0
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, CHILD, str(path), str(next_ep), "1000"],
                                stdout=subprocess.PIPE, text=True)
        for _ in range(int(rng.integers(1, 4))):  # wait for a few commits, then kill at once
            proc.stdout.readline()
        time.sleep(float(rng.uniform(0, 0.05)))
        proc.kill()
        proc.wait()
        rb = ReplayBuffer.open(path, mode="a")
        assert rb.n_episodes >= next_ep + 1
        for i in range(rb.n_episodes):
            check_episode(rb.episode(i), i)
        next_ep = rb.n_episodes


def test_concurrent_reader_never_sees_torn_episode(tmp_path):
    path = tmp_path / "rb.zarr"
    ReplayBuffer.create(path).add_episode(make_episode(0), meta={"seed": 0, "success": True})
    writer = subprocess.Popen([sys.executable, CHILD, str(path), "1", "40"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reader = ReplayBuffer.open(path)
    seen = set()
    try:
        while writer.poll() is None or len(seen) < 41:
            reader.refresh()
            n = reader.n_episodes
            check_episode(reader.episode(n - 1), n - 1)
            check_episode(reader.episode(0), 0)
            seen.add(n)
            if writer.poll() is not None and n == 41:
                break
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0, writer.stderr.read()
    assert len(seen) > 1  # the reader really overlapped with the writer
    assert ReplayBuffer.open(path).n_episodes == 41
