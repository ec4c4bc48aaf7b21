"""Single-step samples over a replay buffer: observation keys -> one target key.

For planners whose target is stored per step (a driving expert's future waypoints), unlike
``WindowDataset``'s windows of actions. Loads the chosen episodes into memory.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dpctrl.data.replay_buffer import ReplayBuffer


class StepDataset:
    def __init__(self, buffer: ReplayBuffer, obs_keys: Sequence[str], target_key: str,
                 episodes: Sequence[int] | None = None):
        missing = [k for k in [*obs_keys, target_key] if k not in buffer.keys()]
        if missing:
            raise KeyError(f"{buffer!r} has no {missing}; it has {buffer.keys()}")
        episodes = range(buffer.n_episodes) if episodes is None else episodes
        parts = [buffer.episode(int(i), [*obs_keys, target_key]) for i in episodes]
        if not parts:
            raise ValueError("no episodes selected")
        self.obs_keys, self.target_key = list(obs_keys), target_key
        self.arrays = {k: np.concatenate([p[k] for p in parts]).astype(np.float32) for k in [*obs_keys, target_key]}

    def __len__(self) -> int:
        return len(self.arrays[self.target_key])

    @property
    def targets(self) -> np.ndarray:
        return self.arrays[self.target_key]

    def get_batch(self, indices: np.ndarray) -> dict:
        """{"obs": {key: (B, ...)}, target_key: (B, ...)} as float32 tensors."""
        idx = np.asarray(indices)
        return {"obs": {k: torch.from_numpy(self.arrays[k][idx]) for k in self.obs_keys},
                self.target_key: torch.from_numpy(self.arrays[self.target_key][idx])}


class GoalSegments:
    """Goal-directed planning windows from goal-resampling data (D4RL maze2d style): from every
    step ``t``, the states until the expert reaches the goal it is heading for (the step after
    which the recorded goal changes), every ``stride`` steps, then the goal position at rest
    (velocity 0) up to ``n_points``. So a trajectory reaches its goal as the expert does and
    then stays, whatever its length; segments longer than the horizon are left out.
    ``get_batch(idx) -> {"traj": (B, n_points, 4)}`` for (x, y, vx, vy) states."""

    def __init__(self, buffer: ReplayBuffer, n_points: int, stride: int, state_key: str = "state",
                 goal_key: str = "goal", episodes: Sequence[int] | None = None):
        missing = [k for k in (state_key, goal_key) if k not in buffer.keys()]
        if missing:
            raise KeyError(f"{buffer!r} has no {missing}; it has {buffer.keys()}")
        episodes = range(buffer.n_episodes) if episodes is None else episodes
        horizon = (n_points - 1) * stride + 1
        states, goals, starts, ends, offset = [], [], [], [], 0
        for i in episodes:
            ep = buffer.episode(int(i), [state_key, goal_key])
            s, g = ep[state_key].astype(np.float32), ep[goal_key].astype(np.float32)
            change = np.flatnonzero(np.any(g[1:] != g[:-1], axis=1))  # goal reached at these steps
            t = np.arange(len(s))
            k = np.searchsorted(change, t)
            ok = k < len(change)
            end = np.where(ok, change[np.minimum(k, len(change) - 1)] + 2, 0)  # incl. the state at the goal
            ok &= (end <= len(s)) & (end - t <= horizon)
            starts.append(offset + t[ok])
            ends.append(offset + end[ok])
            states.append(s)
            goals.append(g)
            offset += len(s)
        self.states = np.concatenate(states)
        self.goals = np.concatenate(goals)
        self.starts, self.ends = np.concatenate(starts), np.concatenate(ends)
        self.steps = np.arange(n_points, dtype=np.int64) * stride

    @property
    def data(self) -> np.ndarray:
        return self.states

    def __len__(self) -> int:
        return len(self.starts)

    def get_batch(self, indices: np.ndarray) -> dict:
        idx = np.asarray(indices)
        t, end = self.starts[idx][:, None], self.ends[idx][:, None]
        rows = t + self.steps[None]
        inside = rows < end
        traj = self.states[np.where(inside, rows, t)]
        rest = np.concatenate([self.goals[t[:, 0]], np.zeros((len(idx), 2), np.float32)], 1)[:, None]
        traj = np.where(inside[..., None], traj, rest)
        traj[:, -1] = rest[:, 0]  # the last point is the goal itself (what planning inpaints)
        return {"traj": torch.from_numpy(traj.astype(np.float32))}


class FrameActionSamples:
    """PAD's training samples over one or more image stores (one task id per store): at step
    t of an episode, the state and frame at t, the actions t .. t+horizon-1 and the frames at
    t + stride, ..., t + k * stride, both edge-clamped at the episode's end (the expert has
    stopped there: success ends an episode). Loads the chosen episodes into memory."""

    def __init__(self, buffers: Sequence[ReplayBuffer], image_key: str, horizon: int, k_future: int,
                 frame_stride: int, episodes: Sequence[Sequence[int]] | None = None, state_key: str = "state"):
        states, images, actions, tasks, ep_start, ep_end = [], [], [], [], [], []
        offset = 0
        for task, rb in enumerate(buffers):
            missing = [k for k in (state_key, image_key, "action") if k not in rb.keys()]
            if missing:
                raise KeyError(f"{rb!r} has no {missing}; it has {rb.keys()}")
            eps = range(rb.n_episodes) if episodes is None else episodes[task]
            for i in eps:
                ep = rb.episode(int(i), [state_key, image_key, "action"])
                n = len(ep["action"])
                states.append(ep[state_key].astype(np.float32))
                images.append(ep[image_key])
                actions.append(ep["action"].astype(np.float32))
                tasks.append(np.full(n, task, np.int64))
                ep_start.append(np.full(n, offset))
                ep_end.append(np.full(n, offset + n - 1))
                offset += n
        if not offset:
            raise ValueError("no episodes selected")
        self.state, self.image, self.action = np.concatenate(states), np.concatenate(images), np.concatenate(actions)
        self.task, self.start, self.end = np.concatenate(tasks), np.concatenate(ep_start), np.concatenate(ep_end)
        self.horizon, self.k, self.stride = horizon, k_future, frame_stride

    def __len__(self) -> int:
        return len(self.action)

    def get_batch(self, indices: np.ndarray) -> dict:
        idx = np.asarray(indices)
        end = self.end[idx, None]
        act_idx = np.minimum(idx[:, None] + np.arange(self.horizon)[None], end)
        fut_idx = np.minimum(idx[:, None] + self.stride * np.arange(1, self.k + 1)[None], end)
        return {"state": torch.from_numpy(self.state[idx]), "image": torch.from_numpy(self.image[idx]),
                "future": torch.from_numpy(self.image[fut_idx]), "action": torch.from_numpy(self.action[act_idx]),
                "task": torch.from_numpy(self.task[idx])}
