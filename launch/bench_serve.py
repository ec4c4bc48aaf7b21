"""Load test of the policy server: N robot processes at a fixed rate against one server.

    python -m launch.bench_serve --clients 8 --rate 20 --seconds 60 --json runs/bench_serve.json

Starts ``dpctl serve`` (loopback, a random free port) and N ``dpctl robot --robot mock``
processes (an arm stand-in with the policy's observation shapes: the load is the real
policy on real sockets, with no simulator competing for the CPU), then reports each
client's deadline-miss rate and round trip, and the server's resident memory over the run
(sampled every second from /proc; "start" is after the first chunk of every client).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def bench_serve(checkpoint: str, clients: int, rate_hz: float, seconds: float, server_args: list[str],
                threads: int = 1) -> dict:
    port = free_port()
    env = {**os.environ, "DPCTL_TOKEN": "bench-token"}
    server = subprocess.Popen([sys.executable, "-m", "launch.cli", "serve", "--checkpoint", checkpoint, "--port",
                               str(port), "--threads", str(threads), *server_args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()  # "serving ... on tcp://..." once it listens
        if "serving" not in line:
            raise RuntimeError(f"server did not start: {line}{server.stdout.read()}")
        cycles = int(seconds * rate_hz)
        with tempfile.TemporaryDirectory() as tmp:
            procs = [subprocess.Popen([sys.executable, "-m", "launch.cli", "robot", "--server", f"127.0.0.1:{port}",
                                       "--robot", "mock", "--rate", str(rate_hz), "--episodes", "1",
                                       "--max-cycles", str(cycles), "--no-progress", "--json", f"{tmp}/c{i}.json"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                     for i in range(clients)]
            samples = []
            while any(p.poll() is None for p in procs):
                samples.append((time.monotonic(), rss_mb(server.pid)))
                time.sleep(1.0)
            errs = [p.stderr.read() for p in procs if p.returncode != 0]
            if errs:
                raise RuntimeError(f"{len(errs)} clients failed: {errs[0][-2000:]}")
            reports = [json.loads(Path(f"{tmp}/c{i}.json").read_text()) for i in range(clients)]
    finally:
        server.terminate()
        server.wait(10)
    start_rss = samples[min(5, len(samples) - 1)][1]  # after start-up: every client has connected
    rows = [{"client": i, "cycles": r["cycles"], "deadline_misses": r["deadline_misses"],
             "deadline_miss_rate": r["deadline_miss_rate"], "round_trip_ms": r["round_trip_ms"],
             "server_ms": r["server_ms"], "requests": r["requests"], "failed_requests": r["failed_requests"],
             "jitter_ms": r["period_jitter_ms"]} for i, r in enumerate(reports)]
    return {"checkpoint": checkpoint, "clients": clients, "rate_hz": rate_hz, "seconds": seconds,
            "server_args": server_args, "worst_miss_rate": max(r["deadline_miss_rate"] for r in rows),
            "server_rss_mb": {"start": start_rss, "end": samples[-1][1], "max": max(s for _, s in samples)},
            "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="lift")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1, help="server torch threads")
    ap.add_argument("--server-args", default="--warm-start rti", help="extra `dpctl serve` arguments")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    res = bench_serve(args.checkpoint, args.clients, args.rate, args.seconds, args.server_args.split(), args.threads)
    res["command"] = (f"python -m launch.bench_serve --checkpoint {args.checkpoint} --clients {args.clients} "
                      f"--rate {args.rate:g} --seconds {args.seconds:g} --threads {args.threads} "
                      f"--server-args '{args.server_args}'")
    for r in res["rows"]:
        print(f"client {r['client']}: {r['deadline_misses']}/{r['cycles']} deadline misses "
              f"({100 * r['deadline_miss_rate']:.2f}%), round trip p50 {r['round_trip_ms']['p50']:.1f} ms "
              f"p99 {r['round_trip_ms']['p99']:.1f} ms, {r['failed_requests']} failed requests")
    m = res["server_rss_mb"]
    print(f"worst client miss rate {100 * res['worst_miss_rate']:.2f}%; server RSS {m['start']:.0f} MB -> "
          f"{m['end']:.0f} MB (max {m['max']:.0f} MB)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
