import pickle

import numpy as np
import pytest
import torch

from dpctrl.policy.diffusion_policy import DiffusionPolicy
from dpctrl.policy import checkpoint
from dpctrl.policy.checkpoint import CheckpointError
from helpers import obs_window, tiny_policy


def test_round_trip_same_actions(tmp_path):
    pol = tiny_policy().eval()
    pol.save(tmp_path / "ck")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors"]
    loaded = DiffusionPolicy.load(tmp_path / "ck", seed=0)
    pol.generator.manual_seed(0)
    np.testing.assert_array_equal(pol.predict_chunk(obs_window()), loaded.predict_chunk(obs_window()))


def test_fp16_checkpoint_is_smaller_and_close(tmp_path):
    pol = tiny_policy().eval()
    pol.save(tmp_path / "f32")
    pol.save(tmp_path / "f16", dtype=torch.float16)
    size = lambda d: (d / "model.safetensors").stat().st_size  # noqa: E731
    assert size(tmp_path / "f16") < 0.6 * size(tmp_path / "f32")
    a = DiffusionPolicy.load(tmp_path / "f32").predict_chunk(obs_window())
    b = DiffusionPolicy.load(tmp_path / "f16").predict_chunk(obs_window())
    assert np.abs(a - b).max() < 0.05


def test_overwrite_is_atomic(tmp_path, monkeypatch):
    pol = tiny_policy().eval()
    pol.save(tmp_path / "ck")
    before = (tmp_path / "ck" / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(checkpoint, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        tiny_policy(seed=1).save(tmp_path / "ck")
    assert (tmp_path / "ck" / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no temp dirs left behind


def test_refuses_pickles_corruption_and_bad_configs(tmp_path):
    pol = tiny_policy().eval()
    pkl = tmp_path / "model.pt"
    pkl.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="pickle"):
        DiffusionPolicy.load(pkl)
    pol.save(tmp_path / "ck")
    weights = tmp_path / "ck" / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="pickle"):
        DiffusionPolicy.load(tmp_path / "ck")
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        DiffusionPolicy.load(tmp_path / "ck")
    weights.write_bytes(good)
    (tmp_path / "ck" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        DiffusionPolicy.load(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="missing config.json"):
        DiffusionPolicy.load(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="no checkpoint 'nope'"):
        DiffusionPolicy.load("nope")


def test_replacing_a_checkpoint_names_the_calibration_files_it_drops(tmp_path, caplog):
    import logging

    from helpers import tiny_policy
    pol = tiny_policy()
    ck = pol.save(tmp_path / "ck")
    (ck / "rti.json").write_text("{}")
    (ck / "recipe.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="dpctrl.policy.checkpoint"):
        pol.save(ck)
    assert "rti.json" in caplog.text and "recipe.json" in caplog.text
    assert sorted(f.name for f in ck.iterdir()) == ["config.json", "model.safetensors"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dpctrl.policy.checkpoint"):
        pol.save(ck)  # nothing left to drop: no warning
    assert caplog.text == ""
