"""Result tables: every ``dpctrl`` report rendered as markdown (``dpctrl results``), and the
block of a results page (``docs/results/*.md``) a table is written into between marker comments.

``--update-docs [DOCS]`` on a command rewrites its block in ``DOCS/results/<page>.md``
(``RESULT_PAGES``); nothing writes README.md.

One renderer per kind of report: ``eval_table`` (``dpctrl eval``), ``train_table`` (a run's
``recipe.json``), ``plan_table``,
``drive_table``, ``pad_table`` (PAD and DP-T evals on MetaWorld with ``dpctrl pad frames``),
``lerobot_table`` (``dpctrl lerobot roundtrip``); the delay page's ``delay_table`` and
``run_table`` (``dpctrl run`` reports) live in launch/bench/delay.py with the delay sweep."""
from __future__ import annotations

import json
from pathlib import Path

from dpctrl.launch.tables import machine, markdown_table  # noqa: F401 - re-exported


# block name -> the results page that holds it (docs/results/<page>); tests check each page has its blocks
RESULT_PAGES = {"evals": "evals.md", "policy": "evals.md", "tasks": "evals.md", "train": "evals.md",
                "bench": "inference.md", "peer": "inference.md", "cache": "caching.md", "deploy": "deploy.md",
                "deploy-evals": "deploy.md", "gpu": "gpu.md", "gpu-compile": "gpu.md", "gpu-quick": "gpu.md",
                "loop": "loop.md", "serve": "server.md", "drive": "driving.md", "pad": "pad.md", "pad-hidden": "pad.md",
                "plan": "planning.md", "lerobot": "lerobot.md", "experts": "experts.md", "delay": "delay.md",
                "delay-lift": "delay.md", "delay-stack": "delay.md", "runs": "delay.md", "overlap": "delay.md",
                "workers": "scale.md", "sweep": "scale.md"}


def add_update_docs(parser, what: str = "results") -> None:
    """The ``--update-docs [DOCS]`` option every table-writing command shares."""
    parser.add_argument("--update-docs", nargs="?", const="docs", metavar="DOCS",
                        help=f"rewrite the {what} table in DOCS/results/ (DOCS defaults to ./docs)")


def results_page(docs: Path | str, name: str) -> Path:
    if name not in RESULT_PAGES:
        raise ValueError(f"no results block named {name!r}; known: {', '.join(sorted(RESULT_PAGES))}")
    return Path(docs) / "results" / RESULT_PAGES[name]


def _markers(docs: Path | str, name: str) -> tuple[Path, str, str, str, str]:
    """(page, head, begin, end, tail) around the named block; raises if the page or block is missing."""
    page = results_page(docs, name)
    begin, end = f"<!-- results:{name}:begin -->", f"<!-- results:{name}:end -->"
    if not page.exists():
        raise FileNotFoundError(f"no results page at {page} (--update-docs takes the docs folder)")
    text = page.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{page} has no {begin} ... {end} markers")
    head, rest = text.split(begin, 1)
    return page, head, begin, end, rest.split(end, 1)[1]


check_block = _markers  # called first: fail before minutes of work, not after, when the page or block is missing


def replace_block(docs: Path | str, name: str, body: str) -> Path:
    """Rewrite the named block of its results page under ``docs``; returns the page."""
    page, head, begin, end, tail = _markers(docs, name)
    tmp = page.with_suffix(".tmp")
    tmp.write_text(f"{head}{begin}\n{body.rstrip()}\n{end}{tail}")
    tmp.replace(page)  # never leave a half-written page
    return page


