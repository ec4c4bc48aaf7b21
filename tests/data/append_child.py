"""Child process for the crash tests: appends episodes, optionally SIGKILLs itself.

usage: append_child.py PATH START COUNT [KILL_AT_WRITE]
KILL_AT_WRITE: kill the process right before the n-th zarr array write of the run
(counting resizes and element writes), so the kill lands at a chosen point of an append.
"""
import os
import signal
import sys

import zarr

sys.path.insert(0, os.path.dirname(__file__))
from episodes import make_episode  # noqa: E402

from dpctrl.data import ReplayBuffer  # noqa: E402

path, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kill_at = int(sys.argv[4]) if len(sys.argv) > 4 else -1
writes = 0


def counting(fn):
    def wrapper(*a, **kw):
        global writes
        writes += 1
        if writes == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*a, **kw)
    return wrapper


zarr.Array.__setitem__ = counting(zarr.Array.__setitem__)
zarr.Array.resize = counting(zarr.Array.resize)

rb = ReplayBuffer.open_or_create(path)
for i in range(start, start + count):
    rb.add_episode(make_episode(i), meta={"seed": i, "success": True})
    print(f"committed {i}", flush=True)
