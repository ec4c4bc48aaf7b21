"""``ChunkStepper``: a chunk policy as one action per call, for a user's own control loop.

A chunk policy predicts ``horizon`` actions from the last ``n_obs_steps`` observations, of
which ``n_action_steps`` are executed, starting at the action aligned with the newest
observation (index ``n_obs_steps - 1``). ``ChunkStepper.act(obs)`` keeps that bookkeeping:
the observation history (the first observation repeated until there are enough), the queue of
the current chunk, a new chunk when the queue is empty, and ``note_executed`` so that a
warm-starting policy shifts its previous chunk by what actually ran. Synchronous: inference
happens inside ``act``; the fixed-rate loop (``dpctrl.control``) computes chunks off its thread.
"""
from __future__ import annotations

from collections import deque
from typing import Mapping

import numpy as np


class ChunkStepper:
    def __init__(self, policy, action_steps: int | None = None):
        """``policy``: anything with ``predict_chunk``, ``expected_obs``, ``reset``,
        ``note_executed``, ``n_obs_steps``, ``n_action_steps`` (a loaded policy, or a
        ``RemotePolicy``). ``action_steps``: actions executed per chunk (default the policy's)."""
        self.policy = policy
        self.action_steps = action_steps or policy.n_action_steps
        if not 1 <= self.action_steps <= policy.horizon - policy.n_obs_steps + 1:
            raise ValueError(f"action_steps must be in 1..{policy.horizon - policy.n_obs_steps + 1}; "
                             f"got {self.action_steps}")
        self.keys = list(policy.expected_obs())
        self.reset()

    def reset(self) -> None:
        """Start a new episode: forget the history, the queue and the policy's warm start."""
        self.history: deque = deque(maxlen=self.policy.n_obs_steps)
        self.queue: deque = deque()
        self.executed = 0  # actions taken from the current chunk
        self.chunks = 0
        self.policy.reset()

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The action for observation ``obs`` (one step's dict, the policy's keys): ``(A,)`` in
        robot units."""
        missing = [k for k in self.keys if k not in obs]
        if missing:
            raise KeyError(f"observation lacks {missing}; the policy expects {self.keys}")
        step = {k: np.asarray(obs[k]) for k in self.keys}
        if not self.history:
            self.history.extend([step] * self.policy.n_obs_steps)
        else:
            self.history.append(step)
        if not self.queue:
            if self.chunks:
                self.policy.note_executed(self.executed)
            window = {k: np.stack([h[k] for h in self.history]) for k in self.keys}
            chunk = self.policy.predict_chunk(window)  # (horizon, A)
            first = self.policy.n_obs_steps - 1
            self.queue.extend(chunk[first: first + self.action_steps])
            self.executed, self.chunks = 0, self.chunks + 1
        self.executed += 1
        return self.queue.popleft()