def eval_table(files: list[str]) -> str:
    """The evaluation table from ``dpctrl eval`` JSON reports, one row each."""
    rows = []
    for f in files:
        r = json.loads(Path(f).read_text())
        if "success_rate" not in r or "per_episode" not in r or "sampler" not in r:
            raise ValueError(f"{f} is not a `dpctrl eval` report")
        w = r.get("warm_start")
        warm = (f"RTI K'={w['start_t']}" + (f" {w['tail']} tail" if w.get("tail", "fine") != "fine" else "")
                + (" +noise" if w.get("noise") else "")) if w else ""
        cache = r.get("cache") or ""
        delay = (f"delay {r['delay']}, execute {r['action_steps']}, {r['overlap']}" if r.get("delay") else "")
        deploy = f"{r['deploy']} {r.get('precision', 'fp32')}" if r.get("deploy", "eager") != "eager" else ""
        variant = " + ".join(x for x in (f"{r['sampler']}-{r['num_inference_steps']}", warm, cache, delay, deploy) if x)
        image_keys = r.get("config", {}).get("image_keys")
        env = r["env"] + (f" (images: {' + '.join(k.removesuffix('_image') for k in image_keys)})" if image_keys else "")
        env += f", checkpoint {r['checkpoint']}" if r.get("checkpoint", r["env"]) != r["env"] else ""
        rows.append([env, variant, f"{r['success_rate']:.3f}", r["episodes"], r["nfe_per_chunk"],
                     f"{r['chunk_latency_ms']['p50']:.1f}", f"`{r.get('command') or '?'}`"])
    return (f"Machine: {machine()}; seeds from 100000 (demonstrations use seeds from 0).\n\n"
            + markdown_table(["env", "variant", "success", "episodes", "network calls/chunk", "latency p50 (ms)",
                              "command"], rows))


def plan_table(files: list[str]) -> str:
    """The planning table from ``dpctrl plan eval`` / ``dpctrl plan bench`` JSON reports."""
    rows, notes = [], []
    for f in files:
        r = json.loads(Path(f).read_text())
        if "plan_time_ms" in r and "scenes" in r:  # a `dpctrl plan bench` report
            ref = next(iter(r["plan_time_ms"]))
            notes.append(f"Planning time, batch 1, the same {r['scenes']} {r['maze']} start states timed interleaved in "
                         f"one process (`{r['command']}`): "
                         + ", ".join(f"{k} {v['p50']:.1f} ms ({r['ratio_vs_' + ref][k]:.3f} x {ref})"
                                     for k, v in r["plan_time_ms"].items()) + ".")
            continue
        if "success_rate" not in r or "normalized_score" not in r or "command" not in r:
            raise ValueError(f"{f} is not a `dpctrl plan eval` report")
        t = r.get("plan_time_ms")
        wall, ratio = r["plan_waypoints_in_walls"], r["path_length_ratio"]
        name = r["planner"] + (f"-{r['n_steps']}" if r["planner"] in ("diffuser", "trajdiff") else "")
        if r.get("replan_every_steps"):
            name += f", replan every {r['replan_every_steps']} steps"
        rows.append([r["maze"], name, f"{r['success_rate']:.3f}", f"{r['normalized_score']:.1f}",
                     "-" if ratio is None else f"{ratio:.2f}", "-" if wall is None else f"{wall:.2%}",
                     f"{t['p50']:.1f}" if t else "-", r["episodes"], f"`{r['command']}`"])
    return (f"Machine: {machine()}; 1 torch thread; seeds from 100000 (expert data: seeds from 0). Normalised "
            "score: 100 (R - R_random) / (R_expert - R_random) on the same seeds, R = steps within 0.45 m of "
            "the goal. Path length: mean over episodes both this planner and the expert solved. Planning times "
            "in the table come from separate, loaded runs; compare them within the line below.\n\n"
            + "".join(n + "\n\n" for n in notes)
            + markdown_table(["maze", "planner", "success", "normalised score", "path length / expert",
                              "plan waypoints in walls", "planning time p50 (ms)", "episodes", "command"], rows))


