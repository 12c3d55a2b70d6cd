"""What agents see: the context before an episode, the observation at each step, step outcomes.

Kept apart from the simulator and the renderer so that an agent imports only these (and numpy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from neurodrive.logs.model import SensorRig
from neurodrive.sim.collisions import CollisionEvent
from neurodrive.sim.controllers import Trajectory
from neurodrive.sim.paths import Polyline
from neurodrive.sim.state import ActorState
from neurodrive.sim.vehicle import EgoState, VehicleParameters

if TYPE_CHECKING:
    from neurodrive.render.results import FrameRender


@dataclass(frozen=True)
class ExpertPlan:
    """The logged ego from the start frame on (times relative to the episode start)."""

    times_s: np.ndarray  # (K,)
    xy_m: np.ndarray  # (K, 2) rear axle
    speed_mps: np.ndarray  # (K,)

    def trajectory_from(self, time_s: float, horizon_s: float = 4.0, dt_s: float = 0.1) -> Trajectory:
        """Logged waypoints over the horizon (constant velocity beyond the log's end)."""
        t = time_s + np.arange(0.0, horizon_s + 1e-9, dt_s)
        end_v = (
            (self.xy_m[-1] - self.xy_m[-2]) / max(self.times_s[-1] - self.times_s[-2], 1e-6)
            if len(self.times_s) > 1
            else np.zeros(2)
        )
        xy = np.stack(
            [np.interp(t, self.times_s, self.xy_m[:, 0]), np.interp(t, self.times_s, self.xy_m[:, 1])], axis=1
        )
        after = t > self.times_s[-1]
        xy[after] = self.xy_m[-1] + (t[after] - self.times_s[-1])[:, None] * end_v
        speed = np.interp(t, self.times_s, self.speed_mps)
        if np.linalg.norm(xy[-1] - xy[0]) < 0.5:  # standing still: a short stub ahead, speed 0
            heading = np.array([1.0, 0.0])
            xy = np.stack([xy[0], xy[0] + heading])
            speed = np.zeros(2)
        return Trajectory(xy, speed)


@dataclass(frozen=True)
class AgentContext:
    """What an agent may know before the episode starts."""

    params: VehicleParameters
    dt_s: float
    route: Polyline
    speed_limit_mps: float
    expert: ExpertPlan
    rig: SensorRig | None


@dataclass(frozen=True)
class Observation:
    step: int
    time_s: float
    ego: EgoState
    actors: dict[str, ActorState]  # the simulator's ground truth (privileged)
    route: Polyline
    sensors: FrameRender | None  # rendered cameras + LiDAR (None without a scene or when not asked for)


@dataclass(frozen=True)
class StepInfo:
    collisions: list[CollisionEvent]
    off_road: bool
    goal_reached: bool
    done: bool
