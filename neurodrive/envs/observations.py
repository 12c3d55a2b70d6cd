"""Observation types of the Gymnasium environment: each a small class with a ``spaces()`` and an
``observe(observation, where)`` that fills its keys, configured by its own small frozen config beside
it (``setup()`` builds the type); ``observation_factory`` picks them (as highway-env's
``observation_factory``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from gymnasium import spaces

from neurodrive.geometry import to_frame_xy, wrap_angle
from neurodrive.lidar.formats import fixed_points, range_intensity_image
from neurodrive.lidar.sensor import LidarSpec
from neurodrive.logs.model import CameraSpec
from neurodrive.sim.types import Observation

# |speed| m/s, |accel| m/s², |steering| rad, |lateral offset| m, |heading error| rad, time left s
EGO_BOUNDS = np.array([60.0, 10.0, 1.1, 50.0, np.pi, 600.0], np.float32)
ROUTE_RANGE_M = np.float32(200.0)


@dataclass(frozen=True)
class RoutePosition:
    """Where the ego (its rear axle, the pose's origin) is on the route: projected once per step and
    shared by the observations, the progress reward and ``info``."""

    s_m: float  # arc length along the route
    lateral_m: float  # signed offset from the route, left positive

    @staticmethod
    def of(obs: Observation) -> RoutePosition:
        s, lateral = obs.route.project(np.array([obs.ego.x_m, obs.ego.y_m]))
        return RoutePosition(float(s), float(lateral))


class ObservationType:
    """One or more keys of the Dict observation."""

    def spaces(self) -> dict[str, spaces.Space]:
        raise NotImplementedError

    def observe(self, obs: Observation, where: RoutePosition) -> dict[str, np.ndarray]:
        raise NotImplementedError


class CameraObservation(ObservationType):
    """``camera_<name>``: uint8 (H, W, 3) rendered image."""

    def __init__(self, camera: CameraSpec) -> None:
        self.camera = camera

    def spaces(self) -> dict[str, spaces.Space]:
        c = self.camera
        return {f"camera_{c.name}": spaces.Box(0, 255, (c.height_px, c.width_px, 3), np.uint8)}

    def observe(self, obs: Observation, where: RoutePosition) -> dict[str, np.ndarray]:
        return {f"camera_{self.camera.name}": obs.sensors.cameras[self.camera.name].rgb}


@dataclass(frozen=True)
class LidarObservationConfig:
    """How each LiDAR of the rig is observed.

    Attributes:
        format: ``range_image`` (2, rows, columns) range and intensity, or ``points`` (N, 4).
        num_points: N, the fixed number of returns with ``format="points"`` (padded or subsampled).
    """

    format: Literal["range_image", "points"] = "range_image"
    num_points: int = 4096

    def __post_init__(self) -> None:
        if self.format not in ("range_image", "points"):
            raise ValueError(f"lidar.format must be 'range_image' or 'points', got {self.format!r}")
        if not 1 <= self.num_points <= 1_000_000:
            raise ValueError(f"lidar.num_points must be within 1 .. 1000000, got {self.num_points}")

    def setup(self, lidar: LidarSpec, primary: bool) -> ObservationType:
        if self.format == "range_image":
            return LidarRangeImageObservation(lidar, primary)
        return LidarPointsObservation(lidar, self.num_points, primary)


def lidar_key(lidar: LidarSpec, primary: bool) -> str:
    """The observation key of a LiDAR: ``lidar`` for the rig's primary one, ``lidar_<name>`` for the others."""
    return "lidar" if primary else f"lidar_{lidar.name}"


class LidarRangeImageObservation(ObservationType):
    """``lidar`` (``lidar_<name>`` for a LiDAR other than the primary): float32 (2, rows, columns) range
    (m) and intensity in the sensor's range image."""

    def __init__(self, lidar: LidarSpec, primary: bool = True) -> None:
        self.lidar, self.key = lidar, lidar_key(lidar, primary)

    def spaces(self) -> dict[str, spaces.Space]:
        lid = self.lidar
        return {self.key: spaces.Box(0.0, np.float32(lid.max_range_m), (2, *lid.pattern.image_shape), np.float32)}

    def observe(self, obs: Observation, where: RoutePosition) -> dict[str, np.ndarray]:
        return {self.key: range_intensity_image(obs.sensors.lidars[self.lidar.name].sweep, self.lidar)}


class LidarPointsObservation(ObservationType):
    """``lidar`` (``lidar_<name>`` for a LiDAR other than the primary): float32 (N, 4) x, y, z (ego
    frame, m) and intensity of N returns."""

    def __init__(self, lidar: LidarSpec, count: int, primary: bool = True) -> None:
        self.lidar, self.count, self.key = lidar, count, lidar_key(lidar, primary)

    def spaces(self) -> dict[str, spaces.Space]:
        r = np.float32(self.lidar.max_range_m)
        low = np.tile(np.array([-r, -r, -r, 0], np.float32), (self.count, 1))
        high = np.tile(np.array([r, r, r, 1], np.float32), (self.count, 1))
        return {self.key: spaces.Box(low, high, dtype=np.float32)}

    def observe(self, obs: Observation, where: RoutePosition) -> dict[str, np.ndarray]:
        return {self.key: fixed_points(obs.sensors.lidars[self.lidar.name].sweep, self.lidar, self.count)}


class EgoStateObservation(ObservationType):
    """``ego``: float32 (6,) speed, acceleration, steering, lateral offset and heading error to the
    route, time left."""

    def __init__(self, duration_s: float) -> None:
        self.duration_s = duration_s

    def spaces(self) -> dict[str, spaces.Space]:
        return {"ego": spaces.Box(-EGO_BOUNDS, EGO_BOUNDS, dtype=np.float32)}

    def observe(self, obs: Observation, where: RoutePosition) -> dict[str, np.ndarray]:
        e = obs.ego
        s, lateral = where.s_m, where.lateral_m
        heading_err = float(wrap_angle(e.yaw_rad - float(obs.route.heading(s))))
        left = self.duration_s - obs.time_s
        ego = np.array([e.speed_mps, e.accel_mps2, e.steering_rad, -float(lateral), -heading_err, left], np.float32)
        return {"ego": np.clip(ego, -EGO_BOUNDS, EGO_BOUNDS)}


@dataclass(frozen=True)
class RouteObservationConfig:
    """The route ahead of the ego.

    Attributes:
        points: K, the number of route points observed.
        spacing_m: distance along the route between consecutive points (m).
    """

    points: int = 10
    spacing_m: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.points <= 1000:
            raise ValueError(f"route.points must be within 1 .. 1000, got {self.points}")
        if not 0.1 <= self.spacing_m <= 100.0:
            raise ValueError(f"route.spacing_m must be within 0.1 .. 100 m, got {self.spacing_m}")

    def setup(self) -> RouteObservation:
        return RouteObservation(self.points, self.spacing_m)


class RouteObservation(ObservationType):
    """``route``: float32 (K, 2) the next K route points, ``spacing_m`` apart, in the ego frame."""

    def __init__(self, points: int, spacing_m: float) -> None:
        self.points, self.spacing_m = points, spacing_m

    def spaces(self) -> dict[str, spaces.Space]:
        return {"route": spaces.Box(-ROUTE_RANGE_M, ROUTE_RANGE_M, (self.points, 2), np.float32)}

    def observe(self, obs: Observation, where: RoutePosition) -> dict[str, np.ndarray]:
        e = obs.ego
        pts = obs.route.position(where.s_m + self.spacing_m * np.arange(1, self.points + 1))
        route = to_frame_xy(pts, e.x_m, e.y_m, e.yaw_rad)
        return {"route": np.clip(route, -ROUTE_RANGE_M, ROUTE_RANGE_M).astype(np.float32)}


def observation_factory(
    lidar: LidarObservationConfig,
    route: RouteObservationConfig,
    cameras: tuple[CameraSpec, ...],
    lidars: tuple[LidarSpec, ...],
    duration_s: float,
) -> list[ObservationType]:
    """The observation types: cameras and each LiDAR when the scenario renders them, then the ego state
    and the route."""
    types: list[ObservationType] = [CameraObservation(c) for c in cameras]
    types += [lidar.setup(spec, primary=k == 0) for k, spec in enumerate(lidars)]
    return [*types, EgoStateObservation(duration_s), route.setup()]
