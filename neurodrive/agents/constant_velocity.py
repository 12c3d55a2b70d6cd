"""Constant velocity: no acceleration, wheels straight (the baseline that never reacts)."""

from __future__ import annotations

from neurodrive.agents.base import Agent
from neurodrive.sim.types import Observation
from neurodrive.sim.vehicle import Control


class ConstantVelocity(Agent):
    name = "constant-velocity"

    def act(self, observation: Observation) -> Control:
        return Control(0.0, 0.0)
