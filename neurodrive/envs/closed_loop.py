"""``neurodrive/ClosedLoop-v0``: the closed-loop simulator as a Gymnasium environment.

Observation (Dict):
    ``camera_<name>``  uint8 (H, W, 3) per camera of the scenario (when the scenario has a scene)
    ``lidar``          float32 (2, B, W) range image: range (m, 0 = no return) and intensity,
                       or (N, 4) fixed-size points x, y, z, intensity in the ego frame
    ``ego``            float32 (6,) speed (m/s), acceleration (m/s²), steering (rad),
                       lateral offset from the route (m), heading error to the route (rad), time left (s)
    ``route``          float32 (K, 2) the next K route points, every 5 m, in the ego frame (m)
Actions: ``continuous`` Box(-1, 1, (2,)) scaled to (acceleration, steering), or ``waypoints``
Box (K, 2) ego-frame points 0.5 s apart, tracked by pure pursuit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from neurodrive.app.replay import compose_frame
from neurodrive.scenarios.scenario import Scenario
from neurodrive.sim.controllers import Trajectory
from neurodrive.sim.metrics import COMFORT_BOUNDS
from neurodrive.sim.simulator import Observation, SimConfig, Simulator
from neurodrive.sim.vehicle import Control

# |speed| m/s, |accel| m/s², |steering| rad, |lateral offset| m, |heading error| rad, time left s
EGO_BOUNDS = np.array([60.0, 10.0, 1.1, 50.0, np.pi, 600.0], np.float32)
ROUTE_RANGE_M = np.float32(200.0)


@dataclass(frozen=True)
class RewardConfig:
    progress_per_m: float = 1.0  # reward per metre of progress along the route
    collision: float = -50.0
    off_road: float = -20.0
    goal: float = 10.0
    discomfort_per_step: float = -0.2  # when |accel| leaves nuPlan's comfort bounds
    steering_rate_per_rad: float = -0.1


@dataclass(frozen=True)
class EnvConfig:
    action_type: Literal["continuous", "waypoints"] = "continuous"
    lidar_format: Literal["range_image", "points"] = "range_image"
    num_lidar_points: int = 4096  # with lidar_format "points"
    route_points: int = 10  # every route_spacing_m
    route_spacing_m: float = 5.0
    num_waypoints: int = 5  # with action_type "waypoints", 0.5 s apart
    waypoint_spacing_s: float = 0.5
    max_steering_rad: float = 0.5  # continuous action +1 / -1
    reward: RewardConfig = field(default_factory=RewardConfig)
    terminate_off_road: bool = True


class ClosedLoopEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 10}

    def __init__(
        self,
        scenario: str | Path | dict | Scenario | None = None,
        scene: str | Path | None = None,
        log: str | Path | None = None,
        config: EnvConfig = EnvConfig(),
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
        self.config = config
        self.render_mode = render_mode
        self.sim = Simulator(self.scenario, source, config=SimConfig(stop_on_collision=True))
        self.sim.want_sensors = self.sim.scene is not None
        self.params = self.sim.params
        self.observation_space = self._observation_space()
        self.action_space = self._action_space()
        self._window = None
        self._last: Observation | None = None

    # ------------------------------------------------------------------ spaces

    def _observation_space(self) -> spaces.Dict:
        d: dict[str, spaces.Space] = {}
        rig = self.sim.rig
        if rig is not None:
            for cam in rig.cameras:
                d[f"camera_{cam.name}"] = spaces.Box(0, 255, (cam.height_px, cam.width_px, 3), np.uint8)
            if self.scenario.sensors.lidar:
                lid = rig.lidar
                if self.config.lidar_format == "range_image":
                    d["lidar"] = spaces.Box(
                        0.0, np.float32(lid.max_range_m), (2, lid.num_beams, lid.azimuth_bins), np.float32
                    )
                else:
                    r = np.float32(lid.max_range_m)
                    n = self.config.num_lidar_points
                    d["lidar"] = spaces.Box(
                        np.tile(np.array([-r, -r, -r, 0], np.float32), (n, 1)),
                        np.tile(np.array([r, r, r, 1], np.float32), (n, 1)),
                        dtype=np.float32,
                    )
        d["ego"] = spaces.Box(-EGO_BOUNDS, EGO_BOUNDS, dtype=np.float32)
        d["route"] = spaces.Box(-ROUTE_RANGE_M, ROUTE_RANGE_M, (self.config.route_points, 2), np.float32)
        return spaces.Dict(d)

    def _action_space(self) -> spaces.Box:
        if self.config.action_type == "continuous":
            return spaces.Box(-1.0, 1.0, (2,), np.float32)
        k = self.config.num_waypoints
        low = np.tile(np.array([-5.0, -20.0], np.float32), (k, 1))
        high = np.tile(np.array([60.0, 20.0], np.float32), (k, 1))
        return spaces.Box(low, high, dtype=np.float32)

    # ------------------------------------------------------------------ conversion

    def _to_ego(self, obs: Observation, xy: np.ndarray) -> np.ndarray:
        e = obs.ego
        rel = np.asarray(xy, float) - [e.x_m, e.y_m]
        c, s = np.cos(e.yaw_rad), np.sin(e.yaw_rad)
        return np.stack([rel[..., 0] * c + rel[..., 1] * s, -rel[..., 0] * s + rel[..., 1] * c], axis=-1)

    def _observation(self, obs: Observation) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if obs.sensors is not None:
            for name, render in obs.sensors.cameras.items():
                out[f"camera_{name}"] = render.rgb
            if obs.sensors.lidar is not None and self.scenario.sensors.lidar:
                out["lidar"] = self._lidar(obs)
        e = obs.ego
        s, lateral = obs.route.project(np.array([e.x_m, e.y_m]))
        heading_err = (e.yaw_rad - float(obs.route.heading(s)) + np.pi) % (2 * np.pi) - np.pi
        left = self.scenario.duration_s - obs.time_s
        ego = np.array([e.speed_mps, e.accel_mps2, e.steering_rad, -float(lateral), -heading_err, left], np.float32)
        out["ego"] = np.clip(ego, -EGO_BOUNDS, EGO_BOUNDS)
        pts = obs.route.position(float(s) + self.config.route_spacing_m * np.arange(1, self.config.route_points + 1))
        out["route"] = np.clip(self._to_ego(obs, pts), -ROUTE_RANGE_M, ROUTE_RANGE_M).astype(np.float32)
        return out

    def _lidar(self, obs: Observation) -> np.ndarray:
        lid = self.sim.rig.lidar
        sweep = obs.sensors.lidar.sweep
        if self.config.lidar_format == "range_image":
            img = np.zeros((2, lid.num_beams, lid.azimuth_bins), np.float32)
            img[0, sweep.beam, sweep.azimuth_index] = np.minimum(sweep.range_m(), lid.max_range_m)
            img[1, sweep.beam, sweep.azimuth_index] = np.clip(sweep.intensity, 0.0, 1.0)
            return img
        n = self.config.num_lidar_points
        pts = np.zeros((n, 4), np.float32)
        xyz = sweep.xyz_m @ lid.T_ego_lidar[:3, :3].T.astype(np.float32) + lid.T_ego_lidar[:3, 3].astype(np.float32)
        if len(xyz):
            pick = np.linspace(0, len(xyz) - 1, min(n, len(xyz))).astype(int)  # deterministic, evenly over the sweep
            r = np.float32(lid.max_range_m)
            pts[: len(pick), :3] = np.clip(xyz[pick], -r, r)
            pts[: len(pick), 3] = np.clip(sweep.intensity[pick], 0, 1)
        return pts

    def _command(self, action: np.ndarray, obs: Observation) -> Control | Trajectory:
        a = np.asarray(action, float)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action: contains NaN or infinite values: {a.tolist()}")
        if self.config.action_type == "continuous":
            a = np.clip(a.reshape(2), -1.0, 1.0)
            accel = a[0] * (self.params.max_accel_mps2 if a[0] >= 0 else self.params.max_decel_mps2)
            return Control(float(accel), float(a[1] * self.config.max_steering_rad))
        box: spaces.Box = self.action_space  # type: ignore[assignment]
        pts = np.clip(a.reshape(-1, 2), box.low, box.high)
        e = obs.ego
        c, s = np.cos(e.yaw_rad), np.sin(e.yaw_rad)
        world = np.stack([e.x_m + pts[:, 0] * c - pts[:, 1] * s, e.y_m + pts[:, 0] * s + pts[:, 1] * c], axis=1)
        xy = np.vstack([[e.x_m, e.y_m], world])
        speeds = np.linalg.norm(np.diff(xy, axis=0), axis=1) / self.config.waypoint_spacing_s
        speeds = np.concatenate([speeds[:1], speeds])
        if np.linalg.norm(xy[-1] - xy[0]) < 0.5:  # asked to stand still
            xy = np.stack([xy[0], xy[0] + [c, s]])
            speeds = np.zeros(2)
        keep = np.concatenate([[True], np.linalg.norm(np.diff(xy, axis=0), axis=1) > 1e-3])
        if keep.sum() < 2:
            return Control(-self.params.max_decel_mps2, 0.0)
        return Trajectory(xy[keep], speeds[keep])

    # ------------------------------------------------------------------ gym API

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(0, 2**31 - 1))
        obs = self.sim.reset(episode_seed)
        self._last = obs
        self._progress = self._start_s = float(obs.route.project(obs.ego.centre_xy(self.params))[0])
        if self.render_mode == "human":
            self.render()
        return self._observation(obs), {"episode_seed": episode_seed}

    def step(self, action):
        if self._last is None:
            raise RuntimeError("call reset() before step()")
        prev = self._last
        obs, info = self.sim.step(self._command(action, prev))
        self._last = obs
        r = self.config.reward
        progress = float(obs.route.project(obs.ego.centre_xy(self.params))[0])
        reward = r.progress_per_m * (progress - self._progress)
        self._progress = progress
        lo, hi = COMFORT_BOUNDS["lon_accel_mps2"]
        if not lo <= obs.ego.accel_mps2 <= hi:
            reward += r.discomfort_per_step
        reward += r.steering_rate_per_rad * abs(obs.ego.steering_rad - prev.ego.steering_rad)
        collided = bool(info.collisions)
        reward += r.collision if collided else 0.0
        reward += r.off_road if info.off_road else 0.0
        reward += r.goal if info.goal_reached else 0.0
        terminated = collided or info.goal_reached or (info.off_road and self.config.terminate_off_road)
        truncated = (not terminated) and info.done
        if terminated or truncated:
            self.sim.done = True
        details = {
            "collisions": [c.actor_id for c in info.collisions],
            "off_road": info.off_road,
            "goal_reached": info.goal_reached,
            "progress_m": progress - self._start_s,
        }
        if self.render_mode == "human":
            self.render()
        return self._observation(obs), float(reward), bool(terminated), bool(truncated), details

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
