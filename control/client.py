"""Robot-side proxy for a policy served by ``control.server.PolicyServer``.

``RemotePolicy`` looks like a local policy to ``ControlLoop`` (``predict_chunk``,
``note_executed``, ``reset``, ``n_obs_steps``...). A request that gets no reply within
``timeout_s`` raises ``ConnectionError`` at once and the socket is dropped; the loop keeps
executing its queue and then holds safely (the safety filter), and each later call first
waits out an exponential backoff (without blocking: it raises until the backoff has passed)
before reconnecting with a fresh handshake. A server restart is handled the same way (its
``unknown_session`` reply triggers a new handshake).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import zmq

from dpctrl.control import protocol as P


class RemoteError(RuntimeError):
    """The server answered with an error reply."""

    def __init__(self, code: str, message: str):
        super().__init__(f"server refused the request ({code}): {message}")
        self.code = code


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"server address must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


class RemotePolicy:
    def __init__(self, address: str, token: str | None = None, timeout_s: float = 1.0,
                 backoff_s: tuple[float, float] = (0.05, 2.0), name: str = "robot",
                 max_message_bytes: int = P.MAX_MESSAGE_BYTES):
        host, port = parse_address(address)
        self.endpoint = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
        self.token, self.timeout_s, self.name = token, timeout_s, name
        self.backoff_min, self.backoff_max = backoff_s
        self.max_message_bytes = max_message_bytes
        self.ctx = zmq.Context()
        self.sock: zmq.Socket | None = None
        self.session: int | None = None
        self.meta: dict = {}
        self._lock = threading.Lock()  # one request in flight; the socket is used by one thread at a time
        self._seq = 0
        self._executed: int | None = None
        self._reset = True
        self._backoff = 0.0
        self._next_try = 0.0
        self.rtt_ms: list[float] = []
        self.server_ms: list[float] = []
        self.reconnects = 0
        self.failures = 0

    # ------------------------------------------------------------------ policy interface
    @property
    def n_obs_steps(self) -> int:
        return self.meta["n_obs_steps"]

    @property
    def n_action_steps(self) -> int:
        return self.meta["n_action_steps"]

    @property
    def horizon(self) -> int:
        return self.meta["horizon"]

    def reset(self) -> None:
        self._reset, self._executed = True, None

    def note_executed(self, n: int) -> None:
        self._executed = int(n)

    def predict_chunk(self, obs_window: dict) -> np.ndarray:
        with self._lock:
            if self.sock is None:
                self._connect()
            try:
                return self._infer(obs_window)
            except RemoteError as e:
                if e.code != "unknown_session":  # the server restarted: shake hands again, retry once
                    raise
                self.session = None
                self._connect()
                return self._infer(obs_window)

    # ------------------------------------------------------------------ connection
    def connect(self) -> dict:
        """Handshake now (raises ConnectionError if the server does not answer); returns its policy info."""
        with self._lock:
            self._connect(force=True)
        return self.meta

    def _connect(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_try:
            raise ConnectionError(f"policy server {self.endpoint} unavailable; next try in {self._next_try - now:.2f} s")
        if self.sock is None:
            self.sock = self.ctx.socket(zmq.DEALER)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.connect(self.endpoint)
        reply = self._request({"type": "hello", "name": self.name})
        if reply.get("type") != "welcome" or not isinstance(reply.get("session"), int):
            raise RemoteError("bad_request", f"unexpected handshake reply {reply.get('type')!r}")
        if self.session is not None or self.meta:
            self.reconnects += 1
        self.session, self.meta = reply["session"], reply["policy"]
        self._reset = True  # a new session starts cold
        self._backoff = 0.0

    def _fail(self) -> None:
        """No reply: drop the socket (a late reply must not be read as the next one's) and back off."""
        self.failures += 1
        if self.sock is not None:
            self.sock.close(0)
        self.sock = None
        self._backoff = min(self.backoff_max, max(self.backoff_min, 2 * self._backoff))
        self._next_try = time.monotonic() + self._backoff

    def _request(self, msg: dict) -> dict:
        if self.token is not None:
            msg = {**msg, "token": self.token}
        payload = P.encode(msg)
        if len(payload) > self.max_message_bytes:
            raise ValueError(f"request of {len(payload)} bytes exceeds the limit of {self.max_message_bytes}")
        self.sock.send(payload)
        deadline = time.monotonic() + self.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.sock.poll(int(remaining * 1000) + 1):
                self._fail()
                raise ConnectionError(f"no reply from {self.endpoint} within {self.timeout_s:.2f} s")
            reply = P.decode(self.sock.recv(), self.max_message_bytes)
            if reply.get("seq") not in (None, msg.get("seq")):
                continue  # a stale reply to an earlier request
            if reply["type"] == "error":
                raise RemoteError(str(reply.get("code")), str(reply.get("message")))
            return reply

    def _infer(self, obs_window: dict) -> np.ndarray:
        self._seq += 1
        obs = {k: P.pack_array(np.asarray(obs_window[k])) for k in self.meta["obs"]}
        msg = {"type": "infer", "session": self.session, "seq": self._seq, "t_obs": time.time(), "obs": obs,
               "reset": self._reset, "executed": self._executed}
        t0 = time.perf_counter()
        reply = self._request(msg)
        self.rtt_ms.append((time.perf_counter() - t0) * 1000)
        if reply.get("type") != "chunk":
            raise RemoteError("bad_request", f"unexpected reply {reply.get('type')!r}")
        self.server_ms.append(float(reply.get("server_ms", np.nan)))
        self._reset, self._executed = False, None
        actions = P.unpack_array(reply["actions"], "actions")
        if actions.ndim != 2 or not np.isfinite(actions).all():
            raise RemoteError("policy_error", f"server sent a chunk of shape {actions.shape} with non-finite values"
                              if actions.ndim == 2 else f"server sent a chunk of shape {actions.shape}")
        return actions

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
        self.ctx.term()

    def describe(self) -> str:
        return f"remote {self.endpoint}: {self.meta.get('describe', '')}"
