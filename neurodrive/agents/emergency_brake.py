"""LiDAR emergency braking: cruises along the route and brakes hard when rendered LiDAR returns
fill the corridor ahead within stopping distance. It sees only sensor data (no ground-truth
actors), so the sensor loop is truly closed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurodrive.agents.base import Agent, route_plan
from neurodrive.geometry import transform_points
from neurodrive.sim.controllers import PurePursuitController
from neurodrive.sim.types import Observation
from neurodrive.sim.vehicle import Control


@dataclass(frozen=True)
class EmergencyBrakeConfig:
    brake_decel_mps2: float = 8.0  # the braking the stopping distance assumes
    reaction_time_s: float = 0.3  # latency included in the stopping distance
    margin_m: float = 3.0  # kept to the obstacle
    corridor_margin_m: float = 0.4  # added to the ego's half width on each side
    min_height_m: float = 0.3  # returns below this (ground) and above max_height_m are ignored
    max_height_m: float = 2.5
    min_points: int = 3  # returns needed to trust an obstacle
    cruise_gain_per_s: float = 0.5


class LidarEmergencyBrake(Agent):
    name = "lidar-aeb"
    needs_sensors = True

    def __init__(
        self, config: EmergencyBrakeConfig = EmergencyBrakeConfig(), cruise_speed_mps: float | None = None
    ) -> None:
        self.config = config
        self.cruise_speed_mps = cruise_speed_mps

    def reset(self, context) -> None:
        super().reset(context)
        self.cruise = self.cruise_speed_mps
        self.braking = False

    def obstacle_distance_m(self, observation: Observation) -> float:
        """Distance from the front bumper to the nearest LiDAR return in the corridor ahead (inf: none)."""
        sensors = observation.sensors
        if sensors is None or sensors.lidar is None:
            raise RuntimeError(
                "the LiDAR emergency-braking agent needs rendered LiDAR (a scenario with a scene and lidar: true)"
            )
        p = self.context.params
        lidar = self.context.rig.lidar
        pts = transform_points(
            lidar.T_ego_lidar, sensors.lidar.sweep.xyz_m.astype(float)
        )  # ego frame: rear axle on the ground
        front = p.rear_axle_to_centre_m + p.length_m / 2
        cfg = self.config
        sel = (pts[:, 0] > front) & (np.abs(pts[:, 1]) < p.width_m / 2 + cfg.corridor_margin_m)
        sel &= (pts[:, 2] > cfg.min_height_m) & (pts[:, 2] < cfg.max_height_m)
        if np.count_nonzero(sel) < cfg.min_points:
            return float("inf")
        return float(np.sort(pts[sel, 0])[cfg.min_points - 1] - front)

    def act(self, observation: Observation) -> Control:
        cfg, ego = self.config, observation.ego
        if self.cruise is None:
            self.cruise = max(ego.speed_mps, 1.0)
        v = ego.speed_mps
        stopping = v * cfg.reaction_time_s + v * v / (2 * cfg.brake_decel_mps2) + cfg.margin_m
        distance = self.obstacle_distance_m(observation)
        self.braking = distance < stopping
        accel = -self.context.params.max_decel_mps2 if self.braking else cfg.cruise_gain_per_s * (self.cruise - v)
        steer = (
            PurePursuitController(self.context.params).control(ego, route_plan(observation, self.cruise)).steering_rad
        )
        return Control(float(accel), steer)
