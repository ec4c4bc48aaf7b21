"""``dpctrl collect --workers N``: experts on Ray workers, the driver the store's only writer,
appending in seed order: the same store as one process writes, and a kill -9 loses nothing added."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("ray")

from dpctrl.data import ReplayBuffer  # noqa: E402
from dpctrl.data.collect import collect  # noqa: E402

DPCTRL = shutil.which("dpctrl") or f"{sys.executable} -m dpctrl.launch.cli"


def same_store(a, b, n=None):
    ra, rb = ReplayBuffer.open(a), ReplayBuffer.open(b)
    n = min(ra.n_episodes, rb.n_episodes) if n is None else n
    assert ra.meta_column("seed").tolist()[:n] == rb.meta_column("seed").tolist()[:n]
    for i in range(n):
        ea, eb = ra.episode(i), rb.episode(i)
        assert set(ea) == set(eb) and all(np.array_equal(ea[k], eb[k]) for k in ea)
    return n


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "lift.zarr"
    collect("lift", 4, out, seed=20, progress=False)
    return out


def test_two_workers_write_the_store_one_process_writes(tmp_path, serial):
    out = tmp_path / "lift.zarr"
    rep = collect("lift", 4, out, seed=20, progress=False, workers=2)
    assert rep.added == 4 and same_store(out, serial) == 4
    assert ReplayBuffer.open(out).attrs["next_seed"] == ReplayBuffer.open(serial).attrs["next_seed"]


def test_kill_9_of_the_driver_loses_no_added_episode(tmp_path, serial):
    out = tmp_path / "lift.zarr"
    cmd = [*DPCTRL.split(), "collect", "--env", "lift", "--episodes", "40", "--seed", "20", "--out", str(out),
           "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and ReplayBuffer.open(out).n_episodes >= 1:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the collection ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray cluster it started
    finally:
        proc.wait(timeout=60)
    kept = ReplayBuffer.open(out).n_episodes
    assert 1 <= kept < 40  # 40 asked so that a fast machine is still mid-run at the kill (CI once wrote 4 of 4)
    same_store(out, serial, min(kept, 4))  # what was added is intact
    target = max(4, kept + 1)
    rep = collect("lift", target, out, seed=20, progress=False)  # resumes after the last seed tried
    assert rep.episodes == target and same_store(out, serial, 4) == 4