def drive_table(files: list[str]) -> str:
    """The driving table from ``dpctrl drive eval`` JSON reports."""
    rows, notes = [], []
    for f in files:
        r = json.loads(Path(f).read_text())
        if "latency_ms" in r and "vs_vanilla20" in r:  # a `dpctrl drive bench` report
            notes.append(f"Plan latency, batch 1, the same {r['scenes']} {r['scenario']} scenes timed interleaved "
                         f"in one process (`{r['command']}`): "
                         + ", ".join(f"{k} {v['p50']:.2f} ms" + (f" ({r['vs_vanilla20'][k]:.3f} x vanilla-20)"
                                                                   if r["vs_vanilla20"] else "")
                                     for k, v in r["latency_ms"].items()) + ".")
            continue
        if "collision_rate" not in r or "per_episode" not in r or "command" not in r:
            raise ValueError(f"{f} is not a `dpctrl drive eval` report")
        steps = "" if r["method"] in ("expert", "regression") else f"-{r['n_steps']}"
        if r["method"] == "vanilla" and r.get("prediction_type") == "sample":
            steps += " (x0 + L1)"
        lat = r.get("plan_latency_ms")
        lc = r["lane_change"]
        rows.append([r["scenario"], r["method"] + steps, f"{r['collision_rate']:.3f}", f"{r['offroad_rate']:.3f}",
                     f"{r['progress_m']:.0f}", f"{lc['left']}/{lc['right']}/{lc['keep']}",
                     f"{lat['p50']:.1f}" if lat else "-",
                     f"{r['diversity']:.3f}" if "diversity" in r else "-",
                     f"{r['top3_both_lanes']:.3f}" if "top3_both_lanes" in r else "-", r["episodes"],
                     f"`{r['command']}`"])
    return (f"Machine: {machine()}; 1 torch thread; seeds from 100000 (expert data uses seeds from 0). "
            "Latencies in the table come from separate, loaded runs; compare them within the line below.\n\n"
            + "".join(n + "\n\n" for n in notes)
            + markdown_table(["scenario", "planner", "collision", "off-road", "progress (m)", "lane change L/R/keep",
                              "plan latency p50 (ms)", "diversity", "both lanes in top-3", "episodes", "command"],
                             rows))


def state_view_of(cfg: dict) -> str:
    """The name of a PAD config's state view (envs.metaworld_tasks.STATE_VIEWS)."""
    from dpctrl.envs.metaworld_tasks import STATE_VIEWS
    index = cfg.get("state_index")
    return next((k for k, v in STATE_VIEWS.items() if v == index), f"columns {index}")


def _pooled(acc: dict | None, r: dict, name: str) -> dict:
    """Several evals of one checkpoint on one task (other seed ranges) pool into one row:
    success over all their episodes; the chunk latency is the first report's."""
    seeds = list(r.get("seeds") or [])
    new = {"success_rate": r["success_rate"], "episodes": r["episodes"], "seeds": seeds,
           "chunk_latency_ms": r["chunk_latency_ms"], "commands": [r["command"]] if r.get("command") else []}
    if acc is None:
        return new
    if set(acc["seeds"]) & set(seeds):
        raise ValueError(f"{name} evaluates seeds of {r['checkpoint']} on {r['env']} that another report already "
                         "counts: pool only disjoint seed ranges")
    n = acc["episodes"] + r["episodes"]
    return {**acc, "success_rate": (acc["success_rate"] * acc["episodes"] + r["success_rate"] * r["episodes"]) / n,
            "episodes": n, "seeds": acc["seeds"] + seeds, "commands": acc["commands"] + new["commands"]}


