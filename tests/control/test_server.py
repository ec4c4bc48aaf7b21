"""Policy server and robot client over real ZeroMQ sockets on loopback."""
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpctrl.control import protocol as P
from dpctrl.control.client import RemoteError, RemotePolicy
from dpctrl.control.loop import ControlLoop, LoopConfig
from dpctrl.control.robot import MockArm
from dpctrl.control.safety import SafetyFilter
from dpctrl.control.server import PolicyServer
from dpctrl.policy.accel.warmstart import WarmStartConfig
from tests.policy.helpers import OBS_DIMS, obs_window, tiny_policy


class Running:
    """A PolicyServer serving in a thread; ``stop()`` shuts it down (as a killed server would)."""

    def __init__(self, policy, **kw):
        self.server = PolicyServer(policy, **kw)
        self.port = self.server.port
        self.thread = threading.Thread(target=self.server.serve, kwargs={"poll_ms": 10}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.stop_event.set()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def served():
    running = []

    def start(policy=None, **kw):
        r = Running(policy or tiny_policy(seed=1), **kw)
        running.append(r)
        return r

    yield start
    for r in running:
        if r.thread.is_alive():
            r.stop()


def raw_socket(port):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://127.0.0.1:{port}")
    return s


def ask(sock, payload: bytes, timeout_ms: int = 3000) -> dict:
    sock.send(payload)
    assert sock.poll(timeout_ms), "the server did not answer"
    return msgpack.unpackb(sock.recv(), raw=False)


def test_remote_chunks_equal_local_ones(served):
    srv = served(tiny_policy(seed=1).eval())
    local = tiny_policy(seed=1).eval()
    remote = RemotePolicy(f"127.0.0.1:{srv.port}")
    meta = remote.connect()
    assert meta["n_obs_steps"] == 2 and meta["obs"] == {k: [2, d] for k, d in OBS_DIMS.items()}
    for i in range(3):
        np.testing.assert_allclose(remote.predict_chunk(obs_window(i)), local.predict_chunk(obs_window(i)), atol=1e-6)
    assert len(remote.rtt_ms) == 3 and remote.failures == 0
    remote.close()


def test_bad_messages_get_clear_errors_and_the_server_keeps_serving(served):
    srv = served(tiny_policy(seed=1), token="s3cret", max_message_bytes=64 * 1024)
    good = RemotePolicy(f"127.0.0.1:{srv.port}", token="s3cret")
    good.connect()
    sock = raw_socket(srv.port)
    cases = {
        "malformed": b"\xc1\xc1 not msgpack",
        "too_large": P.encode({"type": "hello", "token": "s3cret", "pad": b"x" * 70_000}),
        "bad_version": msgpack.packb({"v": 99, "type": "hello", "token": "s3cret"}),
        "unauthorized": P.encode({"type": "hello", "token": "wrong"}),
    }
    for code, payload in cases.items():
        reply = ask(sock, payload)
        assert reply["type"] == "error" and reply["code"] == code, (code, reply)
        assert reply["message"]
        assert good.predict_chunk(obs_window(0)).shape == (8, 2)  # others are still served
    hello = ask(sock, P.encode({"type": "hello", "token": "s3cret"}))
    bad_obs = {k: P.pack_array(np.zeros((2, d + 1), np.float32)) for k, d in OBS_DIMS.items()}
    reply = ask(sock, P.encode({"type": "infer", "token": "s3cret", "session": hello["session"], "seq": 1,
                                "t_obs": 0.0, "obs": bad_obs}))
    assert reply["code"] == "bad_request" and "expected shape" in reply["message"] and reply["seq"] == 1
    nan_obs = {k: P.pack_array(np.full((2, d), np.nan, np.float32)) for k, d in OBS_DIMS.items()}
    reply = ask(sock, P.encode({"type": "infer", "token": "s3cret", "session": hello["session"], "seq": 2,
                                "t_obs": 0.0, "obs": nan_obs}))
    assert reply["code"] == "bad_request"
    with pytest.raises(RemoteError, match="unauthorized"):
        RemotePolicy(f"127.0.0.1:{srv.port}", token="nope").connect()
    assert srv.server.stats.errors["too_large"] == 1 and srv.server.stats.errors["unauthorized"] == 2
    good.close()


@pytest.fixture(scope="module")
def fuzz_server():
    r = Running(tiny_policy(seed=1, num_inference_steps=4, sampler="ddim"))
    probe = RemotePolicy(f"127.0.0.1:{r.port}")
    yield r, probe
    probe.close()
    r.stop()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.one_of(st.binary(max_size=512),
                      st.dictionaries(st.text(max_size=8), st.one_of(st.integers(-2 ** 63, 2 ** 63 - 1), st.text(max_size=8),
                                                                     st.binary(max_size=16)), max_size=6)
                      .map(lambda d: msgpack.packb({"v": 1, "type": "infer", **d}))))
