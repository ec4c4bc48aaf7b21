"""Scripted experts for the robosuite tasks: waypoint state machines over the observation.

Each expert reads only the documented observation dict (end-effector pose, gripper, the
task's object-state vector) and emits the env's 7-D action. Variation between episodes,
as in human demonstrations: per-episode randomized waypoints (hover height, grasp depth and
offset, lift height), speed, and a small smoothed Gaussian noise on the motion dimensions.
The gripper stays a binary-ish dimension (-1 open, +1 close), as in the real datasets.

Recoveries (``miss=True`` of the Lift, Stack and Can experts; ``MISSES`` lists them): the
experts never miss a grasp, so their data shows no way back from one, and a policy that closes
beside the object rises empty-handed and drifts out of the demonstrated states. A missing
expert aims its first grasp beside the object along the gripper's x axis (perpendicular to the
fingers' closing direction, so they close on air without touching it: 3.5-5 cm beside Lift's
and Stack's cubes, 5-6.5 cm beside the can, whose radius is 3.3 cm), starts to lift, notices 2-4 cm up that
the object stayed behind, and regrasps: open, hover, descend, close, lift. ``recovery_start`` is
the step from which such an episode shows the miss and the recovery (a few steps into the
close), so a dataset can keep that part and not teach the off-centre approach itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpctrl.envs.geometry import quat_to_mat, rot_z, rotvec_from_mat, wrap_half_turn, wrap_quarter_turn, yaw_of_quat

POS_SCALE = 0.05  # metres per unit action (robosuite OSC_POSE output_max)
ROT_SCALE = 0.5  # radians per unit action
GRIPPER_DOWN = np.diag([1.0, -1.0, -1.0])  # end-effector frame pointing at the table
OPEN, CLOSE = -1.0, 1.0


@dataclass
class Waypoint:
    """Move the end effector to ``pos`` with yaw ``yaw`` and the gripper at ``grip``; done when
    within ``tol`` metres (and ``hold`` steps have passed since arriving)."""
    pos: np.ndarray
    yaw: float
    grip: float
    tol: float = 0.01
    hold: int = 0


class _Expert:
    """Shared motion law: saturated P-control on position and orientation, smoothed noise."""

    def __init__(self, noise_std: float = 0.05):
        self.noise_std = noise_std
        self.reset(0)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.gain = self.rng.uniform(0.7, 1.1)  # fraction of the error closed per step
        self.max_speed = self.rng.uniform(0.6, 1.0)  # action-units cap on translation
        self._noise = np.zeros(6)
        self._steps = 0  # act() calls since reset
        self._phase = 0
        self._held = 0
        self._grasp: np.ndarray | None = None
        self._plan: dict[str, float] = {}

    def _motion(self, obs: dict, wp: Waypoint) -> np.ndarray:
        err = wp.pos - obs["robot0_eef_pos"]
        move = self.gain * err / POS_SCALE
        norm = np.linalg.norm(move)
        if norm > self.max_speed:
            move *= self.max_speed / norm
        r_err = rot_z(wp.yaw) @ GRIPPER_DOWN @ quat_to_mat(obs["robot0_eef_quat"]).T
        rot = np.clip(rotvec_from_mat(r_err) / ROT_SCALE, -1.0, 1.0)
        self._noise = 0.7 * self._noise + 0.3 * self.rng.normal(0, self.noise_std, 6) / 0.3 ** 0.5
        action = np.concatenate([move, rot]) + self._noise * np.r_[1, 1, 1, 0.3, 0.3, 0.3]
        return np.concatenate([np.clip(action, -1.0, 1.0), [wp.grip]]).astype(np.float32)

    def _advance(self, obs: dict, wp: Waypoint) -> bool:
        if np.linalg.norm(wp.pos - obs["robot0_eef_pos"]) < wp.tol:
            self._held += 1
            if self._held > wp.hold:
                self._held = 0
                return True
        return False

    def waypoints(self, obs: dict) -> list[Waypoint]:
        raise NotImplementedError

    def _grasp_point(self, cube: np.ndarray) -> np.ndarray:
        """Follows the cube until the gripper starts closing, then stays where it was grasped."""
        p = self._plan
        if self._phase < 2 or self._grasp is None:
            self._grasp = cube + [p["dx"], p["dy"], p["depth"]]
        return self._grasp

    def _plan_miss(self, seed: int | None, miss: tuple[float, float]) -> None:
        """The recovery plan (module docstring): how far beside the object the first grasp aims
        when ``self.miss``, and how high the hand rises before it notices. A stream of its own,
        so that a seed's regular demonstration is what it was before recoveries existed."""
        m = np.random.default_rng(None if seed is None else [seed, 1])
        self._plan.update(notice=m.uniform(0.02, 0.04), miss=m.choice([-1.0, 1.0]) * m.uniform(*miss))
        self._aim = np.zeros(3)  # the first grasp's deliberate offset (miss=True)
        self.regrasps = 0
        self.recovery_start: int | None = None

    def _aim_first_grasp(self, yaw: float) -> None:
        if getattr(self, "miss", False):
            self._aim = rot_z(yaw) @ np.array([self._plan["miss"], 0.0, 0.0])

    def _notice_miss(self, obs: dict, obj: np.ndarray) -> None:
        """Phase 2 is the close and phase 3 the rise: an object that stayed behind while the hand
        rose ``notice`` above the grasp height is a miss; start over (without the offset)."""
        if self._phase == 2 and self.recovery_start is None and self._aim.any():
            self.recovery_start = self._steps + 3
        if self._phase == 3 and obs["robot0_eef_pos"][2] - obj[2] > self._plan["depth"] + self._plan["notice"]:
            self._phase, self._grasp, self._held, self._aim = 0, None, 0, np.zeros(3)
            self.regrasps += 1

    def act(self, obs: dict) -> np.ndarray:
        """One action ``(7,)`` for the current observation."""
        wps = self.waypoints(obs)
        self._steps += 1
        if self._phase < len(wps) - 1 and self._advance(obs, wps[self._phase]):
            self._phase += 1
        return self._motion(obs, wps[self._phase])

    __call__ = act


