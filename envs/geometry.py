"""Small rotation helpers for the scripted experts (quaternions are (x, y, z, w), robosuite's order)."""
from __future__ import annotations

import numpy as np


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def rotvec_from_mat(r: np.ndarray) -> np.ndarray:
    """Axis-angle vector (axis * angle, angle in [0, pi]) of a rotation matrix."""
    cos = np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-6:
        return np.zeros(3)
    if np.pi - angle < 1e-4:  # near pi the antisymmetric part vanishes: use the diagonal
        axis = np.sqrt(np.clip((np.diag(r) + 1) / 2, 0, None))
        i = int(np.argmax(axis))
        for j in range(3):
            if j != i and r[i, j] < 0:
                axis[j] = -axis[j]
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / (2 * np.sin(angle))
    return axis * angle


def rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def yaw_of_quat(q: np.ndarray) -> float:
    r = quat_to_mat(q)
    return float(np.arctan2(r[1, 0], r[0, 0]))


def wrap_quarter_turn(angle: float) -> float:
    """Wrap to [-pi/4, pi/4): the equivalent angle for a shape with 4-fold symmetry (a cube)."""
    return float((angle + np.pi / 4) % (np.pi / 2) - np.pi / 4)


def wrap_half_turn(angle: float) -> float:
    """Wrap to [-pi/2, pi/2): the equivalent angle for a shape with 2-fold symmetry (a gripper)."""
    return float((angle + np.pi / 2) % np.pi - np.pi / 2)
