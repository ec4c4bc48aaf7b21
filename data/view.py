"""Episodes on Rerun's timelines: an episode store (``dpctrl view STORE``) and the live control
loop (``dpctrl run --rerun F.rrd``), logged the same way, into a ``.rrd`` file or a viewer.

Entities, per episode (``episode_<index>`` for a store, ``episode_seed<seed>`` for a live run)::

    meta                  the episode's metadata (seed, success, deadline misses, ...) as text
    obs/<key>             low-dim observations as scalar series; camera frames as images
    action                the demonstrated or sent action, one series per dimension
    loop/held             1 where the loop held (no action due: a deadline miss)
    loop/queue            actions queued after the cycle
    loop/chunk_latency_ms each chunk's latency, at the cycle it arrived
    loop/chunk            each chunk as a trajectory at the cycle it arrived: one line per
                          action dimension, x = the cycle each action is due (from the cycle
                          of the chunk's observation, ``chunk_delay`` cycles before its
                          arrival), y = its value

Every entity is on the ``step`` timeline (index within the episode); a loop record also has
``time`` (seconds since the episode's clock started). The ``loop/*`` entities come from a
``--record`` store of the loop or a live run; a demonstration store has none.

``read_rrd`` reads a recording back with Rerun's own chunk reader (what the tests and the
docs' plots use). Needs the ``viz`` extra: ``pip install 'dpctrl[viz]'``.
"""
from __future__ import annotations

import json
import queue
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

APP = "dpctrl"
VIZ_EXTRA = "pip install 'dpctrl[viz]'"
LOOP_KEYS = ("t", "held", "queue", "chunk", "chunk_arrived", "chunk_latency_ms", "chunk_delay")


def _rerun():
    try:
        import rerun as rr
    except ImportError as err:
        raise ImportError(f"Rerun recordings need the rerun SDK: {VIZ_EXTRA}") from err
    return rr


def open_recording(out: str | Path | None = None, spawn: bool = False):
    """A Rerun recording stream saving to ``out`` (a new ``.rrd``) and/or shown in a spawned viewer."""
    rr = _rerun()
    if out is None and not spawn:
        raise ValueError("nowhere to record: give an output .rrd file, or spawn a viewer")
    rec = rr.RecordingStream(APP)
    if out is not None:
        out = Path(out)
        if out.suffix != ".rrd":
            raise ValueError(f"{out}: a Rerun recording is a .rrd file")
        out.parent.mkdir(parents=True, exist_ok=True)
        rec.save(str(out))
    if spawn:
        import os
        import shutil
        if not shutil.which("rerun"):
            raise RuntimeError(f"no Rerun viewer on PATH ({VIZ_EXTRA} installs one)")
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise RuntimeError("no display for a viewer here: write --out F.rrd and open it with `rerun F.rrd` "
                               "where there is one")
        rec.spawn(connect=out is None)
    return rec


def log_episode(rec, prefix: str, data: Mapping[str, np.ndarray], meta: Mapping | None = None) -> int:
    """Log one episode's per-step arrays (``{key: (L, ...)}``) under ``prefix``; returns L."""
    rr = _rerun()
    length = len(data["action"])
    steps = np.arange(length)
    index = [rr.TimeColumn("step", sequence=steps)]
    if "t" in data:
        index.append(rr.TimeColumn("time", duration=np.asarray(data["t"], dtype=np.float64)))
    rec.log(f"{prefix}/meta", rr.TextDocument(json.dumps(dict(meta or {}), indent=1, default=str)), static=True)
    for key, values in data.items():
        values = np.asarray(values)
        if key in LOOP_KEYS:
            continue
        if values.ndim == 4 and values.dtype == np.uint8:  # camera frames (L, H, W, C)
            for i, frame in enumerate(values):
                rec.set_time("step", sequence=i)
                rec.log(f"{prefix}/obs/{key}", rr.Image(frame))
            continue
        series = values.reshape(length, -1).astype(np.float64)
        path = f"{prefix}/action" if key == "action" else f"{prefix}/obs/{key}"
        rec.send_columns(path, indexes=index, columns=rr.Scalars.columns(scalars=series))
    if "held" in data:
        rec.send_columns(f"{prefix}/loop/held", indexes=index,
                         columns=rr.Scalars.columns(scalars=np.asarray(data["held"], np.float64)))
    if "queue" in data:
        rec.send_columns(f"{prefix}/loop/queue", indexes=index,
                         columns=rr.Scalars.columns(scalars=np.asarray(data["queue"], np.float64)))
    if "chunk_arrived" in data:
        for i in np.flatnonzero(data["chunk_arrived"]):
            log_chunk(rec, prefix, int(i), np.asarray(data["chunk"][i]), float(data["chunk_latency_ms"][i]),
                      float(data["t"][i]) if "t" in data else None, int(data["chunk_delay"][i]) if "chunk_delay" in data
                      else 0)
    return length


