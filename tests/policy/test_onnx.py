"""ONNX export (policy/accel/onnx_export.py) and its runtime (policy/onnx_policy.py): the
exported chunk equals the eager one on fixed noise; a bad directory is refused."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from dpctrl.policy.accel.onnx_export import export_onnx  # noqa: E402
from dpctrl.policy.accel.warmstart import rti_for, shift_chunk  # noqa: E402
from dpctrl.policy.denoise import RunNoise  # noqa: E402
from dpctrl.policy.onnx_policy import ExportError, OnnxPolicy  # noqa: E402
from dpctrl.policy import registry  # noqa: E402

from helpers import tiny_policy  # noqa: E402


def obs_batch(policy, batch, seed=0):
    rng = np.random.default_rng(seed)
    return {k: (rng.integers(0, 255, (batch, *s), dtype=np.uint8) if len(s) == 4 else
                rng.normal(0, 0.3, (batch, *s)).astype(np.float32)) for k, s in policy.expected_obs().items()}


def eager_chunk(policy, obs, x, plan, noise):
    with torch.no_grad():
        stored, actions = policy.chunk_tensors({k: torch.as_tensor(v) for k, v in obs.items()}, torch.as_tensor(x),
                                               plan, noise)
    return stored.numpy(), actions.numpy()


def run_graph(runtime, name, feed):
    return runtime.sessions[name].run(["stored", "actions"], feed)


@pytest.fixture(scope="module")
def lift_rti(tmp_path_factory):
    torch.set_num_threads(1)
    policy = registry.load_policy("lift")
    policy.set_warm_start(rti_for("lift", policy))
    out = tmp_path_factory.mktemp("export") / "lift-rti"
    export_onnx(policy, out)
    return policy, OnnxPolicy(out), out


def test_cold_and_warm_graphs_equal_eager_on_fixed_noise(lift_rti):
    policy, runtime, _ = lift_rti
    T, A = policy.cfg.horizon, policy.cfg.action_dim
    rng = np.random.default_rng(1)
    for batch in (1, 3):  # the batch dimension is dynamic
        obs = obs_batch(policy, batch)
        x = rng.standard_normal((batch, T, A)).astype(np.float32)
        suffixes = ("", "_b1") if batch == 1 else ("",)  # batch 1 also has its specialized graphs
        for suffix in suffixes:
            stored, actions = run_graph(runtime, "cold" + suffix, {**obs, "x": x})
            ref_x, ref_a = eager_chunk(policy, obs, x, policy.cold_plan(), RunNoise(None))
            assert np.abs(actions - ref_a).max() <= 1e-5
            start = rng.standard_normal((batch, T, A)).astype(np.float32)
            executed = np.full(batch, 8, np.int64)
            feed = {**obs, "prev": stored, "executed": executed, "start_noise": start}
            _, warm_a = run_graph(runtime, "warm" + suffix, feed)
            guess = shift_chunk(torch.as_tensor(stored), 8)
            _, ref_w = eager_chunk(policy, obs, guess, policy.warm_plan(), RunNoise((torch.as_tensor(start),)))
            assert np.abs(warm_a - ref_w).max() <= 1e-5
    m = runtime.manifest
    assert m["graphs"]["cold"]["network_calls"] == 10 and m["graphs"]["warm"]["network_calls"] == 3
    assert set(m["graphs"]) == {"cold", "warm", "cold_b1", "warm_b1"} and m["graphs"]["warm_b1"]["batch"] == 1


def test_the_runtime_warm_starts_after_the_first_chunk(lift_rti):
    policy, runtime, _ = lift_rti
    obs = obs_batch(policy, 2)
    runtime.reset(seeds=[5, 6])
    first = runtime.predict_batch(obs)
    assert runtime.nfe_last == 10 and first.shape == (2, policy.cfg.horizon, policy.cfg.action_dim)
    runtime.note_executed(8)
    runtime.predict_batch(obs)
    assert runtime.nfe_last == 3
    runtime.reset(seeds=[5])  # the same seed: the same first chunk (from the batch-1 graph: equal within fp32)
    assert np.abs(runtime.predict_batch({k: v[:1] for k, v in obs.items()})[0] - first[0]).max() <= 1e-5
    assert runtime.describe()["deploy"] == "onnxruntime" and runtime.describe()["sampler"] == "ddim"


@pytest.mark.parametrize("kind", ["ddpm", "image"])
def test_ddpm_step_noise_and_an_image_policy(tmp_path, kind):
    kw = {"sampler": "ddpm", "num_inference_steps": 5} if kind == "ddpm" else \
        {"image_keys": ["agentview_image"], "image_size": 20, "image_crop": 16, "image_widths": [4, 8, 8]}
    policy = tiny_policy(**kw).eval()
    export_onnx(policy, tmp_path / kind)
    runtime = OnnxPolicy(tmp_path / kind)
    obs = obs_batch(policy, 2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, policy.cfg.horizon, policy.cfg.action_dim)).astype(np.float32)
    feed, noise = {**obs, "x": x}, RunNoise(None)
    if kind == "ddpm":
        steps = rng.standard_normal((5, 2, policy.cfg.horizon, policy.cfg.action_dim)).astype(np.float32)
        feed["step_noise"], noise = steps, RunNoise(None, (torch.as_tensor(steps),))
    _, actions = run_graph(runtime, "cold", feed)
    _, ref = eager_chunk(policy, obs, x, policy.cold_plan(), noise)
    assert np.abs(actions - ref).max() <= 1e-5


def test_what_cannot_be_exported_or_run_is_refused(tmp_path, lift_rti):
    from dpctrl.policy.accel.cache import BlockCache
    policy = tiny_policy()
    policy.set_cache(BlockCache({b: set() for b in policy.net.branch_names()}))
    with pytest.raises(ValueError, match="block cache is not exportable"):
        export_onnx(policy, tmp_path / "cached")
    assert not (tmp_path / "cached").exists() and list(tmp_path.iterdir()) == []
    _, _, out = lift_rti
    with pytest.raises(FileExistsError):
        export_onnx(registry.load_policy("lift"), out)
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in out.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    warm = bad / "warm.onnx"
    warm.write_bytes(warm.read_bytes()[:-100])  # truncated
    with pytest.raises(ExportError, match="truncated or replaced"):
        OnnxPolicy(bad)
    warm.write_bytes((out / "warm.onnx").read_bytes())
    manifest = json.loads((bad / "deploy.json").read_text())
    manifest["graphs"]["cold"]["inputs"] = {"object": [None, 2, 10], "x": [None, 16, 7]}
    (bad / "deploy.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="takes inputs"):
        OnnxPolicy(bad)
    manifest["version"] = 99
    (bad / "deploy.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="version 99"):
        OnnxPolicy(bad)


def test_int8_export_runs_close_to_fp32(tmp_path, lift_rti):
    """Dynamic int8: the same inputs, a different (quantized) graph, actions within 0.2 of fp32's
    (robot units; Lift's actions span [-1, 1]; 0.08 seen here, 0.11 on demo windows in
    ``dpctrl bench deploy``, while wrong scales would be off by the whole range); the manifest
    says int8."""
    policy, fp32, _ = lift_rti
    manifest = export_onnx(policy, tmp_path / "int8", precision="int8")
    int8 = OnnxPolicy(tmp_path / "int8")
    assert manifest["precision"] == "int8" and int8.describe()["precision"] == "int8"
    assert fp32.describe()["precision"] == "fp32"
    assert [i.name for i in int8.sessions["warm"].get_inputs()] == [i.name for i in fp32.sessions["warm"].get_inputs()]
    ops = {n.op_type for n in __import__("onnx").load(str(tmp_path / "int8" / "cold.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    obs = obs_batch(policy, 2)
    x = np.random.default_rng(3).standard_normal((2, policy.cfg.horizon, policy.cfg.action_dim)).astype(np.float32)
    _, a32 = run_graph(fp32, "cold", {**obs, "x": x})
    _, a8 = run_graph(int8, "cold", {**obs, "x": x})
    err = np.abs(a8 - a32).max()
    assert 0 < err <= 0.2, err  # quantized (not the fp32 graph again), and close
    with pytest.raises(ValueError, match="precision 'fp16'"):
        export_onnx(policy, tmp_path / "fp16", precision="fp16")
    assert not (tmp_path / "fp16").exists()
