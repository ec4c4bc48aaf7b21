"""Policy server: inference for remote robot processes over ZeroMQ (see control/protocol.py).

One ROUTER socket, one thread. Each loop iteration drains every pending request, answers
handshakes and bad messages at once, and runs the inference requests as batches (grouped so
that warm-started and cold sessions are not mixed). Each client gets a session id at
``hello``; the policy keeps its warm-start state per session id, so clients never see each
other's chunks. A bad message gets an ``error`` reply naming the problem and the server
carries on; idle sessions are dropped after ``session_timeout_s`` so memory stays flat.

Loopback only by default: binding any other address needs ``allow_remote=True`` and a token.
"""
from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import zmq

from dpctrl.control import protocol as P

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServerStats:
    requests: int = 0
    chunks: int = 0
    batches: int = 0
    errors: Counter = field(default_factory=Counter)
    max_batch: int = 0


@dataclass
class _Infer:
    ident: bytes
    session: int
    seq: int
    t_obs: float
    obs: dict
    t_recv: float


def check_bind(host: str, token: str | None, allow_remote: bool) -> None:
    if host in LOOPBACK:
        return
    if not allow_remote:
        raise ValueError(f"binding to {host!r} exposes the policy beyond this machine; pass --allow-remote "
                         f"(and --token) to do it on purpose")
    if not token:
        raise ValueError("a server reachable from other machines needs a shared token (--token or DPCTRL_TOKEN)")


def describe(policy) -> str:
    cfg, warm = policy.cfg, getattr(policy, "warm", None)
    return f"{cfg.sampler}-{cfg.num_inference_steps}" + (f" + RTI K'={warm.cfg.start_t}" if warm is not None else "")


