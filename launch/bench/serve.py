"""Load test of the policy server: N robot processes at a fixed rate against one server;
and (``--lift-episodes N``) Lift closed loop through the server vs in-process, same seeds.

    python -m dpctrl.launch.bench.serve --clients 8 --rate 20 --seconds 60 --lift-episodes 50 \
        --json runs/bench_serve.json --update-docs

Starts ``dpctrl serve`` (loopback, a random free port) and N ``dpctrl robot --robot mock``
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

from dpctrl.launch.results import add_update_docs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Server:
    """``dpctrl serve`` in a subprocess on a free loopback port (token from the environment)."""

    def __init__(self, checkpoint: str, server_args: list[str], threads: int, env: dict):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "dpctrl.launch.cli", "serve", "--checkpoint", checkpoint,
                                      "--port", str(self.port), "--threads", str(threads), *server_args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()  # "serving ... on tcp://..." once it listens
        if "serving" not in line:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line}{self.proc.stdout.read()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _cli(args: list[str], env: dict) -> None:
    res = subprocess.run([sys.executable, "-m", "dpctrl.launch.cli", *args], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"dpctrl {' '.join(args)} failed:\n{res.stderr[-3000:]}")


def lift_loopback(checkpoint: str, episodes: int, rate_hz: float, server_args: list[str], threads: int,
                  replan: list[str], seed_start: int = 100_000) -> dict:
    """The same Lift seeds in process (`dpctrl run`) and through the server (`dpctrl robot`), one after the other."""
    env = {**os.environ, "DPCTRL_TOKEN": "bench-token"}
    common = ["--robot", "sim:lift", "--rate", str(rate_hz), "--episodes", str(episodes), "--seed-start",
              str(seed_start), "--no-progress"]
    with tempfile.TemporaryDirectory() as tmp:
        _cli(["run", "--checkpoint", checkpoint, "--async", "--threads", str(threads), *server_args, *replan, *common,
              "--json", f"{tmp}/local.json"], env)
        server = Server(checkpoint, server_args, threads, env)
        try:
            _cli(["robot", "--server", f"127.0.0.1:{server.port}", *replan, *common, "--compare-eval",
                  f"{tmp}/local.json", "--json", f"{tmp}/remote.json"], env)
        finally:
            server.stop()
        local = json.loads(Path(f"{tmp}/local.json").read_text())
        remote = json.loads(Path(f"{tmp}/remote.json").read_text())
    return {"episodes": episodes, "seed_start": seed_start, "in_process_success": local["success_rate"],
            "server_success": remote["success_rate"], "difference_points": remote["vs_eval"]["difference_points"],
            "round_trip_ms": remote["round_trip_ms"], "server_ms": remote["server_ms"],
            "deadline_misses": {"in_process": local["deadline_misses"], "server": remote["deadline_misses"]},
            "cycles": {"in_process": local["cycles"], "server": remote["cycles"]}}


def bench_serve(checkpoint: str, clients: int, rate_hz: float, seconds: float, server_args: list[str],
                threads: int = 1, replan: list[str] | None = None) -> dict:
    env = {**os.environ, "DPCTRL_TOKEN": "bench-token"}
    replan = replan or []
    server = Server(checkpoint, server_args, threads, env)
    port = server.port
    try:
        cycles = int(seconds * rate_hz)
        with tempfile.TemporaryDirectory() as tmp:
            procs = [subprocess.Popen([sys.executable, "-m", "dpctrl.launch.cli", "robot", "--server", f"127.0.0.1:{port}",
                                       "--robot", "mock", "--rate", str(rate_hz), "--episodes", "1",
                                       "--max-cycles", str(cycles), *replan, "--no-progress", "--json",
                                       f"{tmp}/c{i}.json"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                     for i in range(clients)]
            samples = []
            while any(p.poll() is None for p in procs):
                samples.append((time.monotonic(), rss_mb(server.proc.pid)))
                time.sleep(1.0)
            errs = [p.stderr.read() for p in procs if p.returncode != 0]
            if errs:
                raise RuntimeError(f"{len(errs)} clients failed: {errs[0][-2000:]}")
            reports = [json.loads(Path(f"{tmp}/c{i}.json").read_text()) for i in range(clients)]
    finally:
        server.stop()
    start_rss = samples[min(5, len(samples) - 1)][1]  # after start-up: every client has connected
    rows = [{"client": i, "cycles": r["cycles"], "deadline_misses": r["deadline_misses"],
             "deadline_miss_rate": r["deadline_miss_rate"], "round_trip_ms": r["round_trip_ms"],
             "server_ms": r["server_ms"], "requests": r["requests"], "failed_requests": r["failed_requests"],
             "jitter_ms": r["period_jitter_ms"]} for i, r in enumerate(reports)]
    return {"checkpoint": checkpoint, "clients": clients, "rate_hz": rate_hz, "seconds": seconds,
            "server_args": server_args, "worst_miss_rate": max(r["deadline_miss_rate"] for r in rows),
            "server_rss_mb": {"start": start_rss, "end": samples[-1][1], "max": max(s for _, s in samples),
                              "every_10_s": [round(s, 1) for _, s in samples[::10]]},
            "rows": rows}


def table(res: dict, machine: str) -> str:
    from dpctrl.launch.results import markdown_table
    rows = [[r["client"], f"{r['deadline_misses']}/{r['cycles']}", f"{100 * r['deadline_miss_rate']:.2f}%",
             f"{r['round_trip_ms']['p50']:.1f}", f"{r['round_trip_ms']['p99']:.1f}", r["failed_requests"]]
            for r in res["rows"]]
    m = res["server_rss_mb"]
    out = (f"Command: `{res['command']}` — machine: {machine}.\n\n"
           f"Load: {res['clients']} `dpctrl robot --robot mock` processes at {res['rate_hz']:g} Hz for "
           f"{res['seconds']:g} s against one server; server RSS {m['start']:.0f} MB after start-up, "
           f"{m['end']:.0f} MB at the end (max {m['max']:.0f} MB).\n\n"
           + markdown_table(["client", "deadline misses", "miss rate", "round trip p50 (ms)", "p99 (ms)",
                             "failed requests"], rows))
    lift = res.get("lift")
    if lift:
        out += (f"\n\nLift closed loop, the same {lift['episodes']} seeds from {lift['seed_start']}: in process "
                f"(`dpctrl run`) {lift['in_process_success']:.3f}, through the server (`dpctrl robot`) "
                f"{lift['server_success']:.3f} ({lift['difference_points']:+.1f} points); round trip p50 "
                f"{lift['round_trip_ms']['p50']:.1f} ms, p99 {lift['round_trip_ms']['p99']:.1f} ms; deadline "
                f"misses {lift['deadline_misses']['in_process']}/{lift['cycles']['in_process']} in process, "
                f"{lift['deadline_misses']['server']}/{lift['cycles']['server']} through the server.")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="lift")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1, help="server (and in-process) torch threads")
    ap.add_argument("--server-args", default="--warm-start rti", help="extra `dpctrl serve` arguments")
    ap.add_argument("--replan-at", type=int, help="clients request the next chunk with this many actions left")
    ap.add_argument("--lift-episodes", type=int, default=0, help="also Lift via the server vs in process")
    ap.add_argument("--json")
    add_update_docs(ap, "server")
    args = ap.parse_args(argv)
    from dpctrl.launch.results import check_block, machine, replace_block
    if args.update_docs:
        check_block(args.update_docs, "serve")
    replan = ["--replan-at", str(args.replan_at)] if args.replan_at else []
    server_args = args.server_args.split()
    res = bench_serve(args.checkpoint, args.clients, args.rate, args.seconds, server_args, args.threads, replan)
    if args.lift_episodes:
        res["lift"] = lift_loopback(args.checkpoint, args.lift_episodes, args.rate, server_args, args.threads, replan)
    res["command"] = (f"python -m dpctrl.launch.bench.serve --checkpoint {args.checkpoint} --clients {args.clients} "
                      f"--rate {args.rate:g} --seconds {args.seconds:g} --threads {args.threads} "
                      f"--server-args '{args.server_args}'" + (f" --replan-at {args.replan_at}" if replan else "")
                      + (f" --lift-episodes {args.lift_episodes}" if args.lift_episodes else ""))
    text = table(res, machine())
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    if args.update_docs:
        replace_block(args.update_docs, "serve", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
