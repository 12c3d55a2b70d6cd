"""Log-replay expert: tracks the logged ego trajectory in closed loop."""

from __future__ import annotations

from neurodrive.agents.base import Agent
from neurodrive.sim.controllers import Trajectory
from neurodrive.sim.types import Observation


class LogReplayExpert(Agent):
    name = "expert"

    def act(self, observation: Observation) -> Trajectory:
        return self.context.expert.trajectory_from(observation.time_s, horizon_s=4.0, dt_s=self.context.dt_s)
