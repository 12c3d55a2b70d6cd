"""The environment's reward as named terms: each measured per step, weighted by ``RewardConfig``,
summed, and reported one by one in ``info["rewards"]``."""

from __future__ import annotations

from dataclasses import dataclass, fields

from neurodrive.sim.metrics import COMFORT_BOUNDS
from neurodrive.sim.types import Observation, StepInfo


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the reward terms (the reward is the sum of weight x term).

    Attributes:
        progress_per_m: per metre of progress along the route this step.
        collision: per step with a new collision.
        off_road: per step with the ego outside the drivable area.
        goal: on the step the goal is reached.
        discomfort_per_step: per step with the longitudinal acceleration outside nuPlan's comfort bounds.
        steering_rate_per_rad: per radian of steering change this step.
    """

    progress_per_m: float = 1.0
    collision: float = -50.0
    off_road: float = -20.0
    goal: float = 10.0
    discomfort_per_step: float = -0.2
    steering_rate_per_rad: float = -0.1


def reward_terms(prev: Observation, obs: Observation, info: StepInfo, progress_m: float) -> dict[str, float]:
    """The unweighted terms of one step, keyed like ``RewardConfig``'s fields."""
    lo, hi = COMFORT_BOUNDS["lon_accel_mps2"]
    return {
        "progress_per_m": progress_m,
        "collision": float(bool(info.collisions)),
        "off_road": float(info.off_road),
        "goal": float(info.goal_reached),
        "discomfort_per_step": float(not lo <= obs.ego.accel_mps2 <= hi),
        "steering_rate_per_rad": abs(obs.ego.steering_rad - prev.ego.steering_rad),
    }


def weighted_rewards(terms: dict[str, float], config: RewardConfig) -> dict[str, float]:
    """Each term times its weight (the reward is their sum)."""
    return {f.name: float(getattr(config, f.name) * terms[f.name]) for f in fields(config)}