def test_fuzzed_requests_never_break_the_server(fuzz_server, junk):
    srv, probe = fuzz_server
    sock = raw_socket(srv.port)
    reply = ask(sock, junk)
    assert reply["type"] == "error" and reply["code"] in P.ERROR_CODES
    sock.close(0)
    assert probe.predict_chunk(obs_window(0)).shape == (8, 2)  # still serving


def test_sessions_keep_their_own_warm_start_state(served):
    policy = tiny_policy(seed=1)
    policy.set_warm_start(WarmStartConfig(start_t=20))
    srv = served(policy)
    a, b = RemotePolicy(f"127.0.0.1:{srv.port}"), RemotePolicy(f"127.0.0.1:{srv.port}")
    a.predict_chunk(obs_window(0))
    b.predict_chunk(obs_window(1))
    assert set(policy.warm.prev) == {a.session, b.session}
    a.reset()
    a.note_executed(2)
    a.predict_chunk(obs_window(2))  # a cold start for a; b's memory untouched
    assert set(policy.warm.prev) == {a.session, b.session}
    a.close(), b.close()


def test_binding_beyond_loopback_needs_a_flag_and_a_token():
    with pytest.raises(ValueError, match="allow-remote"):
        PolicyServer(tiny_policy(), host="0.0.0.0")
    with pytest.raises(ValueError, match="token"):
        PolicyServer(tiny_policy(), host="0.0.0.0", allow_remote=True)


def test_client_holds_while_the_server_is_away_then_reconnects(served):
    srv = served(tiny_policy(seed=1))
    port = srv.port
    remote = RemotePolicy(f"127.0.0.1:{port}", timeout_s=0.5, backoff_s=(0.05, 0.2))
    meta = remote.connect()
    arm = MockArm(action_dim=2, obs_shapes={k: tuple(s[1:]) for k, s in meta["obs"].items()})
    safety = SafetyFilter(low=arm.action_space.low, high=arm.action_space.high, safe_action=np.zeros(2, np.float32),
                          max_hold_cycles=10_000)
    loop = ControlLoop(arm, remote.predict_chunk, 2, 1, 4, LoopConfig(rate_hz=50.0, async_inference=True),
                       safety, note_executed=remote.note_executed)
    restarted = threading.Event()
    answered_before_restart = []

    def chaos():
        time.sleep(0.5)
        srv.stop()  # killed mid-episode
        time.sleep(0.6)
        answered_before_restart.append(len(remote.rtt_ms))
        served(tiny_policy(seed=1), port=port)  # back on the same port
        restarted.set()

    t = threading.Thread(target=chaos)
    t.start()
    with arm:
        rep = loop.run_episode(max_cycles=200)  # 4 s at 50 Hz
    t.join()
    loop.close()
    assert restarted.is_set() and rep.stopped == "max_cycles"
    assert rep.policy_errors >= 1 and rep.safety["holds"] >= 1  # it held while the server was away
    # ...and continued with the new server (more than one handshake if the loaded machine is slow to answer)
    assert remote.reconnects >= 1 and len(remote.rtt_ms) > answered_before_restart[0]
    remote.close()
