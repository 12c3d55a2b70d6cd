"""Action types of the Gymnasium environment: ``space()`` and ``command(action, observation)`` to
a simulator command, each configured by its own small frozen config beside it (``setup(params)``
builds the type); ``action_factory`` picks one by name."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from neurodrive.geometry import from_frame_xy
from neurodrive.sim.controllers import Trajectory
from neurodrive.sim.types import Observation
from neurodrive.sim.vehicle import Control, VehicleParameters


def _finite(action: np.ndarray) -> np.ndarray:
    a = np.asarray(action, float)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action: contains NaN or infinite values: {a.tolist()}")
    return a


@dataclass(frozen=True)
class ContinuousActionConfig:
    """Attributes:
    max_steering_rad: the steering angle of action +1 / -1 (rad).
    """

    max_steering_rad: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.max_steering_rad <= 1.5:
            raise ValueError(f"continuous.max_steering_rad must be within (0, 1.5] rad, got {self.max_steering_rad}")

    def setup(self, params: VehicleParameters) -> ContinuousAction:
        return ContinuousAction(params, self.max_steering_rad)


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


@dataclass(frozen=True)
class WaypointActionConfig:
    """Attributes:
    count: K, the number of ego-frame waypoints in an action.
    spacing_s: time between consecutive waypoints (s).
    """

    count: int = 5
    spacing_s: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 100:
            raise ValueError(f"waypoints.count must be within 1 .. 100, got {self.count}")
        if not 0.05 <= self.spacing_s <= 10.0:
            raise ValueError(f"waypoints.spacing_s must be within 0.05 .. 10 s, got {self.spacing_s}")

    def setup(self, params: VehicleParameters) -> WaypointAction:
        return WaypointAction(params, self.count, self.spacing_s)


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


def action_factory(
    action_type: str,
    continuous: ContinuousActionConfig,
    waypoints: WaypointActionConfig,
    params: VehicleParameters,
) -> ContinuousAction | WaypointAction:
    """The action type named ``action_type``, built from its config."""
    if action_type == "continuous":
        return continuous.setup(params)
    if action_type == "waypoints":
        return waypoints.setup(params)
    raise ValueError(f"action_type must be 'continuous' or 'waypoints', got {action_type!r}")
