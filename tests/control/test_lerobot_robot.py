"""The lerobot robot adapter against a fake with lerobot's ``Robot`` interface (the same
adapter drives a subclass of lerobot's real base class in ``control/lerobot_side.py robot``)."""
import numpy as np
import pytest

from dpctrl.control.lerobot_robot import LeRobotRobot
from dpctrl.control.robot import Robot

MOTORS = ["shoulder_pan.pos", "elbow_flex.pos", "gripper.pos"]


class FakeLeRobot:
    """lerobot's interface: features dicts, connect(calibrate), get_observation, send_action
    returning what was sent (here: at most 5 units away from the present position)."""

    def __init__(self):
        self.pos = dict.fromkeys(MOTORS, 0.0)
        self.is_connected = False
        self.calibrated_on_connect = None
        self.sent = []
        self.glitch = None

    observation_features = property(lambda self: {**dict.fromkeys(MOTORS, float), "front": (6, 8, 3)})
    action_features = property(lambda self: dict.fromkeys(MOTORS, float))

    def connect(self, calibrate=True):
        self.is_connected = True
        self.calibrated_on_connect = calibrate

    def disconnect(self):
        self.is_connected = False

    def get_observation(self):
        obs = {**self.pos, "front": np.full((6, 8, 3), 7, np.uint8)}
        if self.glitch:
            obs.update(self.glitch)
        return obs

    def send_action(self, action):
        self.sent.append(dict(action))
        for k, v in action.items():
            self.pos[k] += float(np.clip(v - self.pos[k], -5, 5))
        return {k: self.pos[k] for k in action}


def test_maps_observations_and_actions():
    fake = FakeLeRobot()
    robot = LeRobotRobot(fake, action_low=-50, action_high=50, clock=lambda: 3.5)
    assert isinstance(robot, Robot)
    assert robot.observation_keys == ["state", "front"] and robot.action_space.shape == (3,)
    with robot:
        assert fake.is_connected and fake.calibrated_on_connect is True
        obs = robot.observe()
        assert obs["timestamp"] == 3.5 and obs["state"].dtype == np.float32 and obs["front"].shape == (6, 8, 3)
        sent = robot.act(np.array([2.0, -80.0, 10.0]))  # -80 is clipped to the bound, then lerobot limits the step
        assert fake.sent[-1] == {"shoulder_pan.pos": 2.0, "elbow_flex.pos": -50.0, "gripper.pos": 10.0}
        np.testing.assert_array_equal(sent, [2.0, -5.0, 5.0])
        np.testing.assert_array_equal(robot.observe()["state"], [2.0, -5.0, 5.0])
    assert not fake.is_connected


def test_refuses_bad_actions_and_readings():
    fake = FakeLeRobot()
    robot = LeRobotRobot(fake, action_low=-50, action_high=50)
    with pytest.raises(RuntimeError, match="not connected"):
        robot.observe()
    with robot:
        with pytest.raises(ValueError, match="refusing"):
            robot.act(np.array([np.nan, 0, 0]))
        with pytest.raises(ValueError, match="refusing"):
            robot.act(np.zeros(2))
        assert fake.sent == []
        fake.glitch = {"elbow_flex.pos": float("nan")}
        with pytest.raises(RuntimeError, match="non-finite"):
            robot.observe()
        fake.glitch = {"front": np.zeros((6, 6, 3), np.uint8)}
        with pytest.raises(RuntimeError, match="camera"):
            robot.observe()


def test_needs_finite_bounds_and_float_actions():
    with pytest.raises(ValueError, match="bounds"):
        LeRobotRobot(FakeLeRobot(), action_low=-np.inf, action_high=1)

    class VectorBase(FakeLeRobot):
        action_features = property(lambda self: {"base": (3,)})

    with pytest.raises(ValueError, match="float"):
        LeRobotRobot(VectorBase(), action_low=-1, action_high=1)
