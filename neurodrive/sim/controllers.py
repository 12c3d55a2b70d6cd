"""Tracking a planned trajectory: pure pursuit for steering, proportional speed control."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurodrive.sim.paths import Polyline
from neurodrive.sim.vehicle import Control, EgoState, VehicleParameters


@dataclass(frozen=True)
class Trajectory:
    """A plan: waypoints in the world frame with the speed wanted at each."""

    xy_m: np.ndarray  # (K, 2), K >= 2, ordered along the way
    speed_mps: np.ndarray  # (K,)

    def __post_init__(self) -> None:
        xy = np.asarray(self.xy_m, float).reshape(-1, 2)
        speed = np.broadcast_to(np.asarray(self.speed_mps, float), (len(xy),)).copy()
        if not (np.all(np.isfinite(xy)) and np.all(np.isfinite(speed))):
            raise ValueError("trajectory waypoints and speeds must be finite")
        keep = np.concatenate([[True], np.linalg.norm(np.diff(xy, axis=0), axis=1) > 1e-6])  # as Polyline does
        xy, speed = xy[keep], speed[keep]
        if len(xy) < 2:
            raise ValueError("a trajectory needs at least two distinct waypoints")
        object.__setattr__(self, "xy_m", xy)
        object.__setattr__(self, "speed_mps", np.maximum(speed, 0.0))


@dataclass(frozen=True)
class PurePursuitConfig:
    lookahead_time_s: float = 0.9  # lookahead distance = speed * this, at least min_lookahead_m
    min_lookahead_m: float = 4.0
    speed_gain_per_s: float = 1.5  # acceleration per m/s of speed error
    speed_preview_s: float = 0.3  # speed is read this far ahead on the plan


class PurePursuitController:
    """Turns a trajectory into (acceleration, steering) for the kinematic bicycle."""

    def __init__(
        self, params: VehicleParameters = VehicleParameters(), config: PurePursuitConfig = PurePursuitConfig()
    ) -> None:
        self.params = params
        self.config = config

    def control(self, state: EgoState, plan: Trajectory) -> Control:
        cfg = self.config
        path = Polyline(plan.xy_m)
        line = path.extended(0.0, 50.0)
        s_here = float(line.project(np.array([state.x_m, state.y_m]))[0])
        lookahead = max(cfg.min_lookahead_m, state.speed_mps * cfg.lookahead_time_s)
        target = line.position(s_here + lookahead)
        dx, dy = target[0] - state.x_m, target[1] - state.y_m
        alpha = np.arctan2(dy, dx) - state.yaw_rad
        steer = np.arctan2(2.0 * self.params.wheelbase_m * np.sin(alpha), max(np.hypot(dx, dy), 1e-3))
        plan_s = path.cumulative_m
        s_speed = s_here + state.speed_mps * cfg.speed_preview_s
        wanted = float(np.interp(s_speed, plan_s, plan.speed_mps))
        accel = cfg.speed_gain_per_s * (wanted - state.speed_mps)
        return Control(float(accel), float(steer))
