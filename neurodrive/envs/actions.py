"""Action types of the Gymnasium environment: ``space()`` and ``command(action, observation)`` to
a simulator command; ``action_factory`` picks one from the config."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from gymnasium import spaces

from neurodrive.geometry import from_frame_xy
from neurodrive.sim.controllers import Trajectory
from neurodrive.sim.types import Observation
from neurodrive.sim.vehicle import Control, VehicleParameters

if TYPE_CHECKING:
    from neurodrive.envs.closed_loop import EnvConfig


def _finite(action: np.ndarray) -> np.ndarray:
    a = np.asarray(action, float)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action: contains NaN or infinite values: {a.tolist()}")
    return a


class ContinuousAction:
    """Box(-1, 1, (2,)): normalised acceleration (scaled to the vehicle's limits) and steering."""

    def __init__(self, params: VehicleParameters, max_steering_rad: float) -> None:
        self.params, self.max_steering_rad = params, max_steering_rad

    def space(self) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (2,), np.float32)

    def command(self, action: np.ndarray, obs: Observation) -> Control:
        a = np.clip(_finite(action).reshape(2), -1.0, 1.0)
        accel = a[0] * (self.params.max_accel_mps2 if a[0] >= 0 else self.params.max_decel_mps2)
        return Control(float(accel), float(a[1] * self.max_steering_rad))


class WaypointAction:
    """Box (K, 2): ego-frame points ``spacing_s`` apart, tracked by pure pursuit."""

    def __init__(self, params: VehicleParameters, count: int, spacing_s: float) -> None:
        self.params, self.count, self.spacing_s = params, count, spacing_s
        self.low = np.tile(np.array([-5.0, -20.0], np.float32), (count, 1))
        self.high = np.tile(np.array([60.0, 20.0], np.float32), (count, 1))

    def space(self) -> spaces.Box:
        return spaces.Box(self.low, self.high, dtype=np.float32)

    def command(self, action: np.ndarray, obs: Observation) -> Control | Trajectory:
        pts = np.clip(_finite(action).reshape(-1, 2), self.low, self.high)
        e = obs.ego
        xy = np.vstack([[e.x_m, e.y_m], from_frame_xy(pts, e.x_m, e.y_m, e.yaw_rad)])
        speeds = np.linalg.norm(np.diff(xy, axis=0), axis=1) / self.spacing_s
        speeds = np.concatenate([speeds[:1], speeds])
        if np.linalg.norm(xy[-1] - xy[0]) < 0.5:  # asked to stand still
            xy = np.stack([xy[0], xy[0] + [np.cos(e.yaw_rad), np.sin(e.yaw_rad)]])
            speeds = np.zeros(2)
        keep = np.concatenate([[True], np.linalg.norm(np.diff(xy, axis=0), axis=1) > 1e-3])
        if keep.sum() < 2:
            return Control(-self.params.max_decel_mps2, 0.0)
        return Trajectory(xy[keep], speeds[keep])


def action_factory(config: EnvConfig, params: VehicleParameters) -> ContinuousAction | WaypointAction:
    if config.action_type == "continuous":
        return ContinuousAction(params, config.max_steering_rad)
    if config.action_type == "waypoints":
        return WaypointAction(params, config.num_waypoints, config.waypoint_spacing_s)
    raise ValueError(f"action_type must be 'continuous' or 'waypoints', got {config.action_type!r}")
