"""``neurodrive/ClosedLoop-v0``: the closed-loop simulator as a Gymnasium environment.

Observation (Dict):
    ``camera_<name>``  uint8 (H, W, 3) per camera of the scenario (when the scenario has a scene)
    ``lidar``          float32 (2, B, W) range image: range (m, 0 = no return) and intensity,
                       or (N, 4) fixed-size points x, y, z, intensity in the ego frame
    ``ego``            float32 (6,) speed (m/s), acceleration (m/s²), steering (rad),
                       lateral offset from the route (m), heading error to the route (rad), time left (s)
    ``route``          float32 (K, 2) the next K route points (default 10, 5 m apart) in the ego frame (m)
Actions: ``continuous`` Box(-1, 1, (2,)) scaled to (acceleration, steering), or ``waypoints``
Box (K, 2) ego-frame points (default 5, 0.5 s apart), tracked by pure pursuit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from neurodrive.envs.actions import ContinuousActionConfig, WaypointActionConfig, action_factory
from neurodrive.envs.observations import (
    LidarObservationConfig,
    RouteObservationConfig,
    RoutePosition,
    observation_factory,
)
from neurodrive.envs.rewards import RewardConfig, reward_terms, weighted_rewards
from neurodrive.scenarios.scenario import Scenario
from neurodrive.sim.simulator import SimConfig, Simulator
from neurodrive.sim.types import Observation, StepInfo
from neurodrive.viz.frames import compose_frame


@dataclass(frozen=True)
class EnvConfig:
    """The environment's observation, action and reward set-up; each type has its own small config.

    Attributes:
        action_type: ``continuous`` (``continuous`` config) or ``waypoints`` (``waypoints`` config).
        lidar: how each LiDAR is observed (range image or fixed-size points).
        route: how many route points, how far apart.
        continuous: the continuous action's steering scale.
        waypoints: the waypoint action's count and spacing.
        reward: the weights of the reward terms.
        terminate_off_road: end the episode when the ego leaves the drivable area.
    """

    action_type: Literal["continuous", "waypoints"] = "continuous"
    lidar: LidarObservationConfig = field(default_factory=LidarObservationConfig)
    route: RouteObservationConfig = field(default_factory=RouteObservationConfig)
    continuous: ContinuousActionConfig = field(default_factory=ContinuousActionConfig)
    waypoints: WaypointActionConfig = field(default_factory=WaypointActionConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    terminate_off_road: bool = True

    def __post_init__(self) -> None:
        if self.action_type not in ("continuous", "waypoints"):
            raise ValueError(f"action_type must be 'continuous' or 'waypoints', got {self.action_type!r}")

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> EnvConfig:
        """An ``EnvConfig`` from plain data (e.g. YAML): nested dicts for the sub-configs, e.g.
        ``{"action_type": "waypoints", "lidar": {"format": "points", "num_points": 512}}``."""
        known = {f.name: f.type for f in fields(EnvConfig)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValueError(f"EnvConfig: unknown field(s) {unknown}; known: {sorted(known)}")
        sub = {"lidar": LidarObservationConfig, "route": RouteObservationConfig, "reward": RewardConfig}
        sub |= {"continuous": ContinuousActionConfig, "waypoints": WaypointActionConfig}
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if name in sub and isinstance(value, dict):
                try:
                    value = sub[name](**value)
                except TypeError as exc:
                    raise ValueError(f"EnvConfig.{name}: {exc}") from None
            values[name] = value
        return EnvConfig(**values)


class ClosedLoopEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 10}

    def __init__(
        self,
        scenario: str | Path | dict | Scenario | None = None,
        scene: str | Path | None = None,
        log: str | Path | None = None,
        config: EnvConfig | dict[str, Any] | None = None,
        render_mode: str | None = None,
        **scenario_fields: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        if isinstance(scenario, Scenario):
            self.scenario, source = scenario, "<scenario>"
        elif isinstance(scenario, (str, Path)):
            self.scenario, source = Scenario.load(scenario), str(scenario)
        else:
            raw = dict(scenario or {}) | scenario_fields
            if scene is not None:
                raw["scene"] = str(scene)
            if log is not None:
                raw["log"] = str(log)
            self.scenario, source = Scenario.parse(raw), "<scenario>"
        self.config = config = EnvConfig.from_dict(config) if isinstance(config, dict) else config or EnvConfig()
        self.render_mode = render_mode
        self.sim = Simulator.from_scenario(self.scenario, source, config=SimConfig(stop_on_collision=True))
        self.sim.set_sensors(self.sim.scene is not None)
        self.params = self.sim.params
        rig = self.sim.rig
        cameras = rig.cameras if rig is not None else ()
        lidars = rig.lidars if rig is not None else ()
        self.observation_types = observation_factory(
            config.lidar, config.route, cameras, lidars, self.scenario.duration_s
        )
        self.action_type = action_factory(config.action_type, config.continuous, config.waypoints, self.params)
        self.observation_space = spaces.Dict({k: v for t in self.observation_types for k, v in t.spaces().items()})
        self.action_space = self.action_type.space()
        self._window = None
        self._last: Observation | None = None

    def _observe(self, obs: Observation, where: RoutePosition) -> dict[str, np.ndarray]:
        return {k: v for t in self.observation_types for k, v in t.observe(obs, where).items()}

    # ------------------------------------------------------------------ gym API

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(0, 2**31 - 1))
        obs = self.sim.reset(episode_seed)
        self._last = obs
        where = RoutePosition.of(obs)
        self._progress = self._start_s = where.s_m
        if self.render_mode == "human":
            self.render()
        return self._observe(obs, where), {"episode_seed": episode_seed}

    def step(self, action):
        """``_simulate`` -> ``_observe`` -> ``_rewards`` -> ``_is_terminated`` / ``_is_truncated`` ->
        ``_info`` (as highway-env); the ego is projected onto the route once."""
        if self._last is None:
            raise RuntimeError("call reset() before step()")
        prev = self._last
        obs, info = self._simulate(action)
        where = RoutePosition.of(obs)
        observation = self._observe(obs, where)
        rewards = self._rewards(prev, obs, info, where.s_m - self._progress)
        self._progress = where.s_m
        terminated = self._is_terminated(info)
        truncated = self._is_truncated(info, terminated)
        if terminated or truncated:
            self.sim.end_episode()
        if self.render_mode == "human":
            self.render()
        return observation, float(sum(rewards.values())), terminated, truncated, self._info(info, where, rewards)

    def _is_terminated(self, info: StepInfo) -> bool:
        """A collision, the goal, or (``terminate_off_road``) leaving the drivable area ends the episode."""
        return bool(info.collisions) or info.goal_reached or (info.off_road and self.config.terminate_off_road)

    def _is_truncated(self, info: StepInfo, terminated: bool) -> bool:
        """The scenario's time is up without the episode having ended otherwise."""
        return (not terminated) and info.done

    def _info(self, info: StepInfo, where: RoutePosition, rewards: dict[str, float]) -> dict:
        return {
            "collisions": [c.actor_id for c in info.collisions],
            "off_road": info.off_road,
            "goal_reached": info.goal_reached,
            "progress_m": where.s_m - self._start_s,
            "rewards": rewards,
        }

    def _simulate(self, action) -> tuple[Observation, StepInfo]:
        obs, info = self.sim.step(self.action_type.command(action, self._last))
        self._last = obs
        return obs, info

    def _rewards(self, prev: Observation, obs: Observation, info: StepInfo, progress_m: float) -> dict[str, float]:
        return weighted_rewards(reward_terms(prev, obs, info, progress_m), self.config.reward)

    def episode_metrics(self) -> dict:
        """nuPlan-style and NeuroNCAP metrics of the episode so far."""
        return self.sim.metrics()

    def render(self):
        if self._last is None or self.render_mode is None:
            return None
        frame = compose_frame(self.sim, self._last)
        if self.render_mode == "rgb_array":
            return frame
        import pygame

        if self._window is None:
            pygame.display.init()
            self._window = pygame.display.set_mode((frame.shape[1], frame.shape[0]))
            pygame.display.set_caption(f"neurodrive - {self.scenario.name}")
        pygame.event.pump()
        self._window.blit(pygame.surfarray.make_surface(frame.swapaxes(0, 1)), (0, 0))
        pygame.display.flip()
        return None

    def close(self) -> None:
        if self._window is not None:
            import pygame

            pygame.display.quit()
            self._window = None
