"""The wire format between a robot process and a policy server: msgpack maps over ZeroMQ.

Why ZeroMQ + msgpack: ZeroMQ gives message framing, reconnection and many clients on one
ROUTER socket with no framing code of ours and no code generation step (gRPC would need
one); msgpack carries numpy arrays as raw bytes with an explicit dtype and shape, so nothing
is ever unpickled. Every message is a map with ``v`` (protocol version) and ``type``:

- ``hello`` {token?, name?} -> ``welcome`` {session, policy: {n_obs_steps, n_action_steps,
  horizon, action_dim, obs: {key: shape}, describe}}
- ``infer`` {token?, session, seq, t_obs, obs: {key: array}, executed?, reset?} ->
  ``chunk`` {seq, t_obs, actions: array, server_ms}
- any request -> ``error`` {code, message, seq?}; codes in ``ERROR_CODES``.

An array is {dtype, shape, data: bytes}; only the dtypes in ``DTYPES`` are accepted.
"""
from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
DTYPES = ("float32", "float64", "uint8", "int32", "int64", "bool")
ERROR_CODES = ("malformed", "too_large", "bad_version", "unauthorized", "bad_request", "unknown_session",
               "policy_error")


class ProtocolError(ValueError):
    def __init__(self, code: str, message: str):
        assert code in ERROR_CODES, code
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def pack_array(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    if a.dtype.name not in DTYPES:
        raise ProtocolError("bad_request", f"dtype {a.dtype} cannot be sent; allowed: {DTYPES}")
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": a.tobytes()}


def unpack_array(d: Any, what: str) -> np.ndarray:
    if not isinstance(d, dict) or set(d) != {"dtype", "shape", "data"}:
        raise ProtocolError("bad_request", f"{what} must be an array map {{dtype, shape, data}}")
    dtype, shape, data = d["dtype"], d["shape"], d["data"]
    if dtype not in DTYPES:
        raise ProtocolError("bad_request", f"{what}: dtype {dtype!r} not allowed; allowed: {DTYPES}")
    if (not isinstance(shape, list) or len(shape) > 8
            or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n for n in shape)):
        raise ProtocolError("bad_request", f"{what}: shape must be a list of at most 8 non-negative ints")
    if not isinstance(data, bytes) or len(data) != math.prod(shape) * np.dtype(dtype).itemsize:
        raise ProtocolError("bad_request", f"{what}: {len(data) if isinstance(data, bytes) else 'no'} bytes "
                                           f"do not match dtype {dtype} and shape {shape}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def encode(msg: dict) -> bytes:
    return msgpack.packb({"v": PROTOCOL_VERSION, **msg}, use_bin_type=True)


def decode(raw: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> dict:
    """Bytes -> message map, checked for size, msgpack validity, shape of the envelope and version."""
    if len(raw) > max_bytes:
        raise ProtocolError("too_large", f"message of {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        msg = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise ProtocolError("malformed", f"not a msgpack message ({type(e).__name__})") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("malformed", "a message is a map with a string 'type'")
    if msg.get("v") != PROTOCOL_VERSION:
        raise ProtocolError("bad_version", f"protocol version {msg.get('v')!r}; this side speaks {PROTOCOL_VERSION}")
    return msg


def error(code: str, message: str, seq: Any = None) -> bytes:
    return encode({"type": "error", "code": code, "message": message,
                   **({"seq": seq} if isinstance(seq, int) else {})})
