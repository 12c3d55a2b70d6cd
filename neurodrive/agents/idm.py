"""IDM lane follower: follows the route at the lane's speed limit and keeps its distance from the
agent ahead on the route (uses the simulator's ground-truth actor states)."""

from __future__ import annotations

import numpy as np

from neurodrive.agents.base import Agent, route_plan
from neurodrive.sim.behaviours import IDMConfig, idm_acceleration, leader_on_path
from neurodrive.sim.controllers import PurePursuitController
from neurodrive.sim.types import Observation
from neurodrive.sim.vehicle import Control


class IDMLaneFollower(Agent):
    name = "idm"

    def __init__(self, config: IDMConfig = IDMConfig(), desired_speed_mps: float | None = None) -> None:
        self.config = config
        self.desired_speed_mps = desired_speed_mps

    def act(self, observation: Observation) -> Control:
        ctx = self.context
        ego = observation.ego
        centre = ego.centre_xy(ctx.params)
        s = float(observation.route.project(centre)[0])
        gap, lead_speed = leader_on_path(
            observation.route,
            s,
            ctx.params.length_m,
            ctx.params.width_m,
            list(observation.actors.values()),
            self.config,
        )
        desired = self.desired_speed_mps or ctx.speed_limit_mps
        accel = idm_acceleration(ego.speed_mps, desired, gap, ego.speed_mps - lead_speed, self.config)
        steer = PurePursuitController(ctx.params).control(ego, route_plan(observation, desired)).steering_rad
        return Control(float(np.clip(accel, -ctx.params.max_decel_mps2, ctx.params.max_accel_mps2)), steer)
