"""Ego vehicle: parameters, state and a kinematic bicycle model compatible with nuPlan's.

The state refers to the rear axle (nuPlan's convention); the box centre lies
``rear_axle_to_centre_m`` ahead of it. Commands (acceleration, steering angle) reach the vehicle
through first-order lags, as in nuPlan's ``KinematicBicycleModel``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from neurodrive.geometry import pose_xyz_yaw, wrap_angle


@dataclass(frozen=True)
class VehicleParameters:
    """Defaults: nuPlan's ego (Chrysler Pacifica)."""

    wheelbase_m: float = 3.089
    length_m: float = 5.176
    width_m: float = 2.297
    height_m: float = 1.777
    rear_axle_to_centre_m: float = 1.461
    max_steering_rad: float = np.pi / 3
    accel_time_constant_s: float = 0.2
    steering_time_constant_s: float = 0.05
    max_accel_mps2: float = 4.0
    max_decel_mps2: float = 9.0  # hardest braking (emergency)


@dataclass(frozen=True)
class EgoState:
    x_m: float  # rear axle, world frame
    y_m: float
    yaw_rad: float
    speed_mps: float
    accel_mps2: float = 0.0  # actual longitudinal acceleration (after the lag)
    steering_rad: float = 0.0  # actual front-wheel angle (after the lag)
    z_m: float = 0.0  # ground height under the ego (for rendering)

    def centre_xy(self, params: VehicleParameters) -> np.ndarray:
        return np.array([self.x_m, self.y_m]) + params.rear_axle_to_centre_m * np.array(
            [np.cos(self.yaw_rad), np.sin(self.yaw_rad)]
        )

    def pose(self) -> np.ndarray:
        """T_world_ego (4, 4): the rear axle on the ground, x forward (the log's ego frame)."""
        return pose_xyz_yaw(self.x_m, self.y_m, self.z_m, self.yaw_rad)

    def velocity_xy(self) -> np.ndarray:
        return self.speed_mps * np.array([np.cos(self.yaw_rad), np.sin(self.yaw_rad)])


@dataclass(frozen=True)
class Control:
    """What the ego is asked to do for the next step."""

    accel_mps2: float  # longitudinal acceleration, negative to brake
    steering_rad: float  # front-wheel angle, left positive


class KinematicBicycleModel:
    """Forward-Euler kinematic bicycle about the rear axle with lagged commands (no reversing)."""

    def __init__(self, params: VehicleParameters = VehicleParameters()) -> None:
        self.params = params

    def clip(self, control: Control) -> Control:
        p = self.params
        accel = float(np.clip(np.nan_to_num(control.accel_mps2), -p.max_decel_mps2, p.max_accel_mps2))
        steer = float(np.clip(np.nan_to_num(control.steering_rad), -p.max_steering_rad, p.max_steering_rad))
        return Control(accel, steer)

    def propagate(self, state: EgoState, control: Control, dt_s: float) -> EgoState:
        p = self.params
        control = self.clip(control)
        accel = state.accel_mps2 + dt_s / (dt_s + p.accel_time_constant_s) * (control.accel_mps2 - state.accel_mps2)
        steer = state.steering_rad + dt_s / (dt_s + p.steering_time_constant_s) * (
            control.steering_rad - state.steering_rad
        )
        v = state.speed_mps
        x = state.x_m + v * np.cos(state.yaw_rad) * dt_s
        y = state.y_m + v * np.sin(state.yaw_rad) * dt_s
        yaw = state.yaw_rad + v * np.tan(steer) / p.wheelbase_m * dt_s
        new_v = max(0.0, v + accel * dt_s)
        if new_v == 0.0 and accel < 0:
            accel = -v / dt_s if v > 0 else 0.0  # stopped: no further deceleration
        yaw = float(wrap_angle(yaw))
        return replace(
            state,
            x_m=float(x),
            y_m=float(y),
            yaw_rad=yaw,
            speed_mps=float(new_v),
            accel_mps2=float(accel),
            steering_rad=float(steer),
        )