def pad_table(files: list[str]) -> str:
    """The PAD table from `dpctrl eval` reports of PAD checkpoints (and of the core's DP-T image
    policy on MetaWorld, the baseline) and `dpctrl pad frames` reports: one row per (task,
    checkpoint); evals of a row on disjoint seed ranges pool."""
    rows: dict[tuple, dict] = {}
    for f in files:
        r = json.loads(Path(f).read_text())
        if "psnr_pred_db" in r:
            key = (r["task"], r["checkpoint"])
            rows.setdefault(key, {}).update(frames=r, tasks=r["tasks"], w=r["image_loss_weight"],
                                            view=r.get("state_view", "all"))
        elif r.get("env", "").startswith("metaworld:") and ("image_loss_weight" in r.get("config", {})
                                                            or r.get("config", {}).get("image_keys")):
            cfg, key = r["config"], (r["env"].split(":", 1)[1], r["checkpoint"])
            pad = "image_loss_weight" in cfg  # else the core's DP-T image policy: one task, full state
            row = rows.setdefault(key, {})
            row.update(eval=_pooled(row.get("eval"), r, f), tasks=cfg["tasks"] if pad else [key[0]],
                       w=cfg["image_loss_weight"] if pad else None, view=state_view_of(cfg) if pad else "all")
        else:
            raise ValueError(f"{f} is neither a PAD or DP-T `dpctrl eval` report on MetaWorld nor a `dpctrl pad frames` "
                             "report")
    out = []
    for (task, ck), d in sorted(rows.items()):
        ev, fr = d.get("eval"), d.get("frames")
        method = ("DP-T (images)" if d["w"] is None else "PAD" if d["w"] > 0 else "w/o image") + (
            f" (multi-task: {'+'.join(d['tasks'])})" if len(d["tasks"]) > 1 else "") + (
            f", state: {d['view']}" if d.get("view", "all") != "all" else "")
        commands = (ev["commands"] if ev else []) + ([fr["command"]] if fr and fr.get("command") else [])
        out.append([task, method, f"{ev['success_rate']:.3f}" if ev else "-", ev["episodes"] if ev else "-",
                    f"{fr['psnr_pred_db']:.2f} / {fr['psnr_copy_last_db']:.2f}" if fr else "-",
                    f"{ev['chunk_latency_ms']['p50']:.0f}" if ev else "-", Path(ck).parent.name,
                    "<br>".join(f"`{c}`" for c in commands)])
    means = []  # one line per multi-task run: its success averaged over the tasks it was evaluated on
    for ck in sorted({ck for _, ck in rows}):
        evs = {task: d["eval"] for (task, c), d in sorted(rows.items()) if c == ck and d.get("eval")}
        if len(evs) > 1:
            rate = sum(e["success_rate"] for e in evs.values()) / len(evs)
            means.append(f"- `{Path(ck).parent.name}`: mean success {rate:.3f} over {', '.join(evs)} "
                         f"({'/'.join(str(e['episodes']) for e in evs.values())} episodes)")
    return (f"Machine: {machine()}; eval seeds from 100000, frame PSNR on held-out expert episodes (seeds from "
            f"100000; demonstrations use seeds from 0).\n\n" + markdown_table(
                ["task", "method", "success", "episodes", "next-frame PSNR pred / copy-last (dB)",
                 "chunk latency p50 (ms)", "run", "commands"], out) + ("\n\n" + "\n".join(means) if means else ""))


def lerobot_table(report: dict, command: str) -> str:
    ex, wr, im, ro = report["export_check"], report["lerobot_write"], report["import_check"], report["robot_check"]
    rows = [["dpctrl export -> `LeRobotDataset` (pyav backend)", f"{ex['lerobot_episodes']} episodes, {ex['lerobot_frames']} frames",
             "; ".join(f"{k}: {v}" for k, v in ex["keys"].items() if k != "episode_index")],
            ["lerobot writer -> `dpctrl lerobot import`", f"{wr['written_episodes']} episodes, {wr['written_frames']} frames",
             "; ".join(f"{k}: {v}" for k, v in im["keys"].items())
             + f" (vs what LeRobotDataset decodes; lerobot's {', '.join(wr['video_codec'].values())} encoding moved "
             f"pixels by {', '.join(f'{v:.2f}' for v in wr['mean_abs_pixel_change_by_lerobot_encoding'].values())} "
             "on average)"],
            ["`LeRobotRobot` adapter -> subclass of `lerobot.robots.Robot`",
             f"{ro['actions_sent']} actions", f"final joint error {ro['max_error']:.3g}, NaN action refused: "
             f"{ro['nan_action_refused']}, disconnected: {ro['disconnected']}"]]
    return (f"Command: `{command}` — lerobot {report['lerobot']} in its side venv (Python 3.12); machine: {machine()}."
            f" Overall: {'pass' if report['ok'] else 'FAIL'}.\n\n"
            + markdown_table(["direction", "data", "result"], rows))