def log_chunk(rec, prefix: str, step: int, chunk: np.ndarray, latency_ms: float, t: float | None = None,
              delay: int = 0) -> None:
    """One chunk (n, A) that arrived at ``step``, ``delay`` cycles after its observation: its
    latency and its actions as A lines over the cycles they are due."""
    rr = _rerun()
    rec.set_time("step", sequence=step)
    if t is not None:
        rec.set_time("time", duration=t)
    x = step - delay + np.arange(len(chunk), dtype=np.float64)
    strips = [np.stack([x, chunk[:, d].astype(np.float64)], axis=1) for d in range(chunk.shape[1])]
    rec.log(f"{prefix}/loop/chunk", rr.LineStrips2D(strips, labels=[f"a{d}" for d in range(chunk.shape[1])]))
    rec.log(f"{prefix}/loop/chunk_latency_ms", rr.Scalars(latency_ms))


def check_episodes(n_episodes: int, episodes: list[int] | None, path) -> list[int]:
    """The episode indices to show (all by default), each within the store's range."""
    if n_episodes == 0:
        raise ValueError(f"{path} holds no episodes")
    episodes = list(range(n_episodes)) if episodes is None else list(episodes)
    bad = [i for i in episodes if not 0 <= i < n_episodes]
    if bad:
        raise ValueError(f"episode {bad[0]} is out of range: {path} holds episodes 0..{n_episodes - 1}")
    return episodes


def view_store(path: str | Path, episodes: list[int] | None = None, out: str | Path | None = None,
               spawn: bool = False) -> dict:
    """Log episodes of the store at ``path`` (all by default) to ``out`` and/or a viewer."""
    from dpctrl.data.replay_buffer import ReplayBuffer
    if not Path(path).exists():
        raise FileNotFoundError(f"no episode store at {path}")
    try:
        rb = ReplayBuffer.open(path)
    except Exception as err:  # zarr's own errors for a folder that is no zarr group
        raise ValueError(f"{path} is not an episode store ({err})") from None
    episodes = check_episodes(rb.n_episodes, episodes, path)
    rec = open_recording(out, spawn)
    steps = 0
    for i in episodes:
        steps += log_episode(rec, f"episode_{i}", rb.episode(i), {"episode": i, **rb.episode_meta(i)})
    rec.flush()
    rec.disconnect()
    return {"store": str(path), "episodes": episodes, "steps": steps, "out": str(out) if out else None,
            "loop_record": "held" in rb.keys()}


class LiveRecording:
    """The control loop's recorder (``on_cycle`` and ``on_episode_end`` callbacks): the loop
    thread only puts each cycle's row in a queue; a background thread logs it, so recording
    never waits on Rerun inside a control period. ``close()`` logs what is left and flushes."""

    def __init__(self, out: str | Path | None = None, spawn: bool = False):
        self.rec = open_recording(out, spawn)
        # the stream's first log call initializes it (0.25-0.4 s here, holding the GIL): done now,
        # before the loop's clock starts, not on the first cycle
        self.rec.log("info", _rerun().TextDocument("dpctrl run: the control loop, recorded live"), static=True)
        self.out = out
        self.rows: queue.SimpleQueue = queue.SimpleQueue()
        self.logged = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._drain, name="dpctrl-rerun", daemon=True)
        self.thread.start()

    def on_cycle(self, seed, step: int, row: dict) -> None:
        self.rows.put(("cycle", seed, step, row))

    def on_episode_end(self, record: dict, report) -> None:
        self.rows.put(("end", report.seed, len(record["action"]), {
            "seed": report.seed, "success": report.success, "cycles": report.cycles, "stopped": report.stopped,
            "deadline_misses": report.deadline_misses, "chunks": report.chunks}))

    def _drain(self) -> None:
        rr = _rerun()
        while True:
            item = self.rows.get()
            if item is None:
                return
            try:
                kind, seed, step, row = item
                prefix = f"episode_seed{seed}"
                if kind == "end":
                    self.rec.log(f"{prefix}/meta", rr.TextDocument(json.dumps(row, indent=1)), static=True)
                    continue
                self.rec.set_time("step", sequence=step)
                self.rec.set_time("time", duration=float(row["t"]))
                self.rec.log(f"{prefix}/action", rr.Scalars(np.asarray(row["action"], np.float64)))
                for key, value in row.items():
                    value = np.asarray(value)
                    if key in LOOP_KEYS or key == "action":
                        continue
                    if value.ndim == 3 and value.dtype == np.uint8:
                        self.rec.log(f"{prefix}/obs/{key}", rr.Image(value))
                    else:
                        self.rec.log(f"{prefix}/obs/{key}", rr.Scalars(value.reshape(-1).astype(np.float64)))
                self.rec.log(f"{prefix}/loop/held", rr.Scalars(float(row["held"])))
                self.rec.log(f"{prefix}/loop/queue", rr.Scalars(float(row["queue"])))
                if row["chunk_arrived"]:
                    log_chunk(self.rec, prefix, step, np.asarray(row["chunk"]), float(row["chunk_latency_ms"]),
                              float(row["t"]), int(row.get("chunk_delay", 0)))
                self.logged += 1
            except BaseException as err:  # reported by close(); the loop itself never waits on this thread
                self.error = err
                return

    def close(self) -> None:
        self.rows.put(None)
        self.thread.join()
        self.rec.flush()
        self.rec.disconnect()
        if self.error is not None:
            raise RuntimeError(f"the Rerun recording failed: {self.error}") from self.error


