"""Every model satisfies the interfaces the rest of the package depends on, with real members
(not attributes set only to look alike)."""
import pytest

from dpctrl.control.client import RemotePolicy
from dpctrl.policy import registry
from dpctrl.policy.interface import ChunkPolicy, LoopPolicy, Trainable


@pytest.mark.parametrize("name", ["lift", "pad-reach"])
def test_chunk_policies(name):
    policy = registry.load_policy(name)
    assert isinstance(policy, ChunkPolicy) and isinstance(policy, Trainable)
    info = policy.describe()
    assert {"sampler", "num_inference_steps", "warm_start", "cache", "deploy", "config"} <= set(info)
    assert not hasattr(policy, "warm") or policy.warm is None  # PAD has no warm start to pretend to
    groups = policy.param_groups(0.1)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped)) == len(list(policy.parameters()))


@pytest.mark.parametrize("name", ["plan-umaze-diffuser", "plan-umaze-trajdiff", "drive-fork"])
def test_planners_are_trainable_not_chunk_policies(name):
    model = registry.load(name)
    assert isinstance(model, Trainable) and not isinstance(model, ChunkPolicy)
    assert not hasattr(model, "encoders")  # the trainer asks for param_groups, nothing else
    grouped = [id(p) for g in model.param_groups(0.1) for p in g["params"]]
    assert len(grouped) == len(set(grouped)) == len(list(model.parameters()))


def test_the_remote_policy_is_a_loop_policy():
    members = ("n_obs_steps", "horizon", "n_action_steps", "reset", "note_executed", "predict_chunk")
    assert all(hasattr(RemotePolicy, m) for m in members)