def sweep_table(files: list[str]) -> str:
    """``dpctrl sweep`` cells (reports with a ``cell``) against separate ``dpctrl eval`` reports of
    the same checkpoint, env, seeds and inference settings, seed by seed."""
    from dpctrl.envs.evaluate import same_per_seed
    reports = [json.loads(Path(f).read_text()) for f in files]
    fields = ("env", "seeds", "sampler", "num_inference_steps", "warm_start", "cache", "delay", "overlap",
              "action_steps", "deploy")
    key = lambda r, ckpt: json.dumps([ckpt, *(r.get(f) for f in fields)])  # noqa: E731
    evals = {key(r, r["checkpoint"]): r for r in reports if "cell" not in r}
    rows = []
    for cell in (r for r in reports if "cell" in r):
        st = cell["settings"]
        if key(cell, st["checkpoint"]) not in evals:
            raise ValueError(f"no separate eval of cell {cell['cell']} ({st['options'] or 'no options'}) among the files")
        ev = evals[key(cell, st["checkpoint"])]
        same = same_per_seed(cell, ev)
        rows.append([st["checkpoint"], cell["cell"].split("__", 1)[1], f"`{st['options']}`", f"{cell['success_rate']:.3f}",
                     f"{ev['success_rate']:.3f}", f"{same['same_success']}/{same['seeds']}",
                     f"{same['same_actions']}/{same['seeds']}", f"`{ev['command']}`"])
    return (f"Machine: {machine()}.\n\n" + markdown_table(
        ["checkpoint", "variant", "eval options", "sweep success", "separate eval success", "same success per seed",
         "same actions per seed", "separate eval"], rows))


def train_table(files: list[str]) -> str:
    """What training cost, from ``dpctrl train`` runs' ``recipe.json``, one row each."""
    rows = []  # (a fine-tune's row names the checkpoint it started from)
    for f in files:
        if "samples_per_s" not in (r := json.loads(Path(f).read_text())) or "final_eval" not in r:
            raise ValueError(f"{f} is not a `dpctrl train` run's recipe.json")
        t, d, ev, rec = r["train"], r["data"], r["final_eval"], (r["data"].get("recoveries") or {}).get("episodes")
        steps = f"{t['steps']}" + (f", from {r['init_from']}" if r.get("init_from") else "")  # a fine-tune's start
        rows.append([r["task"], f"{d['episodes']}" + (f" + {rec} recoveries" if rec else ""), d["steps"], steps,
                     t["batch_size"], f"{r['samples_per_s']:.0f}", f"{t['steps'] * t['batch_size'] / r['samples_per_s'] / 60:.0f}",
                     f"{ev['success_rate']:.2f} ({ev['episodes']})", f"`{r['command']}`"])
    return (f"Machine: {machine()}; minutes = steps x batch / samples per s.\n\n" + markdown_table(
        ["task", "demos", "demo steps", "train steps", "batch", "samples/s", "minutes", "in-run eval", "command"], rows))


TABLES = {"evals": eval_table, "train": train_table, "sweep": sweep_table, "delay": lambda files: _delay().delay_table(files),
          "runs": lambda files: _delay().run_table(files), "drive": drive_table, "plan": plan_table, "pad": pad_table}


def _delay():
    from dpctrl.launch.bench import delay  # the delay pages' tables live with the delay sweep
    return delay


def cmd_results(args) -> int:
    """Tabulate JSON reports (each names the command that produced it)."""
    print(table := TABLES[args.what](args.files))
    if args.update_docs:
        print(f"wrote {replace_block(args.update_docs, args.block or args.what, table)}")
    return 0


def add_parser(sub) -> None:
    rs = sub.add_parser("results", help="tabulate eval JSON reports into the results pages")
    rs.add_argument("what", choices=list(TABLES),
                    help="dpctrl eval, drive eval, plan eval reports, or PAD eval + `dpctrl pad frames` reports")
    rs.add_argument("files", nargs="+")
    add_update_docs(rs)
    rs.add_argument("--block", help="the results block to rewrite (<!-- results:BLOCK:begin -->; default: `what`), "
                                    "for a second table of the same kind")
    rs.set_defaults(func=cmd_results)
