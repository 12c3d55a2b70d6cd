"""Data model of a recorded driving log (see docs/log_format.md).

Frames: world and ego are x forward / y left / z up, metres; the ego origin is the rear-axle centre on
the ground. A pose ``T_a_b`` (4, 4) maps points in frame b into frame a.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from neurodrive.errors import DataError
from neurodrive.geometry import R_BODY_FROM_OPENCV
from neurodrive.lidar.pattern import BeamGrid, RayPattern, to_image


@dataclass(frozen=True)
class CameraSpec:
    """A pinhole camera. Camera axes follow OpenCV: x right, y down, z forward."""

    name: str
    width_px: int
    height_px: int
    intrinsics: np.ndarray  # (3, 3) K in pixels; pixel centres sit at integer + 0.5
    T_ego_camera: np.ndarray  # (4, 4) camera -> ego

    def ray_directions(self, supersample: int = 1) -> np.ndarray:
        """Unit ray directions in the camera frame, (H*s, W*s, 3), through (sub)pixel centres."""
        if supersample == 1:
            return self._pixel_rays
        return self._rays(supersample)

    @cached_property
    def _pixel_rays(self) -> np.ndarray:
        rays = self._rays(1)
        rays.flags.writeable = False
        return rays

    def _rays(self, supersample: int) -> np.ndarray:
        s = supersample
        u = (np.arange(self.width_px * s) + 0.5) / s
        v = (np.arange(self.height_px * s) + 0.5) / s
        uu, vv = np.meshgrid(u, v)
        k = self.intrinsics
        x = (uu - k[0, 2]) / k[0, 0]
        y = (vv - k[1, 2]) / k[1, 1]
        d = np.stack([x, y, np.ones_like(x)], axis=-1)
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def project(self, points_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) of camera-frame points (N, 3) and a mask of those in view."""
        z = points_camera[:, 2]
        safe_z = np.where(z > 1e-6, z, 1.0)
        uv = (points_camera @ self.intrinsics.T)[:, :2] / safe_z[:, None]
        inside = (
            (z > 1e-6) & (uv[:, 0] >= 0) & (uv[:, 0] < self.width_px) & (uv[:, 1] >= 0) & (uv[:, 1] < self.height_px)
        )
        return uv, inside

    def scaled(self, factor: float) -> CameraSpec:
        """The same camera at ``factor`` times the resolution (same field of view)."""
        k = self.intrinsics.copy()
        k[:2] *= factor
        return CameraSpec(
            self.name, round(self.width_px * factor), round(self.height_px * factor), k, self.T_ego_camera
        )

    @staticmethod
    def looking(
        name: str,
        width_px: int,
        height_px: int,
        hfov_rad: float,
        position_m: list[float],
        yaw_rad: float,
        pitch_rad: float = 0.0,
    ) -> CameraSpec:
        """A camera at ``position_m`` in the ego frame looking along ``yaw_rad`` (left positive)."""
        from neurodrive.geometry import make_pose, rot_y, rot_z

        f = 0.5 * width_px / np.tan(0.5 * hfov_rad)
        k = np.array([[f, 0.0, width_px / 2.0], [0.0, f, height_px / 2.0], [0.0, 0.0, 1.0]])
        rot = rot_z(yaw_rad) @ rot_y(pitch_rad) @ R_BODY_FROM_OPENCV
        return CameraSpec(name, width_px, height_px, k, make_pose(position_m, rot))


@dataclass(frozen=True)
class LidarSpec:
    """A spinning LiDAR: every sweep fires each (beam, azimuth bin) ray once.

    Beam b points at elevation ``beam_elevations_rad[b]``; azimuth bin a at ``2*pi*a/azimuth_bins``
    counter-clockwise from the sensor's +x axis. Sensor axes: x forward, y left, z up. Casting,
    fitting and formatting read the rays through :attr:`pattern` (``neurodrive.lidar.pattern``).
    """

    name: str
    T_ego_lidar: np.ndarray  # (4, 4) lidar -> ego
    beam_elevations_rad: np.ndarray  # (B,)
    azimuth_bins: int  # W
    min_range_m: float
    max_range_m: float
    rotation_rate_hz: float

    @property
    def num_beams(self) -> int:
        return int(self.beam_elevations_rad.shape[0])

    @cached_property
    def pattern(self) -> RayPattern:
        """The rays of one sweep and their places in the range image."""
        return BeamGrid(self.beam_elevations_rad, self.azimuth_bins)


@dataclass(frozen=True)
class SensorRig:
    cameras: tuple[CameraSpec, ...]
    lidar: LidarSpec | None  # None: a log without sensors (e.g. an imported ScenarioNet scenario)

    def camera(self, name: str) -> CameraSpec:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        known = ", ".join(c.name for c in self.cameras)
        raise KeyError(f"unknown camera '{name}' (known: {known})")

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)


@dataclass(frozen=True)
class LidarSweep:
    """The returns of one sweep, in the LiDAR frame at the frame's timestamp.

    Every fired ray that is absent here was dropped (no return): see :meth:`return_mask`.
    """

    xyz_m: np.ndarray  # (M, 3) float32
    intensity: np.ndarray  # (M,) float32 in [0, 1]
    beam: np.ndarray  # (M,) int16, beam index of each return
    azimuth_index: np.ndarray  # (M,) int32, azimuth bin of each return

    @property
    def num_returns(self) -> int:
        return int(self.xyz_m.shape[0])

    def range_m(self) -> np.ndarray:
        return np.linalg.norm(self.xyz_m, axis=1)

    def ray_image(self, lidar: LidarSpec, values: np.ndarray, fill: float = 0) -> np.ndarray:
        """(rows, cols) range image of the sensor's pattern holding ``values`` (M,) at the returns
        (their dtype), ``fill`` elsewhere."""
        per_ray = np.full(len(lidar.pattern.directions()), fill, dtype=np.asarray(values).dtype)
        per_ray[lidar.pattern.rays_of(self)] = values
        return to_image(lidar.pattern, per_ray, fill)

    def return_mask(self, lidar: LidarSpec) -> np.ndarray:
        """(rows, cols) bool: True where the ray returned, False where it was dropped (or no ray)."""
        return self.ray_image(lidar, np.ones(self.num_returns, bool), False)

    def range_image(self, lidar: LidarSpec) -> np.ndarray:
        """(rows, cols) range in metres, 0 where dropped."""
        return self.ray_image(lidar, self.range_m().astype(np.float32), 0)


