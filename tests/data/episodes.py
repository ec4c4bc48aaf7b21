"""Deterministic test episodes: every value of episode i encodes i, so a torn or mixed
episode is visible from its content alone."""
import numpy as np


def make_episode(i: int, length: int | None = None) -> dict[str, np.ndarray]:
    n = length if length is not None else 5 + (i * 7) % 13
    t = np.arange(n, dtype=np.float32)[:, None]
    return {
        "obs": np.concatenate([np.full((n, 3), i, np.float32), t], axis=1),
        "action": np.full((n, 2), i, np.float32) + t / 1000.0,
        "image": np.full((n, 4, 4, 3), i % 256, np.uint8),
    }


def check_episode(ep: dict[str, np.ndarray], i: int) -> None:
    n = len(ep["obs"])
    ref = make_episode(i, n)
    assert n == len(make_episode(i)["obs"]), f"episode {i} has length {n}"
    for k in ref:
        np.testing.assert_array_equal(ep[k], ref[k], err_msg=f"episode {i} key {k}")