class PolicyServer:
    def __init__(self, policy, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 allow_remote: bool = False, max_message_bytes: int = P.MAX_MESSAGE_BYTES,
                 max_batch: int = 16, session_timeout_s: float = 60.0):
        check_bind(host, token, allow_remote)
        self.policy, self.token = policy, token
        self.max_message_bytes, self.max_batch = max_message_bytes, max_batch
        self.session_timeout_s = session_timeout_s
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        # a hard cap far above the checked limit: zmq drops the peer for anything larger
        self.sock.setsockopt(zmq.MAXMSGSIZE, 4 * max_message_bytes)
        if ":" in host:
            self.sock.setsockopt(zmq.IPV6, 1)
        addr = f"tcp://[{host}]" if ":" in host else f"tcp://{host}"
        if port == 0:
            self.port = self.sock.bind_to_random_port(addr)
        else:
            self.sock.bind(f"{addr}:{port}")
            self.port = port
        self.sessions: dict[int, float] = {}  # session id -> last seen (monotonic)
        self._next_session = 1
        self.stats = ServerStats()
        self.stop_event = threading.Event()
        self.meta = {"n_obs_steps": policy.n_obs_steps, "n_action_steps": policy.n_action_steps,
                     "horizon": policy.horizon, "action_dim": policy.cfg.action_dim,
                     "obs": {k: list(s) for k, s in policy.expected_obs().items()},
                     "image_keys": list(policy.cfg.image_keys), "describe": describe(policy)}

    # ------------------------------------------------------------------ loop
    def serve(self, poll_ms: int = 50) -> None:
        """Serve until ``stop_event`` is set (or Ctrl-C)."""
        try:
            last_expire = time.monotonic()
            while not self.stop_event.is_set():
                if time.monotonic() - last_expire > 1.0:
                    self._expire()
                    last_expire = time.monotonic()
                if not self.sock.poll(poll_ms):
                    continue
                batch: list[_Infer] = []
                while len(batch) < self.max_batch:
                    try:
                        frames = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    req = self._handle(frames)
                    if req is not None:
                        batch.append(req)
                if batch:
                    self._infer(batch)
        finally:
            self.close()

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()

    # ------------------------------------------------------------------ requests
    def _reply(self, ident: bytes, payload: bytes) -> None:
        self.sock.send_multipart([ident, payload])

    def _error(self, ident: bytes, e: P.ProtocolError, seq=None) -> None:
        self.stats.errors[e.code] += 1
        log.info("refused a request: %s", e)
        self._reply(ident, P.error(e.code, e.message, seq))

    def _handle(self, frames: list[bytes]) -> _Infer | None:
        self.stats.requests += 1
        ident = frames[0]
        seq = None
        try:
            if len(frames) != 2:
                raise P.ProtocolError("malformed", f"expected one message frame, got {len(frames) - 1}")
            msg = P.decode(frames[1], self.max_message_bytes)
            seq = msg.get("seq")
            if self.token is not None and not (isinstance(msg.get("token"), str)
                                               and hmac.compare_digest(msg["token"], self.token)):
                raise P.ProtocolError("unauthorized", "missing or wrong token")
            if msg["type"] == "hello":
                sid = self._next_session
                self._next_session += 1
                self.sessions[sid] = time.monotonic()
                self._reply(ident, P.encode({"type": "welcome", "session": sid, "policy": self.meta}))
                return None
            if msg["type"] == "infer":
                return self._parse_infer(ident, msg)
            raise P.ProtocolError("bad_request", f"unknown message type {msg['type']!r}")
        except P.ProtocolError as e:
            self._error(ident, e, seq)
            return None

    def _parse_infer(self, ident: bytes, msg: dict) -> _Infer:
        sid, seq, t_obs = msg.get("session"), msg.get("seq"), msg.get("t_obs")
        if not isinstance(seq, int) or not isinstance(t_obs, (int, float)) or not isinstance(msg.get("obs"), dict):
            raise P.ProtocolError("bad_request", "infer needs int 'seq', number 't_obs' and map 'obs'")
        if sid not in self.sessions:
            raise P.ProtocolError("unknown_session", f"session {sid!r} is not open here; say hello again")
        self.sessions[sid] = time.monotonic()
        obs = {str(k): P.unpack_array(v, f"obs[{k!r}]") for k, v in msg["obs"].items()}
        try:
            self.policy.validate_obs(obs)
        except ValueError as e:
            raise P.ProtocolError("bad_request", str(e)) from None
        if msg.get("reset"):
            self.policy.reset([sid])
        executed = msg.get("executed")
        if executed is not None:
            if not isinstance(executed, int) or executed < 0:
                raise P.ProtocolError("bad_request", "'executed' must be a non-negative int")
            self.policy.note_executed(min(executed, self.policy.horizon), [sid])
        return _Infer(ident, sid, seq, float(t_obs), obs, time.perf_counter())

    def _infer(self, batch: list[_Infer]) -> None:
        warm = getattr(self.policy, "warm", None)
        groups: dict[bool, list[_Infer]] = {}
        for r in batch:
            groups.setdefault(warm is not None and r.session in warm.prev, []).append(r)
        for reqs in groups.values():
            obs = {k: np.stack([r.obs[k] for r in reqs]) for k in self.policy.expected_obs()}
            try:
                actions = self.policy.predict_batch(obs, ids=[r.session for r in reqs])
            except Exception as e:  # a policy failure is the client's to handle (it holds), not a crash here
                log.exception("policy failed on a batch of %d", len(reqs))
                for r in reqs:
                    self._error(r.ident, P.ProtocolError("policy_error", f"{type(e).__name__}: {e}"), r.seq)
                continue
            self.stats.batches += 1
            self.stats.max_batch = max(self.stats.max_batch, len(reqs))
            now = time.perf_counter()
            for r, a in zip(reqs, actions):
                self.stats.chunks += 1
                self._reply(r.ident, P.encode({"type": "chunk", "seq": r.seq, "t_obs": r.t_obs,
                                               "actions": P.pack_array(a.astype(np.float32)),
                                               "server_ms": (now - r.t_recv) * 1000}))

    def _expire(self) -> None:
        now = time.monotonic()
        for sid, seen in list(self.sessions.items()):
            if now - seen > self.session_timeout_s:
                del self.sessions[sid]
                self.policy.reset([sid])