@dataclass(frozen=True)
class ActorTrack:
    """One tracked actor. Its box frame is centred in the box, x forward, y left, z up."""

    actor_id: str
    category: str  # "car", "truck", "pedestrian", "cyclist", ...
    size_m: np.ndarray  # (3,) length, width, height
    poses: np.ndarray  # (N, 4, 4) T_world_box per frame (meaningful where valid)
    valid: np.ndarray  # (N,) bool, True on frames where the actor is tracked

    def is_static(self, tolerance_m: float = 0.05) -> bool:
        pos = self.poses[self.valid, :3, 3]
        return bool(len(pos) == 0 or np.ptp(pos, axis=0).max() <= tolerance_m)


@dataclass(frozen=True)
class Lane:
    lane_id: str
    centerline_m: np.ndarray  # (K, 2) world xy, ordered along the driving direction
    width_m: float
    speed_limit_mps: float
    successors: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoadMap:
    drivable_areas: tuple[np.ndarray, ...]  # each (K, 2) polygon exterior in world xy, metres
    lanes: tuple[Lane, ...]

    def lane(self, lane_id: str) -> Lane:
        for lane in self.lanes:
            if lane.lane_id == lane_id:
                return lane
        raise KeyError(f"unknown lane '{lane_id}'")


WORLD_MARGIN_M = 100.0  # poses given by users (starts, inserts, edits) may lie this far outside the log's extent


@dataclass(frozen=True)
class DrivingLog:
    """A loaded driving log. Images and LiDAR sweeps are read from disk on demand."""

    root: Path
    name: str
    rig: SensorRig
    timestamps_s: np.ndarray  # (N,) strictly increasing
    ego_poses: np.ndarray  # (N, 4, 4) T_world_ego
    tracks: tuple[ActorTrack, ...]
    road_map: RoadMap
    metadata: dict = field(default_factory=dict)
    # Readers injected by the loader so the data model stays independent of the file format.
    _read_image: Callable[[str, int], np.ndarray] | None = field(default=None, repr=False, compare=False)
    _read_lidar: Callable[[int], LidarSweep] | None = field(default=None, repr=False, compare=False)

    @property
    def num_frames(self) -> int:
        return int(self.timestamps_s.shape[0])

    @cached_property
    def extent_xy_m(self) -> tuple[np.ndarray, np.ndarray]:
        """(min (2,), max (2,)) world xy of everything the log holds: ego path, map, actor poses."""
        pts = [self.ego_poses[:, :2, 3]]
        pts += [np.asarray(p, float).reshape(-1, 2) for p in self.road_map.drivable_areas]
        pts += [np.asarray(lane.centerline_m, float).reshape(-1, 2) for lane in self.road_map.lanes]
        pts += [t.poses[t.valid][:, :2, 3] for t in self.tracks]
        xy = np.concatenate(pts)
        return xy.min(axis=0), xy.max(axis=0)

    def outside_extent(self, xy_m: np.ndarray, margin_m: float = WORLD_MARGIN_M) -> bool:
        """True when any of the points (..., 2) lies farther than ``margin_m`` outside ``extent_xy_m``."""
        lo, hi = self.extent_xy_m
        xy = np.asarray(xy_m, float).reshape(-1, 2)
        return bool(np.any(xy < lo - margin_m) or np.any(xy > hi + margin_m))

    @cached_property
    def _track_index(self) -> dict[str, int]:
        return {t.actor_id: i for i, t in enumerate(self.tracks)}

    def track(self, actor_id: str) -> ActorTrack:
        index = self._track_index.get(actor_id)
        if index is None:
            raise DataError(self.root / "tracks.json", "id", f"unknown actor id '{actor_id}'")
        return self.tracks[index]

    def _check_frame(self, frame: int) -> None:
        if not 0 <= frame < self.num_frames:
            raise IndexError(f"frame {frame} out of range [0, {self.num_frames})")

    def image(self, camera: str, frame: int) -> np.ndarray:
        """(H, W, 3) uint8 image of ``camera`` at ``frame``, read from disk."""
        self.rig.camera(camera)
        self._check_frame(frame)
        assert self._read_image is not None, "log has no image reader"
        return self._read_image(camera, frame)

    def lidar(self, frame: int) -> LidarSweep:
        self._check_frame(frame)
        assert self._read_lidar is not None, "log has no LiDAR reader"
        return self._read_lidar(frame)

    def T_world_lidar(self, frame: int) -> np.ndarray:
        return self.ego_poses[frame] @ self.rig.lidar.T_ego_lidar

    def T_world_camera(self, camera: str, frame: int) -> np.ndarray:
        return self.ego_poses[frame] @ self.rig.camera(camera).T_ego_camera

    def actor_poses_at(self, frame: int) -> dict[str, np.ndarray]:
        """T_world_box of every actor valid at ``frame``."""
        return {t.actor_id: t.poses[frame] for t in self.tracks if t.valid[frame]}
