"""What an agent is: it is reset with the episode's context and maps observations to actions."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from neurodrive.sim.controllers import Trajectory
from neurodrive.sim.types import AgentContext, Observation
from neurodrive.sim.vehicle import Control


class Agent:
    """Base class. ``needs_sensors`` tells the simulator to render cameras + LiDAR every step."""

    name: ClassVar[str] = ""
    needs_sensors: ClassVar[bool] = False

    def reset(self, context: AgentContext) -> None:
        self.context = context

    def act(self, observation: Observation) -> Control | Trajectory:
        raise NotImplementedError


def route_plan(
    observation: Observation, speed_mps: float, horizon_m: float = 40.0, spacing_m: float = 2.0
) -> Trajectory:
    """Waypoints along the route ahead of the ego at one speed."""
    route = observation.route
    s0 = float(route.project(np.array([observation.ego.x_m, observation.ego.y_m]))[0])
    s = s0 + np.arange(0.0, horizon_m + 1e-9, spacing_m)
    return Trajectory(route.position(s), np.full(len(s), speed_mps))
