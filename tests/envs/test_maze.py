"""PointMaze tasks and the BFS + PD expert."""
import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")

from dpctrl.envs.maze import SUCCESS_RADIUS, MazeExpert, MazeTask, maze_name, record_expert  # noqa: E402


@pytest.fixture(scope="module")
def medium():
    return MazeTask("medium")


def test_grid_geometry_and_shortest_paths(medium):
    g = medium.grid
    for cell in g.free:
        assert g.cell(g.center(cell)) == cell and not g.in_wall(g.center(cell))
    assert g.in_wall(np.array([[-100.0, 0.0]]))[0]  # outside the maze counts as wall
    a, b = g.free[0], g.free[-1]
    path = g.path(a, b)
    assert path[0] == a and path[-1] == b and len(set(path)) == len(path)
    for p, q in zip(path, path[1:]):  # 4-connected steps through free cells
        assert abs(p[0] - q[0]) + abs(p[1] - q[1]) == 1 and not g.walls[q]
    # shortest: BFS from the other end gives the same length
    assert len(g.path(b, a)) == len(path)
    with pytest.raises(ValueError, match="cannot reach"):
        g.path((0, 0), b)  # a wall cell


def test_expert_solves_held_out_episodes(medium):
    expert = MazeExpert(medium.grid)
    for seed in range(100000, 100005):
        obs, _ = medium.reset(seed=seed)
        for _ in range(medium.max_steps):
            obs, r, term, trunc, info = medium.step(expert.act(obs))
            if trunc:
                break
        assert info["success"], seed
        assert medium.score > 0 and medium.path_length > 0
        assert np.linalg.norm(obs["state"][:2] - obs["goal"]) <= SUCCESS_RADIUS  # and it stays there


def test_record_expert_resamples_goals_and_refuses_bad_actions():
    task = MazeTask("umaze")
    d = record_expert(task, seed=0, steps=1500)
    assert d["state"].shape == (1500, 4) and d["action"].shape == (1500, 2) and d["goal"].shape == (1500, 2)
    assert d["goals_reached"] >= 5 and len(np.unique(d["goal"], axis=0)) == d["goals_reached"] + 1
    assert np.abs(d["action"]).max() <= 1.0
    with pytest.raises(ValueError, match="finite"):
        task.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="unknown maze"):
        maze_name("maze:huge")
