"""``dpctrl serve`` (a checkpoint behind a policy server) and ``dpctrl robot`` (the fixed-rate
loop, safety filter and action queue on the robot side, inference over the socket).

The token comes from ``--token`` or the ``DPCTRL_TOKEN`` environment variable (better: it
does not show in the process list). Heavy imports stay inside the functions so that
``dpctrl --help`` stays fast.
"""
from __future__ import annotations

import os
import signal


def serve(checkpoint_name: str, host: str, port: int, token: str | None, allow_remote: bool,
          configure=None, max_message_bytes: int | None = None, ready=None, threads: int = 1) -> dict:
    from dpctrl.control.server import PolicyServer, check_bind
    from dpctrl.policy.onnx_policy import OnnxPolicy, is_export
    check_bind(host, token, allow_remote)  # before loading anything
    if is_export(checkpoint_name):  # ONNX Runtime only: this process never imports torch
        policy = OnnxPolicy(checkpoint_name, threads=threads)
    else:
        from dpctrl.policy.diffusion_policy import DiffusionPolicy
        policy = DiffusionPolicy.load(checkpoint_name)
        if configure is not None:
            configure(policy)
    kw = {"max_message_bytes": max_message_bytes} if max_message_bytes else {}
    server = PolicyServer(policy, host=host, port=port, token=token, allow_remote=allow_remote, **kw)
    signal.signal(signal.SIGTERM, lambda *_: server.stop_event.set())
    print(f"serving {checkpoint_name} on tcp://{host}:{server.port}" + (" (token required)" if token else ""),
          flush=True)
    if ready is not None:
        ready(server)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    s = server.stats
    return {"requests": s.requests, "chunks": s.chunks, "batches": s.batches, "max_batch": s.max_batch,
            "errors": dict(s.errors)}


def cmd_serve(args) -> int:
    from dpctrl.launch.options import apply_warm_start
    from dpctrl.policy.onnx_policy import is_export
    if is_export(args.checkpoint):
        if args.warm_start != "off" or args.cache != "off":
            raise ValueError(f"{args.checkpoint} is an exported policy: its warm start and cache were fixed at "
                             "export; drop --warm-start/--cache")
    else:
        import torch
        torch.set_num_threads(args.threads)
    token = args.token or os.environ.get("DPCTRL_TOKEN")
    stats = serve(args.checkpoint, args.host, args.port, token, args.allow_remote, threads=args.threads,
                  configure=lambda p: apply_warm_start(p, args), max_message_bytes=args.max_message_bytes)
    print(f"served {stats['chunks']} chunks in {stats['batches']} batches (largest {stats['max_batch']}); "
          f"refused: {stats['errors'] or 'none'}")
    return 0


def cmd_robot(args) -> int:
    from dpctrl.launch.options import compare_and_write
    token = args.token or os.environ.get("DPCTRL_TOKEN")
    from dpctrl.control.session import run_remote
    res = run_remote(args.server, token, args.robot, args.rate, args.episodes, args.seed_start, timeout_s=args.timeout,
                max_hold_s=args.max_hold_s, async_inference=not args.sync, replan_at=args.replan_at,
                max_cycles=args.max_cycles, status=not args.no_progress)
    rtt = res["round_trip_ms"]
    print(f"{args.robot} via {args.server}: success {res['success_rate']:.3f} over {res['episodes']} episodes at "
          f"{res['rate_hz']:g} Hz; {res['deadline_misses']} deadline misses in {res['cycles']} cycles "
          f"({100 * res['deadline_miss_rate']:.2f}%); round trip p50 {rtt['p50']:.1f} ms, p99 {rtt['p99']:.1f} ms; "
          f"{res['failed_requests']} failed requests, {res['reconnects']} reconnects")
    compare_and_write(res, args)
    return 0


def add_parser(sub) -> None:
    from dpctrl.launch.options import add_warm_start_args
    s = sub.add_parser("serve", help="serve a checkpoint to robot processes (ZeroMQ + msgpack)")
    s.add_argument("--checkpoint", required=True, help="checkpoint directory or shipped name")
    s.add_argument("--host", default="127.0.0.1", help="bind address (loopback unless --allow-remote)")
    s.add_argument("--port", type=int, default=5555)
    s.add_argument("--token", help="shared secret every request must carry (default: $DPCTRL_TOKEN)")
    s.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address (needs a token)")
    s.add_argument("--max-message-bytes", type=int, help="largest accepted request (default 8 MiB)")
    s.add_argument("--threads", type=int, default=2)
    add_warm_start_args(s)
    s.set_defaults(func=cmd_serve)

    r = sub.add_parser("robot", help="run a robot's fixed-rate loop against a policy server")
    r.add_argument("--server", default="127.0.0.1:5555", help="HOST:PORT of `dpctrl serve`")
    r.add_argument("--token", help="the server's token (default: $DPCTRL_TOKEN)")
    r.add_argument("--robot", default="sim:lift", help="sim:<env>, or mock (an arm stand-in with the policy's shapes)")
    r.add_argument("--rate", type=float, default=20.0, help="loop rate in Hz")
    r.add_argument("--episodes", type=int, default=10)
    r.add_argument("--seed-start", type=int, default=100_000)
    r.add_argument("--max-cycles", type=int, help="stop each episode after this many cycles (mock robots)")
    r.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for a reply before backing off")
    r.add_argument("--max-hold-s", type=float, default=10.0, help="seconds of holding before the episode stops")
    r.add_argument("--sync", action="store_true", help="block the loop on each request (default: async worker)")
    r.add_argument("--replan-at", type=int, help="request the next chunk when this many actions are left (default: one request every Ta cycles)")
    r.add_argument("--compare-eval", metavar="JSON", help="a `dpctrl eval` report on the same seeds")
    r.add_argument("--json", help="write stats here")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=cmd_robot)
