"""The Ray commands as a user runs them (tests/test_commands.py's harness): ``dpctrl eval
--workers``, ``dpctrl sweep``; a local Ray cluster each, tiny sizes."""
import json
import sys

import pytest

from test_commands import dpctrl, pytestmark, work  # noqa: F401  (the harness and its fixture)

pytest.importorskip("ray")


def test_eval_on_ray_workers(work):
    """--workers 2: the seeds over a local Ray cluster, the same per-seed episodes as in-process."""
    common = ["eval", "--checkpoint", "lift", "--env", "lift", "--episodes", "4", "--batch", "2", "--max-steps", "16",
              "--no-progress"]
    res = dpctrl(work, *common, "--workers", "2", "--json", "evals/ray.json")
    assert "2 Ray workers" in res.stdout and "0 lost" in res.stdout
    dpctrl(work, *common, "--json", "evals/local.json")
    ray_rep, local = (json.loads((work / "evals" / f).read_text()) for f in ("ray.json", "local.json"))
    assert sum(ray_rep["per_worker"].values()) == 4
    assert [{k: e[k] for k in ("seed", "success", "actions_sha1")} for e in ray_rep["per_episode"]] == \
        [{k: e[k] for k in ("seed", "success", "actions_sha1")} for e in local["per_episode"]]
    hide_ray = [sys.executable, "-c", "import sys; sys.modules['ray'] = None; from dpctrl.launch.cli import main; "
                "sys.exit(main())"]
    res = dpctrl(work, *common, "--workers", "2", exe=hide_ray, expect=2)
    assert "pip install 'dpctrl[ray]'" in res.stderr


def test_sweep(work):
    """dpctrl sweep: cells that equal dpctrl eval of the same options per seed; a rerun keeps them."""
    (work / "sweep.yaml").write_text("env: lift\nseeds: {start: 100000, count: 4}\ncheckpoints: [lift]\n"
                                     "variants:\n  ddim-10: --max-steps 16\n  rti: --warm-start rti --max-steps 16\n"
                                     "batch: 2\n")
    res = dpctrl(work, "sweep", "sweep.yaml", "--out", "sweep_cells", "--workers", "2", "--json", "sweep.json",
                 "--no-progress")
    assert "| lift | rti | `--warm-start rti --max-steps 16` |" in res.stdout
    cells = json.loads((work / "sweep.json").read_text())["cells"]
    assert set(cells) == {"lift__ddim-10", "lift__rti"} and cells["lift__rti"]["nfe_per_chunk"] < 10
    dpctrl(work, "eval", "--checkpoint", "lift", "--env", "lift", "--episodes", "4", "--warm-start", "rti",
           "--max-steps", "16", "--json", "evals/rti4.json", "--no-progress")
    alone = json.loads((work / "evals" / "rti4.json").read_text())["per_episode"]
    pick = lambda eps: [(e["seed"], e["success"], e["actions_sha1"]) for e in eps]  # noqa: E731
    assert pick(cells["lift__rti"]["per_episode"]) == pick(alone)
    res = dpctrl(work, "sweep", "sweep.yaml", "--out", "sweep_cells", "--no-progress")  # in-process, all kept
    assert res.stdout.count("kept from") == 2
    (work / "bad.json").write_text(json.dumps({"env": "lift", "seeds": {"start": 0, "count": 1},
                                               "checkpoints": ["lift"], "variants": {"x": "--sampler nope"}}))
    res = dpctrl(work, "sweep", "bad.json", "--out", "bad_cells", expect=2)
    assert "variant options '--sampler nope'" in res.stderr



def test_bench_workers(work):
    res = dpctrl(work, "bench", "workers", "--episodes", "2", "--workers", "1,2", "--batch", "1", "--json",
                 "bench_workers.json", "--no-progress")
    rows = json.loads((work / "bench_workers.json").read_text())["rows"]
    assert [r["workers"] for r in rows] == [1, 2] and all(r["same_as_first"] for r in rows)
    assert "| 2 | 2 |" in res.stdout and rows[1]["ray_startup_s"] > 0
