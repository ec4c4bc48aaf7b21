"""PointMaze (gymnasium-robotics) tasks and their scripted expert.

``MazeTask(maze)`` wraps ``PointMaze_<UMaze|Medium|Large>-v3`` in its D4RL-maze2d form
(``continuing_task=True``: reaching the goal does not end the episode, the sparse reward
counts the steps spent within 0.45 of it; 300/600/800 steps of 0.01 s). Observation dict:
``state`` = (x, y, vx, vy) and ``goal`` = (gx, gy), float32; action = force (fx, fy) in
[-1, 1]. ``reset(seed)`` draws the start and goal cells (and their small noise) from the
seed, as PointMaze does. ``info["success"]`` is set from the first step within 0.45 of the
goal onwards.

``MazeExpert``: breadth-first search over the free cells of the maze grid from the current
cell to the goal cell, then a PD law towards the next waypoint: the centre of the cell
two steps ahead on the path when that segment is straight, else of the next one, and the
goal itself from its own cell (``a = clip(kp (w - p) - kd v)``). It solves every episode
(``dpctrl plan collect`` reports the rate).

``record_expert`` makes D4RL-maze2d-like data: one long run per store episode in which the
expert, on reaching its goal, gets a new random goal cell (goal resampling).
"""
from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np

MAZES = {"umaze": "PointMaze_UMaze-v3", "medium": "PointMaze_Medium-v3", "large": "PointMaze_Large-v3"}
SUCCESS_RADIUS = 0.45  # PointMaze's own success distance
DT = 0.01


def maze_name(name: str) -> str:
    key = name.split(":", 1)[1] if name.startswith("maze:") else name
    if key not in MAZES:
        raise ValueError(f"unknown maze {name!r}; known: {sorted(MAZES)}")
    return key


class MazeGrid:
    """The maze's cell grid: walls, cell <-> xy, shortest paths between free cells."""

    def __init__(self, maze_map, scaling: float, x_center: float, y_center: float):
        self.walls = np.asarray(maze_map, dtype=np.int64) == 1
        self.scaling, self.x_center, self.y_center = float(scaling), float(x_center), float(y_center)
        self.free = [tuple(c) for c in np.argwhere(~self.walls)]
        self._paths: dict[tuple, dict] = {}

    def cell(self, xy) -> tuple[int, int]:
        xy = np.asarray(xy, dtype=np.float64)
        col = int(np.floor((xy[..., 0] + self.x_center) / self.scaling))
        row = int(np.floor((self.y_center - xy[..., 1]) / self.scaling))
        return row, col

    def center(self, cell) -> np.ndarray:
        r, c = cell
        return np.array([(c + 0.5) * self.scaling - self.x_center, self.y_center - (r + 0.5) * self.scaling])

    def in_wall(self, xy: np.ndarray) -> np.ndarray:
        """Whether each point (..., 2) lies inside a wall cell (or outside the grid)."""
        xy = np.asarray(xy, dtype=np.float64)
        col = np.floor((xy[..., 0] + self.x_center) / self.scaling).astype(np.int64)
        row = np.floor((self.y_center - xy[..., 1]) / self.scaling).astype(np.int64)
        inside = (row >= 0) & (row < self.walls.shape[0]) & (col >= 0) & (col < self.walls.shape[1])
        out = np.ones(row.shape, bool)
        out[inside] = self.walls[row[inside], col[inside]]
        return out

    def path(self, start, goal) -> list[tuple[int, int]]:
        """Shortest 4-connected path of free cells from ``start`` to ``goal`` (both included)."""
        goal = tuple(goal)
        parents = self._paths.get(goal)
        if parents is None:  # BFS from the goal once; every start then walks to it
            parents = {goal: None}
            queue = deque([goal])
            while queue:
                r, c = queue.popleft()
                for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    n = (r + dr, c + dc)
                    if (0 <= n[0] < self.walls.shape[0] and 0 <= n[1] < self.walls.shape[1]
                            and not self.walls[n] and n not in parents):
                        parents[n] = (r, c)
                        queue.append(n)
            self._paths[goal] = parents
        start = tuple(start)
        if start not in parents:
            raise ValueError(f"cell {start} cannot reach {goal} (wall or disconnected)")
        out = [start]
        while out[-1] != goal:
            out.append(parents[out[-1]])
        return out


