"""Keyboard driving for the viewer: held keys set the throttle, brake and steering."""

from __future__ import annotations

from dataclasses import dataclass

from neurodrive.agents.base import Agent
from neurodrive.sim.types import Observation
from neurodrive.sim.vehicle import Control


@dataclass
class KeyState:
    up: bool = False  # accelerate
    down: bool = False  # brake
    left: bool = False
    right: bool = False


class KeyboardAgent(Agent):
    name = "keyboard"

    def __init__(self, accel_mps2: float = 2.0, brake_mps2: float = 6.0, steering_rad: float = 0.35) -> None:
        self.keys = KeyState()
        self.accel_mps2, self.brake_mps2, self.steering_rad = accel_mps2, brake_mps2, steering_rad

    def act(self, observation: Observation) -> Control:
        k = self.keys
        accel = (self.accel_mps2 if k.up else 0.0) - (self.brake_mps2 if k.down else 0.0)
        steer = (self.steering_rad if k.left else 0.0) - (self.steering_rad if k.right else 0.0)
        return Control(accel, steer)