def _grasp_yaw(cube_quat: np.ndarray, eef_quat: np.ndarray) -> float:
    """Gripper yaw that lines the fingers up with the nearest pair of cube faces."""
    eef_yaw = yaw_of_quat(eef_quat)
    return eef_yaw + wrap_quarter_turn(yaw_of_quat(cube_quat) - eef_yaw)


class LiftExpert(_Expert):
    """Hover over the cube, descend, close, lift; regrasp when the cube stays behind.

    ``miss``: aim the first grasp beside the cube (module docstring, Recoveries)."""

    def __init__(self, noise_std: float = 0.05, miss: bool = False):
        self.miss = miss
        super().__init__(noise_std)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        r = self.rng
        self._plan = dict(hover=r.uniform(0.06, 0.12), depth=r.uniform(-0.005, 0.005),
                          dx=r.uniform(-0.008, 0.008), dy=r.uniform(-0.008, 0.008), lift=r.uniform(0.12, 0.2),
                          close_steps=int(r.integers(6, 12)))
        self._plan_miss(seed, (0.035, 0.05))
        self._yaw: float | None = None

    def waypoints(self, obs: dict) -> list[Waypoint]:
        p = self._plan
        if self._yaw is None:
            self._yaw = _grasp_yaw(obs["object"][3:7], obs["robot0_eef_quat"])
            self._aim_first_grasp(self._yaw)
        cube = obs["object"][:3]
        self._notice_miss(obs, cube)
        grasp = self._grasp_point(cube + self._aim)
        return [
            Waypoint(grasp + [0, 0, p["hover"]], self._yaw, OPEN, tol=0.015),
            Waypoint(grasp, self._yaw, OPEN, tol=0.008),
            Waypoint(grasp, self._yaw, CLOSE, tol=0.02, hold=p["close_steps"]),
            Waypoint(grasp + [0, 0, p["lift"]], self._yaw, CLOSE),
        ]


