"""World state: the ego and the other actors at one instant."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from neurodrive.geometry import pose_xyz_yaw
from neurodrive.sim.vehicle import EgoState, VehicleParameters

ArrayOrFloat = np.ndarray | float  # one box or many


@dataclass(frozen=True)
class ActorState:
    actor_id: str
    category: str  # "car", "pedestrian", ...
    x_m: float  # box centre, world frame
    y_m: float
    z_m: float
    yaw_rad: float
    speed_mps: float
    size_m: tuple[float, ...]  # length, width, height

    def pose(self) -> np.ndarray:
        """T_world_box (4, 4)."""
        return pose_xyz_yaw(self.x_m, self.y_m, self.z_m, self.yaw_rad)

    def velocity_xy(self) -> np.ndarray:
        return self.speed_mps * np.array([np.cos(self.yaw_rad), np.sin(self.yaw_rad)])


@dataclass(frozen=True)
class WorldState:
    step: int
    time_s: float
    ego: EgoState
    actors: dict[str, ActorState] = field(default_factory=dict)

    def ego_box(self, params: VehicleParameters) -> ActorState:
        """The ego as a box (for collision checks and for other actors to react to)."""
        cx, cy = self.ego.centre_xy(params)
        return ActorState(
            "ego",
            "car",
            float(cx),
            float(cy),
            self.ego.z_m + params.height_m / 2,
            self.ego.yaw_rad,
            self.ego.speed_mps,
            (params.length_m, params.width_m, params.height_m),
        )


def box_corners_xy(
    x_m: ArrayOrFloat, y_m: ArrayOrFloat, yaw_rad: ArrayOrFloat, length_m: ArrayOrFloat, width_m: ArrayOrFloat
) -> np.ndarray:
    """(n, 4, 2) footprint corners of oriented boxes (counter-clockwise)."""
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    local = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])  # fractions of (length, width)
    lx = local[None, :, 0] * np.asarray(length_m, float).reshape(-1, 1)
    ly = local[None, :, 1] * np.asarray(width_m, float).reshape(-1, 1)
    cx, cy, c, s = (np.asarray(v, float).reshape(-1, 1) for v in (x_m, y_m, c, s))
    return np.stack([cx + c * lx - s * ly, cy + s * lx + c * ly], axis=-1)
