"""The ``lerobot`` half of the LeRobot round trip; runs in the side venv (Python >= 3.12, the real
``lerobot`` package); imports nothing of dpctrl but control/lerobot_robot.py (``robot``). Driven by ``data/lerobot_roundtrip.py``.

    python lerobot_side.py check DATASET EXPECTED.npz      load a dataset dpctrl exported with
                                                           LeRobotDataset; compare every frame
    python lerobot_side.py write SOURCE.npz DATASET OUT.npz record SOURCE's episodes with
                                                           lerobot's own writer, then dump what
                                                           LeRobotDataset reads back from it
    python lerobot_side.py robot                           control/lerobot_robot.py (numpy and
                                                           gymnasium only) drives a subclass of
                                                           lerobot's Robot ABC made through
                                                           lerobot's make_robot_from_config

``.npz`` files hold, per key, all frames concatenated (images uint8 (N, H, W, 3)) plus
``episode_index``; keys are LeRobot feature names. A JSON summary goes to stdout's last line.
Video decoding uses lerobot's ``pyav`` backend (torchcodec needs system FFmpeg libraries).
"""
from __future__ import annotations

import json
import sys

import numpy as np


def _read_all(ds) -> dict[str, np.ndarray]:
    """Every item of a LeRobotDataset, stacked per key; camera frames back to uint8 HWC."""
    keys = [k for k, f in ds.features.items() if f["dtype"] not in ("string",)]
    out: dict[str, list] = {k: [] for k in keys}
    for i in range(len(ds)):
        item = ds[i]
        for k in keys:
            v = item[k].numpy()
            if ds.features[k]["dtype"] in ("video", "image"):
                v = np.round(v.transpose(1, 2, 0) * 255.0).astype(np.uint8)
            out[k].append(v)
    return {k: np.stack(v) for k, v in out.items()}


def check(root: str, expected_path: str) -> dict:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    expected = dict(np.load(expected_path))
    ds = LeRobotDataset("dpctrl/export", root=root, video_backend="pyav")
    got = _read_all(ds)
    report = {"lerobot_episodes": ds.meta.total_episodes, "lerobot_frames": len(ds), "fps": ds.fps,
              "tasks": list(ds.meta.tasks.index), "stats_keys": sorted(ds.meta.stats or {}), "keys": {}}
    for k, want in expected.items():
        if k not in got:
            report["keys"][k] = "missing in lerobot"
            continue
        have = got[k].reshape(want.shape) if got[k].size == want.size else got[k]
        same = have.shape == want.shape and np.array_equal(have.astype(want.dtype), want)
        report["keys"][k] = "identical" if same else (
            f"differs: shape {have.shape} vs {want.shape}, max abs diff "
            f"{float(np.abs(have.astype(np.float64) - want).max()) if have.shape == want.shape else 'n/a'}")
    report["ok"] = all(v == "identical" for v in report["keys"].values())
    return report


def write(source_path: str, root: str, out_path: str) -> dict:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    src = dict(np.load(source_path))
    fps = int(src.pop("fps"))
    episode = src.pop("episode_index")
    features = {}
    for k, v in src.items():
        if v.ndim == 4:
            features[k] = {"dtype": "video", "shape": tuple(v.shape[1:]), "names": ["height", "width", "channels"]}
        else:
            features[k] = {"dtype": str(v.dtype), "shape": (v.shape[1],), "names": None}
    ds = LeRobotDataset.create("dpctrl/recorded", fps=fps, features=features, root=root, robot_type="sim_lift",
                               use_videos=True, video_backend="pyav")
    for e in np.unique(episode):
        for i in np.flatnonzero(episode == e):
            ds.add_frame({**{k: v[i] for k, v in src.items()}, "task": "lift the cube"})
        ds.save_episode()
    ds.finalize()
    back = LeRobotDataset("dpctrl/recorded", root=root, video_backend="pyav")
    got = _read_all(back)
    np.savez(out_path, **got)
    lossy = {k: float(np.abs(got[k].astype(np.int16) - src[k].astype(np.int16)).mean())
             for k in src if src[k].ndim == 4}
    return {"written_episodes": back.meta.total_episodes, "written_frames": len(back),
            "video_codec": {k: back.meta.features[k].get("info", {}).get("video.codec") for k in lossy},
            "mean_abs_pixel_change_by_lerobot_encoding": lossy}


