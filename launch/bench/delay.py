"""``dpctrl bench delay``: success and smoothness of each overlap mode under simulated inference
delay, one command for the whole sweep (the delay-injected evaluator, envs/evaluate.py).

A cell is one (variant, D) pair evaluated on the same seeds; a variant is an overlap mode
(``replace``, ``blend``, ``inpaint``, ``rtc``, ``bid``, ``prefix``), optionally with the RTI warm
start (``rti+rtc``). ``prefix`` variants run the prefix-trained ``--prefix-checkpoint`` (the
others ``--checkpoint``). Each finished cell is a JSON file in ``--out``; a rerun with the same settings
skips it, so an interrupted sweep resumes where it stopped. The table has one row per variant
and one column per delay (success, mean boundary jump), and the check the issue's target asks
for: per delay, the best variant's success against ``replace`` at D = 0 and its jump against
``replace``'s at that D.
"""
from __future__ import annotations

import json
from pathlib import Path

from dpctrl.launch.tables import machine, markdown_table

from dpctrl.policy.chunking import OVERLAPS

SETTINGS = ("checkpoint", "env", "episodes", "seed_start", "execute", "batch")


def parse_variant(text: str) -> tuple[bool, str]:
    """``MODE`` or ``rti+MODE`` -> (RTI warm start, overlap mode)."""
    warm, _, mode = text.rpartition("+")
    if warm not in ("", "rti") or mode not in OVERLAPS:
        raise ValueError(f"a variant is MODE or rti+MODE with MODE one of {OVERLAPS}; got {text!r}")
    return warm == "rti", mode


def cell_path(out: Path, variant: str, delay: int) -> Path:
    return out / f"{variant.replace('+', '_')}_d{delay}.json"


def run_cell(settings: dict, variant: str, delay: int, threads: int, progress: bool) -> dict:
    """One cell: the policy loaded fresh, each episode's noise seeded by its seed (as ``dpctrl eval``)."""
    import torch

    from dpctrl.envs.evaluate import evaluate
    from dpctrl.policy.accel.warmstart import rti_for
    from dpctrl.policy.registry import load_policy
    torch.set_num_threads(threads)
    warm, mode = parse_variant(variant)
    policy = load_policy(settings["checkpoint"])
    if warm:
        policy.set_warm_start(rti_for(settings["checkpoint"], policy))
    rep = evaluate(policy, settings["env"], settings["episodes"], settings["seed_start"], batch=settings["batch"],
                   progress=progress, action_steps=settings["execute"], delay=delay, overlap=mode)
    keep = ("success_rate", "episodes", "delay", "overlap", "action_steps", "boundary_jump", "jerk", "nfe_per_chunk",
            "sampler", "num_inference_steps", "rollout_seconds", "per_episode")
    return {"settings": settings, "variant": variant, **{k: rep[k] for k in keep},
            "chunk_latency_ms": {k: rep["chunk_latency_ms"][k] for k in ("p50", "p99")}}


def cell_settings(settings: dict, variant: str, prefix_checkpoint: str | None) -> dict:
    """A cell's settings: a ``prefix`` variant's checkpoint is the prefix-trained one."""
    if parse_variant(variant)[1] != "prefix":
        return settings
    if prefix_checkpoint is None:
        raise ValueError(f"variant {variant!r} runs a policy trained with --prefix-max: pass --prefix-checkpoint")
    return {**settings, "checkpoint": str(prefix_checkpoint)}


def sweep(settings: dict, variants: list[str], delays: list[int], out: Path, threads: int = 2,
          progress: bool = True, log=print, prefix_checkpoint: str | None = None) -> list[dict]:
    """Every (variant, delay) cell, finished ones read back from ``out``; returns them in order."""
    from dpctrl.envs.evaluate import check_overlap
    from dpctrl.policy.chunking import check_delay
    from dpctrl.policy.registry import load_policy
    per_variant = {v: cell_settings(settings, v, prefix_checkpoint) for v in variants}
    for v, s in per_variant.items():  # every cell's geometry and mode, before the first one runs
        policy = load_policy(s["checkpoint"])
        for d in delays:
            check_delay(d, s["execute"], policy.horizon, policy.n_obs_steps)
            check_overlap(policy, parse_variant(v)[1], d)
    out.mkdir(parents=True, exist_ok=True)
    cells = []
    for v in variants:
        for d in delays:
            cs = per_variant[v]
            path = cell_path(out, v, d)
            if path.exists():
                cell = json.loads(path.read_text())
                if cell.get("settings") != cs:
                    raise ValueError(f"{path} was run with {cell.get('settings')}, not {cs}: use another --out "
                                     "or remove it")
                log(f"{v} D={d}: kept from {path}")
            else:
                cell = run_cell(cs, v, d, threads, progress)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(cell, indent=1))
                tmp.replace(path)  # a killed run leaves no half-written cell
                log(f"{v} D={d}: success {cell['success_rate']:.3f}, boundary jump "
                    f"{cell['boundary_jump']['mean']:.4f} ({cell['rollout_seconds']:.0f} s)")
            cells.append(cell)
    return cells


def markdown(cells: list[dict], delays: list[int]) -> str:
    variants = list(dict.fromkeys(c["variant"] for c in cells))
    at = {(c["variant"], c["delay"]): c for c in cells}
    rows = [[v] + [f"{at[v, d]['success_rate']:.3f} / {at[v, d]['boundary_jump']['mean']:.3f}" if (v, d) in at
                   else "" for d in delays] for v in variants]
    table = markdown_table(["variant"] + [f"D={d}" for d in delays], rows)
    return table + "\n\n" + target_check(at, variants, delays)


