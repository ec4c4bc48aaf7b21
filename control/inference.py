"""The inference worker: computes the next chunk while the current one executes.

One thread, one policy instance, one request in flight and a one-slot result mailbox (no
unbounded queues). torch releases the GIL inside its kernels, so the control thread keeps
its deadlines while the worker runs the network. A policy exception is caught and handed
to the loop as a result with ``error`` set; the worker stays usable for the next request.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class ChunkResult:
    actions: np.ndarray | None  # (n, A) executed part of the chunk, robot units
    t_obs: float  # timestamp of the observation it was computed from
    latency_s: float
    error: BaseException | None = None


def run_policy(predict: Callable[..., np.ndarray], window: dict, t_obs: float, first: int, n: int | None,
               clock: Callable[[], float] = time.perf_counter, **kw) -> ChunkResult:
    """One chunk: ``predict(window, **kw)[first:first+n]`` (``n`` None: every action from
    ``first`` on), timed, with failures captured."""
    t0 = clock()
    try:
        actions = np.asarray(predict(window, **kw), dtype=np.float32)[first: None if n is None else first + n]
        return ChunkResult(actions, t_obs, clock() - t0)
    except Exception as e:  # the loop decides what a failure means; the worker survives it
        return ChunkResult(None, t_obs, clock() - t0, error=e)


class InferenceWorker:
    def __init__(self, predict: Callable[[dict], np.ndarray], first: int, n: int | None):
        self.predict, self.first, self.n = predict, first, n
        self._lock = threading.Lock()
        self._request = threading.Event()
        self._stop = threading.Event()
        self._pending: tuple[dict, float, dict, int] | None = None
        self._result: ChunkResult | None = None
        self._generation = 0  # results of requests made before the last ``discard`` are dropped
        self.busy = False
        self._thread = threading.Thread(target=self._run, name="dpctrl-inference", daemon=True)
        self._thread.start()

    def submit(self, window: dict, t_obs: float, **kw) -> bool:
        """Start a chunk unless one is in flight; returns whether it was accepted. ``kw`` go to
        the policy call (e.g. ``committed`` actions for inpainting)."""
        with self._lock:
            if self.busy:
                return False
            self.busy = True
            self._pending = (window, t_obs, kw, self._generation)
        self._request.set()
        return True

    def discard(self, timeout: float = 5.0) -> bool:
        """Forget any chunk requested so far (an episode ended): its result is never returned by
        ``poll``. Waits up to ``timeout`` for a call in flight to finish (so nothing uses the
        policy while it is reset); returns whether the worker is idle."""
        with self._lock:
            self._generation += 1
            self._result = None
        deadline = time.monotonic() + timeout
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.001)
        return not self.busy

    def poll(self) -> ChunkResult | None:
        """The finished chunk, once; None while computing or idle."""
        with self._lock:
            res, self._result = self._result, None
            return res

    def _run(self) -> None:
        while True:
            self._request.wait()
            self._request.clear()
            if self._stop.is_set():
                return
            with self._lock:
                window, t_obs, kw, generation = self._pending
            res = run_policy(self.predict, window, t_obs, self.first, self.n, **kw)
            with self._lock:
                if generation == self._generation:
                    self._result = res
                self.busy = False

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the thread; returns False if a hung policy call kept it alive past ``timeout``
        (the thread is a daemon, so it cannot keep the process alive)."""
        self._stop.set()
        self._request.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()