def robot() -> dict:
    """The adapter against lerobot's real ``Robot`` base class and factory: an in-memory 3-motor
    arm (lerobot ships its mock robot only in its test tree), driven to a target."""
    import dataclasses
    import os
    import tempfile
    from pathlib import Path

    from lerobot.robots import Robot, RobotConfig

    # this venv does not have dpctrl installed: import it from the folder this file is in
    # (the repository, or site-packages/dpctrl) under its import name, through a link
    link_dir = tempfile.mkdtemp(prefix="dpctrl-link-")
    os.symlink(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.join(link_dir, "dpctrl"))
    sys.path.insert(0, link_dir)
    from dpctrl.control.lerobot_robot import make_lerobot_robot

    motors = ["shoulder_pan.pos", "elbow_flex.pos", "gripper.pos"]

    @RobotConfig.register_subclass("dpctrl_memory_arm")
    @dataclasses.dataclass(kw_only=True)
    class MemoryArmConfig(RobotConfig):
        pass

    class MemoryArm(Robot):
        config_class = MemoryArmConfig
        name = "dpctrl_memory_arm"

        def __init__(self, config):
            super().__init__(config)
            self.pos = dict.fromkeys(motors, 0.0)
            self._connected = False
            self.sent = []

        observation_features = property(lambda self: {**dict.fromkeys(motors, float), "wrist": (8, 8, 3)})
        action_features = property(lambda self: dict.fromkeys(motors, float))
        is_connected = property(lambda self: self._connected)
        is_calibrated = property(lambda self: True)

        def connect(self, calibrate=True):
            self._connected = True

        def calibrate(self):
            pass

        def configure(self):
            pass

        def get_observation(self):
            return {**self.pos, "wrist": np.full((8, 8, 3), int(self.pos["gripper.pos"]) % 256, np.uint8)}

        def send_action(self, action):
            self.sent.append(dict(action))
            for k, v in action.items():  # lerobot-style max relative target: at most 5 per step
                self.pos[k] += float(np.clip(v - self.pos[k], -5.0, 5.0))
            return {k: self.pos[k] for k in action}

        def disconnect(self):
            self._connected = False

    # make_robot_from_config resolves an unknown config class FooConfig to class Foo in its module
    MemoryArmConfig.__module__ = MemoryArm.__module__ = __name__
    globals().update(MemoryArmConfig=MemoryArmConfig, MemoryArm=MemoryArm)
    config = MemoryArmConfig(id="test", calibration_dir=Path(tempfile.mkdtemp()))
    adapter = make_lerobot_robot(config, action_low=-100.0, action_high=100.0)
    target = np.array([30.0, -20.0, 60.0], np.float32)
    with adapter:
        for _ in range(40):
            obs = adapter.observe()
            adapter.act(target)  # the arm moves at most 5 per step towards it
        obs = adapter.observe()
        try:
            adapter.act(np.array([np.nan, 0, 0], np.float32))
            refused = False
        except ValueError:
            refused = True
        n_sent = len(adapter.robot.sent)
    err = float(np.abs(obs["state"] - target).max())
    return {"robot_class": type(adapter.robot).__mro__[1].__module__ + ".Robot", "observation_keys": adapter.observation_keys,
            "action_names": adapter.action_names, "final_state": obs["state"].tolist(), "max_error": err,
            "camera_shape": list(obs["wrist"].shape), "nan_action_refused": refused, "actions_sent": n_sent,
            "disconnected": not adapter.robot.is_connected,
            "ok": bool(err < 1e-4 and refused and n_sent == 40 and not adapter.robot.is_connected)}


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "check" and len(argv) == 3:
        report = check(argv[1], argv[2])
    elif len(argv) >= 1 and argv[0] == "write" and len(argv) == 4:
        report = write(argv[1], argv[2], argv[3])
    elif argv == ["robot"]:
        report = robot()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0 if report.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
