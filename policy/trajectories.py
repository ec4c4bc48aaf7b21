"""Trajectory helpers for planners: k-means anchors, and the mode-diversity score.

Trajectories are ``(..., W, 2)`` waypoints (x forward, y right) in metres, ego frame.
"""
from __future__ import annotations

import numpy as np


def kmeans(x: np.ndarray, k: int, iters: int = 50, seed: int = 0) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding. ``x`` (N, D) -> centres (k, D), sorted by
    cluster size (largest first) so that anchor order is deterministic."""
    x = np.asarray(x, np.float64)
    if len(x) < k:
        raise ValueError(f"k-means needs at least k={k} samples, got {len(x)}")
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else None
        centres.append(x[rng.choice(len(x), p=p)])
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
    c = np.stack(centres)
    for _ in range(iters):
        assign = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        new = np.stack([x[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    assign = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
    order = np.argsort(-np.bincount(assign, minlength=k), kind="stable")
    return c[order]


def swept_cells(traj: np.ndarray, width_m: float = 2.0, cell_m: float = 0.5) -> set[tuple[int, int]]:
    """Grid cells covered by a vehicle of ``width_m`` driving from the origin along ``traj`` (W, 2)."""
    pts = np.concatenate([np.zeros((1, 2)), np.asarray(traj, np.float64)])
    cells: set[tuple[int, int]] = set()
    offsets = np.arange(-width_m / 2, width_m / 2 + 1e-9, cell_m / 2)
    for a, b in zip(pts[:-1], pts[1:]):
        seg = b - a
        n = max(2, int(np.ceil(np.linalg.norm(seg) / (cell_m / 2))) + 1)
        normal = np.array([-seg[1], seg[0]]) / (np.linalg.norm(seg) + 1e-9)
        for s in np.linspace(0, 1, n):
            p = a + s * seg
            for o in offsets:
                q = p + o * normal
                cells.add((int(np.floor(q[0] / cell_m)), int(np.floor(q[1] / cell_m))))
    return cells


def mode_diversity(trajs: np.ndarray, **kw) -> float:
    """DiffusionDrive's diversity of a set of trajectories (Q, W, 2): 1 - mean over i of
    |area_i ∩ union| / |union|, areas swept on a grid. 0 when all coincide; -> 1 when the
    trajectories are disjoint."""
    areas = [swept_cells(t, **kw) for t in np.asarray(trajs)]
    union = set().union(*areas)
    if not union:
        return 0.0
    return float(1.0 - np.mean([len(a) / len(union) for a in areas]))


def lateral_side(traj: np.ndarray, lane_width_m: float = 4.0) -> np.ndarray:
    """-1 (ends in the lane to the left), +1 (right), 0 (same lane) per trajectory (..., W, 2)."""
    y_end = np.asarray(traj)[..., -1, 1]
    return np.where(y_end < -lane_width_m / 2, -1, np.where(y_end > lane_width_m / 2, 1, 0))
