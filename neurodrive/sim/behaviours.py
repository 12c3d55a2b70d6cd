"""How the other actors move: log replay, timed trajectories, and reactive IDM along a path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from neurodrive.geometry import wrap_angle, yaw_of
from neurodrive.logs.model import ActorTrack
from neurodrive.sim.paths import Polyline
from neurodrive.sim.state import ActorState


class ActorBehaviour(Protocol):
    actor_id: str

    def state_at_start(self, time_s: float) -> ActorState | None:
        """The actor at the episode start (None while it is not in the scene)."""

    def step(self, time_s: float, agents: list[ActorState], dt_s: float) -> ActorState | None:
        """The actor at ``time_s + dt_s`` given every agent now (the ego as a box among them)."""


def _wrap(angle: np.ndarray | float) -> np.ndarray | float:
    return wrap_angle(angle)


class TimedTrajectory:
    """Follows timed poses (times_s (K,), xyz (K, 3), yaw (K,)); holds the first pose before the
    first time and continues at constant velocity after the last. Used for log replay and for
    inserted actors with a scripted trajectory."""

    def __init__(
        self,
        actor_id: str,
        category: str,
        size_m: tuple[float, float, float],
        times_s: np.ndarray,
        xyz_m: np.ndarray,
        yaw_rad: np.ndarray,
        appears_at_first: bool = False,
    ) -> None:
        self.actor_id, self.category, self.size_m = actor_id, category, tuple(float(v) for v in size_m)
        order = np.argsort(times_s, kind="stable")
        self.times_s = np.asarray(times_s, float)[order]
        self.xyz_m = np.asarray(xyz_m, float).reshape(-1, 3)[order]
        self.yaw_rad = np.unwrap(np.asarray(yaw_rad, float)[order])
        self.appears_at_first = appears_at_first  # absent before the first time (log tracks that start late)
        if len(self.times_s) > 1:
            dt = np.maximum(np.diff(self.times_s), 1e-6)
            v = np.diff(self.xyz_m[:, :2], axis=0) / dt[:, None]
            self._end_velocity = v[-1]
            self.segment_speed_mps = np.concatenate(
                [np.linalg.norm(v, axis=1), [np.linalg.norm(v[-1])]]
            )  # (K,) m/s from each time on
        else:
            self._end_velocity = np.zeros(2)
            self.segment_speed_mps = np.zeros(1)

    def at(self, time_s: float) -> ActorState | None:
        t = self.times_s
        if self.appears_at_first and time_s < t[0] - 1e-9:
            return None
        if time_s > t[-1]:
            xy = self.xyz_m[-1, :2] + self._end_velocity * (time_s - t[-1])
            z, yaw, speed = self.xyz_m[-1, 2], self.yaw_rad[-1], float(np.linalg.norm(self._end_velocity))
        else:
            xy = np.array([np.interp(time_s, t, self.xyz_m[:, 0]), np.interp(time_s, t, self.xyz_m[:, 1])])
            z = np.interp(time_s, t, self.xyz_m[:, 2])
            yaw = np.interp(time_s, t, self.yaw_rad)
            k = int(np.clip(np.searchsorted(t, time_s, side="right") - 1, 0, len(t) - 1))
            speed = float(self.segment_speed_mps[k]) if time_s >= t[0] else 0.0
        return ActorState(
            self.actor_id, self.category, float(xy[0]), float(xy[1]), float(z), float(_wrap(yaw)), speed, self.size_m
        )

    def state_at_start(self, time_s: float) -> ActorState | None:
        return self.at(time_s)

    def step(self, time_s: float, agents: list[ActorState], dt_s: float) -> ActorState | None:
        return self.at(time_s + dt_s)


def log_replay(track: ActorTrack, timestamps_s: np.ndarray, time_offset_s: float = 0.0) -> TimedTrajectory:
    """Replays a logged track; episode time 0 is log time ``time_offset_s``."""
    valid = np.flatnonzero(track.valid)
    poses = track.poses[valid]
    return TimedTrajectory(
        track.actor_id,
        track.category,
        tuple(track.size_m),
        timestamps_s[valid] - time_offset_s,
        poses[:, :3, 3],
        np.asarray(yaw_of(poses)),
        appears_at_first=valid[0] > 0,
    )


@dataclass(frozen=True)
class IDMConfig:
    """Intelligent Driver Model (Treiber et al. 2000)."""

    max_accel_mps2: float = 1.5
    comfortable_decel_mps2: float = 2.0
    time_headway_s: float = 1.5
    min_gap_m: float = 2.0
    exponent: float = 4.0
    max_decel_mps2: float = 9.0
    lookahead_m: float = 60.0
    lateral_margin_m: float = 0.3  # an agent blocks the path when its box overlaps the path's corridor


def idm_acceleration(
    speed_mps: float, desired_mps: float, gap_m: float | None, closing_mps: float, cfg: IDMConfig
) -> float:
    free = 1.0 - (speed_mps / max(desired_mps, 0.1)) ** cfg.exponent
    if gap_m is None:
        return float(np.clip(cfg.max_accel_mps2 * free, -cfg.max_decel_mps2, cfg.max_accel_mps2))
    wanted = cfg.min_gap_m + max(
        0.0,
        speed_mps * cfg.time_headway_s
        + speed_mps * closing_mps / (2 * np.sqrt(cfg.max_accel_mps2 * cfg.comfortable_decel_mps2)),
    )
    accel = cfg.max_accel_mps2 * (free - (wanted / max(gap_m, 0.1)) ** 2)
    return float(np.clip(accel, -cfg.max_decel_mps2, cfg.max_accel_mps2))


def leader_on_path(
    path: Polyline, s_m: float, length_m: float, width_m: float, others: list[ActorState], cfg: IDMConfig
) -> tuple[float | None, float]:
    """Bumper-to-bumper gap (m) to the nearest agent ahead on ``path`` and that agent's speed along it."""
    if not others:
        return None, 0.0
    xy = np.array([[o.x_m, o.y_m] for o in others])
    s, lateral = path.project(xy)
    heading = path.heading(s)
    best, speed = None, 0.0
    for k, o in enumerate(others):
        ahead = s[k] - s_m
        if ahead <= 0 or ahead > cfg.lookahead_m:
            continue
        if abs(lateral[k]) > 0.5 * (width_m + o.size_m[1]) + cfg.lateral_margin_m:
            continue
        gap = ahead - 0.5 * (length_m + o.size_m[0])
        if best is None or gap < best:
            best, speed = gap, float(o.speed_mps * np.cos(o.yaw_rad - heading[k]))
    return best, speed