class StackExpert(_Expert):
    """Pick cube A (the small one) as in Lift, carry it over cube B, lower, release, retreat;
    regrasp when cube A stays behind.

    ``miss``: aim the first grasp beside cube A (module docstring, Recoveries)."""

    def __init__(self, noise_std: float = 0.05, miss: bool = False):
        self.miss = miss
        super().__init__(noise_std)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        r = self.rng
        self._plan = dict(hover=r.uniform(0.06, 0.12), depth=r.uniform(-0.004, 0.004),
                          dx=r.uniform(-0.006, 0.006), dy=r.uniform(-0.006, 0.006),
                          carry=r.uniform(0.08, 0.12), drop=r.uniform(0.005, 0.015),
                          close_steps=int(r.integers(6, 12)), open_steps=int(r.integers(4, 8)))
        self._plan_miss(seed, (0.035, 0.05))
        self._yaw: float | None = None
        self._grasp_offset: np.ndarray | None = None

    def waypoints(self, obs: dict) -> list[Waypoint]:
        p = self._plan
        o = obs["object"]
        cube_a, quat_a, cube_b = o[:3], o[3:7], o[7:10]
        eef = obs["robot0_eef_pos"]
        if self._yaw is None:
            self._yaw = _grasp_yaw(quat_a, obs["robot0_eef_quat"])
            self._aim_first_grasp(self._yaw)
        self._notice_miss(obs, cube_a)
        grasp = self._grasp_point(cube_a + self._aim)
        if self._phase < 3:
            self._grasp_offset = None
        elif self._grasp_offset is None:  # where cube A sits in the hand, once it is held
            self._grasp_offset = eef - cube_a
        # place cube A's centre this far above cube B's centre: half sizes 0.025 + 0.02
        above_b = cube_b + [0, 0, 0.045 + p["drop"]]
        hand = self._grasp_offset if self._grasp_offset is not None else np.zeros(3)
        return [
            Waypoint(grasp + [0, 0, p["hover"]], self._yaw, OPEN, tol=0.015),
            Waypoint(grasp, self._yaw, OPEN, tol=0.008),
            Waypoint(grasp, self._yaw, CLOSE, tol=0.02, hold=p["close_steps"]),
            Waypoint(grasp + [0, 0, p["carry"]], self._yaw, CLOSE, tol=0.02),
            Waypoint(above_b + hand + [0, 0, p["carry"] - 0.02], self._yaw, CLOSE, tol=0.01),
            Waypoint(above_b + hand, self._yaw, CLOSE, tol=0.006, hold=2),
            Waypoint(above_b + hand, self._yaw, OPEN, tol=0.05, hold=p["open_steps"]),
            Waypoint(above_b + hand + [0, 0, 0.08], self._yaw, OPEN),
        ]


# PickPlaceCan: the can's bin is the far right quarter of bin 2 (x 0.10-0.295, y 0.28-0.525;
# success: its centre over that quarter, below the rim, the hand at least 4.2 cm away). The
# quarter's centre (0.1975, 0.4025) is at the edge of the Panda's reach (it stops 5 cm short),
# so the expert aims at the quarter's near part, 6 cm inside its near edges.
CAN_BIN = np.array([0.16, 0.34])
CAN_REST_Z = 0.86  # the can's centre standing on either bin's floor


class CanExpert(_Expert):
    """Pick the can from bin 1 (a top grasp at the start yaw: it is round), carry it over the
    walls to its quarter of bin 2, lower, release, rise; regrasp when the can stays behind.

    ``miss``: aim the first grasp beside the can (module docstring, Recoveries)."""

    def __init__(self, noise_std: float = 0.05, miss: bool = False):
        self.miss = miss
        super().__init__(noise_std)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        r = self.rng
        self._plan = dict(hover=r.uniform(0.05, 0.1), depth=r.uniform(0.012, 0.025),
                          dx=r.uniform(-0.006, 0.006), dy=r.uniform(-0.006, 0.006), carry=r.uniform(1.0, 1.06),
                          tx=r.uniform(-0.015, 0.015), ty=r.uniform(-0.02, 0.02), drop=r.uniform(0.01, 0.04),
                          close_steps=int(r.integers(6, 12)), open_steps=int(r.integers(4, 8)))
        self._plan_miss(seed, (0.05, 0.065))
        self._yaw: float | None = None
        self._hand: np.ndarray | None = None

    def waypoints(self, obs: dict) -> list[Waypoint]:
        p, can, eef = self._plan, obs["object"][7:10], obs["robot0_eef_pos"]
        if self._yaw is None:
            self._yaw = yaw_of_quat(obs["robot0_eef_quat"])
            self._aim_first_grasp(self._yaw)
        self._notice_miss(obs, can)
        grasp = self._grasp_point(can + self._aim)
        if self._phase < 3:
            self._hand = None
        elif self._hand is None:  # where the can sits in the hand, once it is held
            self._hand = eef - can
        hand = self._hand if self._hand is not None else np.zeros(3)
        place = np.r_[CAN_BIN + [p["tx"], p["ty"]], CAN_REST_Z + p["drop"]] + hand
        y = self._yaw
        return [
            Waypoint(grasp + [0, 0, p["hover"]], y, OPEN, tol=0.015),
            Waypoint(grasp, y, OPEN, tol=0.008),
            Waypoint(grasp, y, CLOSE, tol=0.02, hold=p["close_steps"]),
            Waypoint(np.r_[grasp[:2], p["carry"]], y, CLOSE, tol=0.03),
            Waypoint(np.r_[place[:2], p["carry"]], y, CLOSE, tol=0.02),
            Waypoint(place, y, CLOSE, tol=0.02),  # within 2 cm: the can may touch down a little early
            Waypoint(place, y, OPEN, tol=0.05, hold=p["open_steps"]),
            Waypoint(place + [0, 0, 0.1], y, OPEN),
        ]