def read_rrd(path: str | Path) -> dict[str, dict[str, list]]:
    """A recording's contents as ``{entity path: {column: rows}}`` (Rerun's chunk reader; the
    rows of every chunk of an entity concatenated; a component's row is its list of instances,
    e.g. one scalar per series, one strip per action dimension)."""
    _rerun()
    from rerun.chunk import RrdReader
    out: dict[str, dict[str, list]] = {}
    for chunk in RrdReader(str(path)).stream():
        table = chunk.to_record_batch().to_pydict()
        cols = out.setdefault(chunk.entity_path, {})
        for name, values in table.items():
            cols.setdefault(name, []).extend(values)
    return out


def plot_recording(rrd: str | Path, out_png: str | Path, prefix: str | None = None, dims: int = 3) -> dict:
    """A picture of one episode read back from a recording (the first, or ``prefix``): the first
    ``dims`` action dimensions as sent, each chunk's actions from the cycle it arrived (thin
    lines), held cycles shaded; below, the queue depth and each chunk's latency."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    got = read_rrd(rrd)
    episodes = sorted({k.split("/")[1] for k in got if k.endswith("/action")})
    if not episodes:
        raise ValueError(f"{rrd} holds no episode with actions")
    prefix = prefix or episodes[0]
    if f"/{prefix}/action" not in got:
        raise ValueError(f"{rrd} has no episode {prefix!r}; it has {', '.join(episodes)}")
    ent = lambda name: got.get(f"/{prefix}/{name}", {})  # noqa: E731
    action = np.array(ent("action")["Scalars:scalars"], dtype=np.float64)
    steps = np.array(ent("action")["step"])
    loop = bool(ent("loop/chunk"))
    fig, axes = plt.subplots(2 if loop else 1, 1, figsize=(8, 5.2 if loop else 3.4), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.4]} if loop else None)
    ax = axes[0, 0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for d in range(min(dims, action.shape[1])):
        ax.plot(steps, action[:, d], color=colors[d], lw=1.8, label=f"sent a{d}")
        for strips in ent("loop/chunk").get("LineStrips2D:strips", []):
            pts = np.array(strips[d])
            ax.plot(pts[:, 0], pts[:, 1], color=colors[d], lw=0.7, alpha=0.55)
    held = np.array(ent("loop/held").get("Scalars:scalars", []), dtype=np.float64).ravel()
    for s in steps[held > 0] if len(held) else []:
        ax.axvspan(s - 0.5, s + 0.5, color="0.85", lw=0)
    ax.set_ylabel("action")
    ax.legend(loc="upper right", fontsize=8, ncol=min(dims, action.shape[1]))
    ax.set_title(f"{Path(rrd).name}: {prefix}" + (" (thin: each chunk over the cycles its actions are due; grey: held)"
                                                   if loop else ""), fontsize=9)
    if loop:
        low = axes[1, 0]
        low.step(steps, np.array(ent("loop/queue")["Scalars:scalars"]).ravel(), where="post", color="0.3",
                 label="queued actions")
        lat = ent("loop/chunk_latency_ms")
        twin = low.twinx()
        twin.plot(lat["step"], np.array(lat["Scalars:scalars"]).ravel(), "o", color=colors[3], ms=4,
                  label="chunk latency (ms)")
        low.set_ylabel("queue")
        twin.set_ylabel("latency (ms)")
        low.set_xlabel("control cycle")
        low.legend(loc="upper left", fontsize=8)
        twin.legend(loc="upper right", fontsize=8)
    else:
        ax.set_xlabel("step")
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return {"episode": prefix, "steps": int(len(steps)), "chunks": len(ent("loop/chunk").get("step", []))}