@dataclass(frozen=True)
class IDMStart:
    """Where an IDM follower drives and how it starts.

    Attributes:
        path: the path it follows (world frame, m).
        s_m: its arc length on the path at the start.
        speed_mps: its speed at the start.
        desired_speed_mps: the speed it drives at on a free road.
        z_m: the height of its box centre.
        time_s: before this time it waits at its start.
    """

    path: Polyline
    s_m: float
    speed_mps: float
    desired_speed_mps: float
    z_m: float
    time_s: float = 0.0


class IDMFollower:
    """Drives along a path at a desired speed and brakes for the ego and others (reactive)."""

    def __init__(
        self, actor_id: str, category: str, size_m: tuple[float, float, float], start: IDMStart, config: IDMConfig
    ) -> None:
        self.actor_id, self.category, self.size_m = actor_id, category, tuple(float(v) for v in size_m)
        self.path, self.z_m, self.config = start.path, start.z_m, config
        self.start_s_m, self.start_speed_mps, self.desired_speed_mps = (
            start.s_m,
            start.speed_mps,
            start.desired_speed_mps,
        )
        self.start_time_s = start.time_s  # before it, the actor waits at its start
        self._s, self._v = start.s_m, start.speed_mps

    def _state(self) -> ActorState:
        xy = self.path.position(self._s)
        return ActorState(
            self.actor_id,
            self.category,
            float(xy[0]),
            float(xy[1]),
            self.z_m,
            float(self.path.heading(self._s)),
            self._v,
            self.size_m,
        )

    def state_at_start(self, time_s: float) -> ActorState | None:
        self._s, self._v = self.start_s_m, self.start_speed_mps if time_s >= self.start_time_s else 0.0
        return self._state()

    def step(self, time_s: float, agents: list[ActorState], dt_s: float) -> ActorState | None:
        if time_s + dt_s < self.start_time_s:
            self._v = 0.0
            return self._state()
        if time_s < self.start_time_s:
            self._v = self.start_speed_mps
        others = [a for a in agents if a.actor_id != self.actor_id]
        gap, lead_speed = leader_on_path(self.path, self._s, self.size_m[0], self.size_m[1], others, self.config)
        accel = idm_acceleration(self._v, self.desired_speed_mps, gap, self._v - lead_speed, self.config)
        new_v = max(0.0, self._v + accel * dt_s)
        self._s += 0.5 * (self._v + new_v) * dt_s
        self._v = new_v
        return self._state()


def idm_from_track(
    track: ActorTrack,
    timestamps_s: np.ndarray,
    start_frame: int,
    config: IDMConfig = IDMConfig(),
    time_offset_s: float = 0.0,
) -> IDMFollower | TimedTrajectory:
    """Reactive version of a logged actor: IDM along its logged path (static actors stay put)."""
    replay = log_replay(track, timestamps_s, time_offset_s)
    valid = np.flatnonzero(track.valid)
    xy = track.poses[valid, :2, 3]
    if track.is_static() or len(valid) < 2 or np.linalg.norm(xy[-1] - xy[0]) < 1.0:
        return replay
    path = Polyline(xy).extended(0.0, 300.0)
    first = valid[valid >= start_frame][0] if np.any(valid >= start_frame) else valid[-1]
    s0 = float(path.project(track.poses[first, :2, 3])[0])
    speeds = replay.segment_speed_mps
    start_speed = float(speeds[min(int(np.searchsorted(valid, first)), len(speeds) - 1)])
    start = IDMStart(
        path,
        s0,
        start_speed,
        max(float(speeds.max()), 1.0),
        float(track.poses[first, 2, 3]),
        float(timestamps_s[first] - time_offset_s),
    )
    return IDMFollower(track.actor_id, track.category, tuple(track.size_m), start, config)