# NutAssemblySquare: the square peg (pegs_arena.xml: peg1, 16 mm half-width, top at z 0.95) and
# the nut (square-nut.xml: the handle's centre 54 mm from the hole's along the nut's x axis, the
# hole 22.7 mm half-width). Success: the nut's centre within 3 cm of the peg's axis, under 0.87.
SQUARE_PEG = np.array([0.23, 0.1])
NUT_HANDLE = 0.054
NUT_REST_Z = 0.83  # the nut's centre lying on the table


class SquareExpert(_Expert):
    """Grasp the square nut by its handle (fingers across it), lift it over the peg's top, turn
    it so the handle points at the robot (or to a side, when that is a much shorter turn: the
    far side of the peg is at the edge of the arm's reach), centre the hole on the peg, lower."""

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        r = self.rng
        self._plan = dict(hover=r.uniform(0.05, 0.1), depth=r.uniform(0.004, 0.01),
                          along=r.uniform(-0.006, 0.01), dy=r.uniform(-0.003, 0.003), carry=r.uniform(0.985, 1.01),
                          close_steps=int(r.integers(6, 12)), settle=int(r.integers(2, 6)))
        self._yaw: float | None = None
        self._nut_goal: float | None = None
        self.regrasps = 0

    def waypoints(self, obs: dict) -> list[Waypoint]:
        p, o, eef = self._plan, obs["object"], obs["robot0_eef_pos"]
        nut, nut_yaw = o[7:10], yaw_of_quat(o[10:14])
        eef_yaw = yaw_of_quat(obs["robot0_eef_quat"])
        if self._phase >= 3 and obs["robot0_gripper_qpos"][0] < 0.005:  # closed on air: regrasp
            self._phase, self._grasp, self._held, self._yaw, self._nut_goal = 0, None, 0, None, None
            self.regrasps += 1
        if self._yaw is None:  # fingers close along the gripper's y: line them up across the handle
            self._yaw = eef_yaw + wrap_half_turn(nut_yaw - eef_yaw)
        if self._phase < 2 or self._grasp is None:
            self._grasp = nut + rot_z(nut_yaw) @ [NUT_HANDLE + p["along"], p["dy"], p["depth"]]
        grasp, y = self._grasp, self._yaw
        if self._phase >= 4 and self._nut_goal is None:  # the nut's yaw over the peg, chosen once
            self._nut_goal = min((np.pi, np.pi / 2, -np.pi / 2),
                                 key=lambda g: abs(wrap_half_turn((g - nut_yaw) / 2) * 2) + 0.8 * (g != np.pi))
        # once held: turn the hand with the nut to its goal yaw, and put the hole (the nut's
        # centre, as it hangs in the hand now) over the peg
        turn = 2 * wrap_half_turn((self._nut_goal - nut_yaw) / 2) if self._nut_goal is not None else 0.0
        place_yaw = eef_yaw + turn
        hole = rot_z(turn) @ (nut - eef)  # the nut's centre from the hand, after the turn
        over_peg = np.r_[SQUARE_PEG - hole[:2], p["carry"]]
        down = np.r_[over_peg[:2], NUT_REST_Z + 0.005 - hole[2]]
        return [
            Waypoint(grasp + [0, 0, p["hover"]], y, OPEN, tol=0.015),
            Waypoint(grasp, y, OPEN, tol=0.008),
            Waypoint(grasp, y, CLOSE, tol=0.02, hold=p["close_steps"]),
            Waypoint(np.r_[grasp[:2], p["carry"]], y, CLOSE, tol=0.03),
            Waypoint(over_peg, place_yaw, CLOSE, tol=0.006, hold=p["settle"]),
            Waypoint(down, place_yaw, CLOSE, tol=0.01),
            Waypoint(down, place_yaw, OPEN, tol=0.05, hold=4),
            Waypoint(down + [0, 0, 0.1], place_yaw, OPEN),
        ]


EXPERTS = {"lift": LiftExpert, "stack": StackExpert, "can": CanExpert, "square": SquareExpert}
MISSES = ("lift", "stack", "can")  # the experts that can miss on purpose (miss=True): recovery episodes