class MazeTask(gym.Env):
    """A PointMaze as a gymnasium env with dict observations ``state`` and ``goal``."""

    metadata = {"render_modes": []}

    def __init__(self, maze: str = "umaze"):
        try:
            import gymnasium_robotics
        except ImportError as e:
            raise ImportError("the PointMaze tasks need gymnasium-robotics: pip install 'dpctrl[maze]'") from e
        gym.register_envs(gymnasium_robotics)
        self.maze = maze_name(maze)
        self.env = gym.make(MAZES[self.maze], continuing_task=True, reset_target=False)
        self.max_steps = int(self.env.spec.max_episode_steps)
        u = self.env.unwrapped
        m = u.maze
        self.grid = MazeGrid(m.maze_map, m.maze_size_scaling, m.x_map_center, m.y_map_center)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Dict({
            "state": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
            "goal": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)})
        self.dt = DT
        self.steps = 0
        self.reached = False
        self.score = 0.0  # D4RL return: steps spent within SUCCESS_RADIUS of the goal
        self.path_length = 0.0  # distance travelled (m), until the goal was first reached

    def _obs(self, o: dict) -> dict:
        return {"state": np.asarray(o["observation"], np.float32), "goal": np.asarray(o["desired_goal"], np.float32)}

    def reset(self, *, seed: int | None = None, options=None):
        o, info = self.env.reset(seed=seed)
        self.steps, self.reached, self.score, self.path_length = 0, False, 0.0, 0.0
        self._pos = np.asarray(o["observation"][:2], np.float64)
        return self._obs(o), {"success": False}

    def set_goal(self, xy) -> None:
        """Move the goal (D4RL-style goal resampling while collecting)."""
        u = self.env.unwrapped
        u.goal = np.asarray(xy, np.float64).copy()
        u.update_target_site_pos()
        self.reached = False

    @property
    def goal(self) -> np.ndarray:
        return np.asarray(self.env.unwrapped.goal, np.float32)

    def step(self, action):
        action = np.asarray(action, np.float32)
        if action.shape != (2,) or not np.isfinite(action).all():
            raise ValueError(f"maze action must be 2 finite numbers, got {action!r}")
        o, _, _, _, info = self.env.unwrapped.step(np.clip(action, -1.0, 1.0))
        self.steps += 1
        obs = self._obs(o)
        at_goal = bool(np.linalg.norm(obs["state"][:2] - self.goal) <= SUCCESS_RADIUS)
        pos = obs["state"][:2].astype(np.float64)
        if not self.reached:
            self.path_length += float(np.linalg.norm(pos - self._pos))
        self._pos = pos
        self.reached = self.reached or at_goal
        self.score += float(at_goal)
        truncated = self.steps >= self.max_steps
        return obs, float(at_goal), False, truncated, {"success": self.reached, "at_goal": at_goal}


