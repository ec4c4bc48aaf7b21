"""Failure classes of failed episodes (envs/failures.py)."""
import numpy as np
import pytest

from dpctrl.envs.failures import CLASSES, classify, object_height_index


def _episode(close_at=None, lift=0.0, back_down=False, steps=60):
    """Gripper commands, object heights (rest at 0.82 after a 1 cm drop) and a moving hand."""
    actions = -np.ones(steps)
    if close_at is not None:
        actions[close_at:] = 1.0
    heights = np.full(steps + 1, 0.82)
    heights[:3] = [0.83, 0.825, 0.821]  # robosuite spawns objects a little above the table
    if lift:
        heights[30:] += lift
        if back_down:
            heights[50:] = 0.82
    hand = np.stack([np.linspace(0, 0.2, steps), np.zeros(steps), np.full(steps, 1.0)], axis=1)
    return actions, heights, hand


@pytest.mark.parametrize("episode, expected", [
    (dict(), "never_closed"),
    (dict(close_at=20), "missed_grasp"),
    (dict(close_at=20, lift=0.05, back_down=True), "dropped"),
    (dict(close_at=20, lift=0.03), "held_short"),
])
def test_each_class(episode, expected):
    row = classify(*_episode(**episode))
    assert row["class"] == expected and expected in CLASSES
    assert row["max_rise_m"] == pytest.approx(episode.get("lift", 0.0), abs=1e-9)
    assert row["closes"] == (1 if "close_at" in episode else 0) and not row["stalled"]


def test_closes_counts_regrasps_and_a_still_hand_is_stalled():
    actions, heights, hand = _episode(close_at=10)
    actions[20:30] = -1.0  # reopened, closed again at 30
    hand[:] = [0.1, 0.0, 1.0]
    row = classify(actions, heights, hand)
    assert row["closes"] == 2 and row["stalled"] and row["class"] == "missed_grasp"


def test_only_tasks_with_an_object_height():
    assert object_height_index("lift") == 2 and object_height_index("can") == 9
    assert object_height_index("robosuite:square") == 9
    with pytest.raises(ValueError, match="robosuite tasks"):
        object_height_index("metaworld:reach")
