"""A chunk policy in a child process, so that inference shares neither the GIL nor a core with
the control loop and the simulator (``dpctrl run --async``, the default ``--inference process``).

    from functools import partial
    policy = PolicyProcess(partial(dpctrl.load_policy, "lift"), threads=1)
    run_loop(policy, "sim:lift", async_inference=True)

``PolicyProcess`` looks like the policy to ``ControlLoop`` (``predict_chunk``, ``note_executed``,
``reset``, ``describe``, the chunk geometry). The child is a fresh interpreter
(``python -m dpctrl.control.policy_process``: no simulator or renderer state inherited, and
unlike multiprocessing's ``spawn`` it never re-runs the caller's script, so a script needs no
``if __name__ == "__main__"`` guard). Over a socket pair it receives the caller's ``sys.path``
and ``factory`` (a zero-argument callable importable by name: a library function, a
``functools.partial`` of one, or a module-level function), builds the policy, sets its torch
threads, and answers one request at a time: observation windows and committed prefixes in,
action chunks out (numpy arrays, in memory; nothing is read from disk but the checkpoint the
factory loads).
``note_executed`` and ``reset`` are sent without waiting (the pipe keeps their order before
the next request). A policy exception comes back as ``PolicyProcessError`` with the child's
message, so the loop counts it as a failed chunk; a child that dies is reported with its exit
code, and every later call fails the same way.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

import numpy as np


class PolicyProcessError(RuntimeError):
    """The policy in the child process raised, or the child is gone."""


def _serve(conn: Connection) -> None:
    """The child: build the policy, then answer requests until ``stop`` or the parent goes."""
    try:
        path, factory_bytes, threads = conn.recv()
        sys.path[:] = path
        import pickle

        import torch
        torch.set_num_threads(threads)
        factory = pickle.loads(factory_bytes)  # the parent's callable, sent in memory over the socket
        policy = factory()
        conn.send(("ready", {"n_obs_steps": policy.n_obs_steps, "n_action_steps": policy.n_action_steps,
                             "horizon": policy.horizon, "describe": policy.describe(),
                             "expected_obs": policy.expected_obs(),
                             "overlap_modes": tuple(getattr(policy, "overlap_modes", ())),
                             "deploy": getattr(policy, "deploy", "eager")}))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, KeyboardInterrupt):  # the parent closed the pipe or the user pressed Ctrl-C
            return
        kind = msg[0]
        if kind == "stop":
            return
        if kind == "reset":
            policy.reset()
        elif kind == "note":
            policy.note_executed(msg[1])
        elif kind == "predict":
            try:
                conn.send(("ok", np.asarray(policy.predict_chunk(msg[1], **msg[2]), dtype=np.float32)))
            except Exception as e:  # noqa: BLE001 - one failed chunk, the child stays usable
                conn.send(("error", f"{type(e).__name__}: {e}"))


class PolicyProcess:
    def __init__(self, factory: Callable[[], object], threads: int = 1, start_timeout_s: float = 300.0):
        import pickle
        try:
            factory_bytes = pickle.dumps(factory)
        except (pickle.PicklingError, AttributeError, TypeError) as e:
            raise ValueError(f"the policy factory must be importable by name (a module-level function or a "
                             f"functools.partial of one), not {factory!r}: {e}") from None
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen([sys.executable, "-m", "dpctrl.control.policy_process", str(theirs.fileno())],
                                      pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        self._conn = Connection(ours.detach())
        self._lock = threading.Lock()
        self.threads = threads
        self._send((list(sys.path), factory_bytes, threads))
        if not self._conn.poll(start_timeout_s):
            self.close()
            raise PolicyProcessError(f"the policy process did not start within {start_timeout_s:g} s")
        kind, meta = self._receive()
        if kind == "error":
            self.close()
            raise PolicyProcessError(f"the policy process could not build the policy: {meta}")
        self.meta = meta
        self.n_obs_steps, self.n_action_steps, self.horizon = meta["n_obs_steps"], meta["n_action_steps"], meta["horizon"]
        self.overlap_modes, self.deploy = meta["overlap_modes"], meta["deploy"]

    def _gone(self) -> PolicyProcessError:
        try:
            code = self._proc.wait(1.0)
        except subprocess.TimeoutExpired:
            code = None
        return PolicyProcessError(f"the policy process exited (code {code})")

    def _receive(self):
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            raise self._gone() from None

    def _send(self, msg: tuple) -> None:
        try:
            self._conn.send(msg)
        except OSError:
            raise self._gone() from None

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def expected_obs(self) -> dict:
        return dict(self.meta["expected_obs"])

    def describe(self) -> dict:
        return {**self.meta["describe"], "inference": "process", "inference_threads": self.threads}

    def reset(self) -> None:
        with self._lock:
            self._send(("reset",))

    def note_executed(self, n: int) -> None:
        with self._lock:
            self._send(("note", int(n)))

    def predict_chunk(self, obs_window: dict, committed=None) -> np.ndarray:
        """One chunk ``(T, A)`` in robot units from a window ``{key: (To, ...)}``."""
        kw = {} if committed is None else {"committed": committed}
        with self._lock:
            self._send(("predict", {k: np.asarray(v) for k, v in obs_window.items()}, kw))
            kind, value = self._receive()
        if kind == "error":
            raise PolicyProcessError(value)
        return value

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child; killed if it does not exit within ``timeout`` (a hung call)."""
        try:
            self._conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout)
        self._conn.close()

    def __enter__(self) -> "PolicyProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":  # the child: python -m dpctrl.control.policy_process FD
    _serve(Connection(int(sys.argv[1])))