class MazeExpert:
    """BFS over the grid + PD waypoint tracking: ``act(obs) -> action``."""

    def __init__(self, grid: MazeGrid, kp: float = 10.0, kd: float = 1.0):
        self.grid, self.kp, self.kd = grid, kp, kd

    def reset(self, seed: int | None = None) -> None:
        pass

    def waypoint(self, pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
        path = self.grid.path(self.grid.cell(pos), self.grid.cell(goal))
        if len(path) == 1:
            return np.asarray(goal, np.float64)
        if len(path) >= 3 and (path[2][0] - path[1][0], path[2][1] - path[1][1]) == \
                (path[1][0] - path[0][0], path[1][1] - path[0][1]):
            return self.grid.center(path[2]) if len(path) > 3 else np.asarray(goal, np.float64)
        return self.grid.center(path[1]) if len(path) > 2 else np.asarray(goal, np.float64)

    def act(self, obs: dict) -> np.ndarray:
        state = np.asarray(obs["state"], np.float64)
        w = self.waypoint(state[:2], obs["goal"])
        return np.clip(self.kp * (w - state[:2]) - self.kd * state[2:], -1.0, 1.0).astype(np.float32)


def record_expert(task: MazeTask, seed: int, steps: int, rng: np.random.Generator | None = None) -> dict:
    """``steps`` expert steps from the seed's start; a new random goal cell each time the goal is
    reached (D4RL maze2d). Returns arrays ``state`` (T, 4), ``action`` (T, 2), ``goal`` (T, 2)
    and the number of goals reached."""
    rng = rng or np.random.default_rng(seed)
    expert = MazeExpert(task.grid)
    obs, _ = task.reset(seed=seed)
    states, actions, goals, reached = [], [], [], 0
    for _ in range(steps):
        a = expert.act(obs)
        states.append(obs["state"])
        actions.append(a)
        goals.append(obs["goal"])
        obs, _, _, _, info = task.step(a)
        if info["at_goal"]:
            reached += 1
            cells = [c for c in task.grid.free if c != task.grid.cell(obs["state"][:2])]
            cell = cells[rng.integers(len(cells))]
            task.set_goal(task.grid.center(cell) + rng.uniform(-0.25, 0.25, 2) * task.grid.scaling)
            obs = {**obs, "goal": task.goal}
    return {"state": np.stack(states), "action": np.stack(actions), "goal": np.stack(goals), "goals_reached": reached}


# ------------------------------------------------------------------ metrics
def run_simple(task: MazeTask, seed: int, act) -> dict:
    obs, _ = task.reset(seed=seed)
    for _ in range(task.max_steps):
        obs, *_ = task.step(act(obs))
    return {"seed": seed, "success": task.reached, "score": task.score, "path_length": task.path_length}


def baselines(maze: str, seeds: range) -> dict[str, list[dict]]:
    """The expert and a uniform-random policy on ``seeds`` (the normalised score's ends)."""
    task = MazeTask(maze)
    expert = MazeExpert(task.grid)
    rng = np.random.default_rng(0)
    return {"expert": [run_simple(task, s, expert.act) for s in seeds],
            "random": [run_simple(task, s, lambda o: rng.uniform(-1, 1, 2).astype(np.float32)) for s in seeds]}


def summarize_plans(rows: list[dict], base: dict, header: dict, latencies: list[float], in_wall: float | None) -> dict:
    score = np.mean([r["score"] for r in rows])
    r_exp, r_rand = (np.mean([r["score"] for r in base[k]]) for k in ("expert", "random"))
    both = [(r["path_length"], e["path_length"]) for r, e in zip(rows, base["expert"]) if r["success"] and e["success"]]
    out = {**header, "episodes": len(rows), "success_rate": float(np.mean([r["success"] for r in rows])),
           "score": float(score), "expert_score": float(r_exp), "random_score": float(r_rand),
           "normalized_score": float(100 * (score - r_rand) / max(r_exp - r_rand, 1e-9)),
           "expert_success_rate": float(np.mean([e["success"] for e in base["expert"]])),
           "path_length": float(np.mean([a for a, _ in both])) if both else None,
           "expert_path_length": float(np.mean([b for _, b in both])) if both else None,
           "path_length_ratio": float(np.mean([a for a, _ in both]) / np.mean([b for _, b in both])) if both else None,
           "plan_waypoints_in_walls": in_wall}
    if latencies:
        lat = np.asarray(latencies)
        out["plan_time_ms"] = {"p50": float(np.median(lat)), "mean": float(lat.mean()),
                               "p99": float(np.percentile(lat, 99)), "plans": len(lat)}
    out["per_episode"] = rows
    return out