def target_check(at: dict, variants: list[str], delays: list[int], up_to: int = 4) -> str:
    """Per variant, over the delays up to ``up_to``: the worst success drop from its own D = 0 cell
    (the synchronous run of the same policy and inference variant) and the worst boundary jump
    as a multiple of ``replace``'s at the same D; met when no drop exceeds 3 points and no
    ratio exceeds 0.5."""
    lines = [f"Target (up to D={up_to}): success within 3 points of the variant's own D=0 cell and a boundary jump "
             "at most 0.5x replace's at the same D. Per variant, the worst case over those delays:", ""]
    ds = [d for d in delays if 0 < d <= up_to]
    for v in variants:
        cells = [(d, at.get((v, d)), at.get(("replace", d))) for d in ds]
        if at.get((v, 0)) is None or any(c is None or r is None for _, c, r in cells):
            lines.append(f"- {v}: (cells missing)")
            continue
        base = at[v, 0]["success_rate"]
        gap, gd = min((100 * (c["success_rate"] - base), d) for d, c, _ in cells)
        ratio, rd = max((c["boundary_jump"]["mean"] / r["boundary_jump"]["mean"], d) for d, c, r in cells)
        met = gap >= -3 and ratio <= 0.5
        lines.append(f"- {v}: success {gap:+.1f} points at worst (D={gd}, vs {base:.3f} at D=0); jump {ratio:.2f}x "
                     f"replace's at worst (D={rd}): {'met' if met else 'not met'}")
    return "\n".join(lines)


def plot(cells: list[dict], delays: list[int], path: str, title: str) -> None:
    """Success and boundary jump vs delay, one line per variant."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for v in dict.fromkeys(c["variant"] for c in cells):
        pts = sorted((c["delay"], c) for c in cells if c["variant"] == v)
        a.plot([d for d, _ in pts], [c["success_rate"] for _, c in pts], marker="o", label=v)
        b.plot([d for d, _ in pts], [c["boundary_jump"]["mean"] for _, c in pts], marker="o", label=v)
    a.set(xlabel="delay D (control steps)", ylabel="success", xticks=delays, title=title)
    b.set(xlabel="delay D (control steps)", ylabel="boundary jump (mean, robot units)", xticks=delays)
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- `dpctrl results delay|runs`

def delay_table(files: list[str]) -> str:
    """Success and smoothness under simulated inference delay, from ``dpctrl eval --delay`` reports:
    one row per report, sorted by env, variant, delay and overlap mode."""
    rows = []
    for f in files:
        r = json.loads(Path(f).read_text())
        if "boundary_jump" not in r or "delay" not in r:
            raise ValueError(f"{f} is not a `dpctrl eval` report with smoothness measures (rerun it)")
        w = r.get("warm_start")
        variant = f"{r['sampler']}-{r['num_inference_steps']}" + (f" + RTI K'={w['start_t']}" if w else "")
        j = r["boundary_jump"]
        rows.append(((r["env"], variant, r["delay"], r["action_steps"], r["overlap"]),
                     [r["env"], variant, r["delay"], r["action_steps"], r["overlap"], f"{r['success_rate']:.3f}",
                      r["episodes"], f"{j['mean']:.4f}", f"{j['p95']:.4f}", f"{r['jerk']:.5f}",
                      f"`{r.get('command') or '?'}`"]))
    rows.sort(key=lambda kr: kr[0])
    return (f"Machine: {machine()}; seeds from 100000. Delay D and execution horizon S in control steps "
            "(simulated time: the chunk requested at step k is used from step k + D). Boundary jump: largest change "
            "of the continuous action dims at a chunk switch (robot units); jerk: mean squared third difference of "
            "the actions per episode.\n\n"
            + markdown_table(["env", "variant", "D", "S", "overlap", "success", "episodes", "boundary jump (mean)",
                              "(p95)", "jerk", "command"], [r for _, r in rows]))


def run_table(files: list[str]) -> str:
    """The wall-clock loop, from ``dpctrl run`` reports (with ``--compare-eval``: the synchronous
    eval's success on the same seeds): one row per report."""
    rows = []
    for f in files:
        r = json.loads(Path(f).read_text())
        if "deadline_misses" not in r or "period_jitter_ms" not in r:
            raise ValueError(f"{f} is not a `dpctrl run` report")
        w = r.get("warm_start")
        variant = f"{r['sampler']}-{r['num_inference_steps']}" + (f" + RTI K'={w['start_t']}" if w else "")
        cmp = r.get("vs_eval")
        mode = "async" if r["async"] else "sync"
        rows.append([r["robot"], variant, f"{mode}, {r.get('inference', '?')}", r["overlap"], r["episodes"],
                     f"{r['success_rate']:.3f}",
                     f"{cmp['eval_success_rate']:.3f} ({cmp['difference_points']:+.1f})" if cmp else "",
                     f"{r['deadline_misses']} / {r['cycles']}", f"{r['period_jitter_ms']['p99']:.2f}",
                     f"{r['chunk_latency_ms']['p50']:.0f}",
                     f"{r['delay_cycles']['p50']:g} / {r['delay_cycles']['max']:g}",
                     f"{r['boundary_jump']['mean']:.4f}", f"`{r.get('command') or '?'}`"])
    return (f"Machine: {machine()}; seeds from 100000. Success vs the synchronous `dpctrl eval` of the same "
            "inference variant on the same seeds (points); deadline misses in all cycles; chunk delay in control "
            "cycles counted from its observation to its arrival.\n\n"
            + markdown_table(["robot", "variant", "inference", "overlap", "episodes", "success", "sync eval (diff)",
                              "deadline misses / cycles", "jitter p99 (ms)", "chunk latency p50 (ms)",
                              "delay p50 / max", "boundary jump", "command"], rows))
