"""Evaluation on Ray (envs/distributed.py): the same per-seed episodes on any number of workers,
and none lost or counted twice when a worker's process is killed or its node leaves."""
import functools
import os
import signal

import pytest

ray = pytest.importorskip("ray")

from dpctrl.envs.distributed import WorkerPool, collect_cell, evaluate_distributed, seed_jobs  # noqa: E402
from dpctrl.envs.evaluate import make_envs, run_episodes  # noqa: E402
from dpctrl.policy import registry  # noqa: E402

SEEDS = list(range(100_000, 100_008))
STEPS = 20
MAKE = functools.partial(registry.load_policy, "lift")


@pytest.fixture(scope="module")
def reference():
    """The seeds' episodes in this process, 4 at a time: what every split must reproduce."""
    policy = MAKE()
    env_list = make_envs(policy, "lift", 4, max_steps=STEPS)
    records, _, _ = run_episodes(policy, "lift", env_list, SEEDS)
    return {r["seed"]: (r["actions_sha1"], r["success"], r["length"]) for r in records}


def outcome(episodes):
    return {e["seed"]: (e["actions_sha1"], e["success"], e["length"]) for e in episodes}


def jobs(batch=2):
    return seed_jobs("lift", MAKE, "lift", SEEDS, batch, {"max_steps": STEPS})


def test_two_workers_give_the_in_process_episodes(reference):
    rep = evaluate_distributed(MAKE, "lift", len(SEEDS), SEEDS[0], workers=2, batch=3, max_steps=STEPS,
                               progress=False, latency_windows=2)
    assert outcome(rep["per_episode"]) == reference
    assert [e["seed"] for e in rep["per_episode"]] == SEEDS
    assert sum(rep["per_worker"].values()) == len(SEEDS) and rep["workers"] == 2
    assert rep["workers_lost"] == [] and not ray.is_initialized()  # the local cluster stopped


def test_a_killed_worker_has_its_episodes_rerun_on_another(reference):
    pool = WorkerPool(2)
    try:
        where = pool.where()
        done, killed = {}, None
        for job, res in pool.map(jobs()):
            for e in res["episodes"]:
                assert e["seed"] not in done
                done[e["seed"]] = e
            if killed is None:  # the other worker is in the middle of its group now
                killed = next(w for w in where if w != res["worker"])
                os.kill(where[killed]["pid"], signal.SIGKILL)
        assert outcome(done.values()) == reference
        assert [lost["worker"] for lost in pool.lost] == [killed]
        assert set(pool.served) - set(pool.actors) == {killed}
    finally:
        pool.close()


def test_a_node_leaving_the_cluster_loses_no_episode(reference):
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    pool = WorkerPool(2, address=cluster.address)
    try:
        where = pool.where()
        assert {w["node"] for w in where.values()} == {cluster.head_node.node_id, node.node_id}
        done, removed = {}, False
        for job, res in pool.map(jobs()):
            done.update({e["seed"]: e for e in res["episodes"]})
            if not removed:
                cluster.remove_node(node)
                removed = True
        assert outcome(done.values()) == reference
        assert len(pool.lost) == 1  # the worker on the removed node (mid-group, or given one after)
        assert sorted(done) == SEEDS
    finally:
        pool.close()
        ray.shutdown()
        cluster.shutdown()


def test_collect_cell_refuses_a_seed_twice():
    class Twice:
        lost = []

        def map(self, jobs):
            for job in jobs:
                yield job, {"episodes": [{"seed": 1, "success": True}], "windows": [], "nfe": [], "worker": 0}
    with pytest.raises(RuntimeError, match="seed 1 came back twice"):
        collect_cell(Twice(), jobs()[:2])
