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
from neurodrive.geometry import R_BODY_FROM_OPENCV, interpolate_poses, transform_points
from neurodrive.lidar.sensor import LidarSpec, LidarSweep

CATEGORIES = ("car", "truck", "bus", "pedestrian", "cyclist", "other")  # the one category set of actor tracks


def brown_conrady(xy: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """Distorted normalised image coordinates (..., 2) of ideal ones; ``coefficients`` k1, k2, p1, p2, k3."""
    k1, k2, p1, p2, k3 = (float(c) for c in coefficients)
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=-1)


@dataclass(frozen=True)
class CameraSpec:
    """A pinhole camera with optional Brown-Conrady lens distortion. Camera axes follow OpenCV: x
    right, y down, z forward. Rays and projections model the distortion, so images stay as recorded."""

    name: str
    width_px: int
    height_px: int
    intrinsics: np.ndarray  # (3, 3) K in pixels; pixel centres sit at integer + 0.5
    T_ego_camera: np.ndarray  # (4, 4) camera -> ego
    distortion: np.ndarray | None = None  # (5,) k1, k2, p1, p2, k3 (OpenCV order); None: no distortion

    @property
    def is_distorted(self) -> bool:
        return self.distortion is not None and bool(np.any(np.asarray(self.distortion) != 0))

    def distort(self, xy: np.ndarray) -> np.ndarray:
        """Distorted normalised image coordinates of ideal ones (..., 2)."""
        if not self.is_distorted:
            return xy
        return brown_conrady(xy, np.asarray(self.distortion, float))

    def undistort(self, xy_distorted: np.ndarray, iterations: int = 20) -> np.ndarray:
        """Ideal normalised coordinates of distorted ones (..., 2), by fixed-point iteration."""
        if not self.is_distorted:
            return xy_distorted
        xy = xy_distorted.copy()
        for _ in range(iterations):
            xy = xy + (xy_distorted - self.distort(xy))
        return xy

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
        y = (vv - k[1, 2]) / k[1, 1]
        xy = self.undistort(np.stack([(uu - k[0, 2] - k[0, 1] * y) / k[0, 0], y], axis=-1))
        d = np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1)
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def project(self, points_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) of camera-frame points (N, 3) and a mask of those in view."""
        z = points_camera[:, 2]
        safe_z = np.where(z > 1e-6, z, 1.0)
        xy = self.distort(points_camera[:, :2] / safe_z[:, None])
        k = self.intrinsics
        uv = np.stack([k[0, 0] * xy[:, 0] + k[0, 1] * xy[:, 1] + k[0, 2], k[1, 1] * xy[:, 1] + k[1, 2]], axis=1)
        inside = (
            (z > 1e-6) & (uv[:, 0] >= 0) & (uv[:, 0] < self.width_px) & (uv[:, 1] >= 0) & (uv[:, 1] < self.height_px)
        )
        return uv, inside

    def scaled(self, factor: float) -> CameraSpec:
        """The same camera at ``factor`` times the resolution (same field of view)."""
        k = self.intrinsics.copy()
        k[:2] *= factor
        return CameraSpec(
            self.name,
            round(self.width_px * factor),
            round(self.height_px * factor),
            k,
            self.T_ego_camera,
            self.distortion,
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
class SensorRig:
    """The cameras and LiDARs of a log (none: e.g. an imported ScenarioNet scenario). Real rigs hold
    several LiDARs (PandaSet 2, Argoverse 2 2); the first is the primary one (:attr:`lidar`)."""

    cameras: tuple[CameraSpec, ...]
    lidars: tuple[LidarSpec, ...] = ()

    @property
    def lidar(self) -> LidarSpec | None:
        """The primary LiDAR (the first), None without LiDAR."""
        return self.lidars[0] if self.lidars else None

    @property
    def lidar_names(self) -> tuple[str, ...]:
        return tuple(lid.name for lid in self.lidars)

    def lidar_named(self, name: str | None) -> LidarSpec:
        """The LiDAR called ``name`` (None: the primary one); KeyError naming the known ones."""
        for lid in self.lidars:
            if name is None or lid.name == name:
                return lid
        known = ", ".join(self.lidar_names) or "none"
        raise KeyError(f"unknown LiDAR '{name}' (known: {known})")

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
class ActorTrack:
    """One tracked actor. Its box frame is centred in the box, x forward, y left, z up."""

    actor_id: str
    category: str  # one of CATEGORIES: "car", "truck", "bus", "pedestrian", "cyclist", "other"
    size_m: np.ndarray  # (3,) length, width, height
    poses: np.ndarray  # (N, 4, 4) T_world_box per frame (meaningful where valid)
    valid: np.ndarray  # (N,) bool, True on frames where the actor is tracked
    dataset_category: str = ""  # the dataset's own label, e.g. "vehicle.car", "REGULAR_VEHICLE"

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
    # Sensor times (v2 logs); None: every sensor at the frame's timestamp. NaN: no data on that frame.
    camera_timestamps_s: np.ndarray | None = None  # (C, N), cameras in rig order
    lidar_timestamps_s: np.ndarray | None = None  # (L, N), LiDARs in rig order
    # A denser ego trajectory to interpolate sensor poses in (e.g. every datum's pose); None: ego_poses.
    pose_stream: tuple[np.ndarray, np.ndarray] | None = None  # (timestamps_s (K,), T_world_ego (K, 4, 4))
    pose_source: dict = field(default_factory=lambda: {"kind": "measured", "method": "unknown"})
    has_map: bool = True  # False: road_map is a corridor around the logged ego path (see corridor_map)
    # Readers injected by the loader so the data model stays independent of the file format.
    _read_image: Callable[[str, int], np.ndarray] | None = field(default=None, repr=False, compare=False)
    _read_lidar: Callable[[str, int], LidarSweep] | None = field(default=None, repr=False, compare=False)

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
        if not self.has_image(camera, frame):
            raise DataError(self.root, f"camera {camera} frame {frame}", "this log has no image there")
        assert self._read_image is not None, "log has no image reader"
        return self._read_image(camera, frame)

    def lidar(self, frame: int, lidar: str | None = None) -> LidarSweep:
        """The sweep of LiDAR ``lidar`` (None: the primary one) at ``frame``, read from disk."""
        spec = self.rig.lidar_named(lidar) if self.rig.lidars else None
        self._check_frame(frame)
        if spec is None or not self.has_lidar(frame, spec.name):
            where = f"lidar {spec.name if spec else lidar} frame {frame}"
            raise DataError(self.root, where, "this log has no LiDAR sweep there")
        assert self._read_lidar is not None, "log has no LiDAR reader"
        return self._read_lidar(spec.name, frame)

    def camera_time(self, camera: str, frame: int) -> float:
        """Timestamp (s) of ``camera``'s image at ``frame`` (NaN: no image on that frame)."""
        if self.camera_timestamps_s is None:
            return float(self.timestamps_s[frame])
        return float(self.camera_timestamps_s[self.rig.camera_names.index(camera), frame])

    def lidar_time(self, frame: int, lidar: str | None = None) -> float:
        """Timestamp (s) of LiDAR ``lidar``'s sweep (None: the primary one) at ``frame`` (NaN: no sweep)."""
        if self.lidar_timestamps_s is None:
            return float(self.timestamps_s[frame])
        index = 0 if lidar is None else self.rig.lidar_names.index(self.rig.lidar_named(lidar).name)
        return float(self.lidar_timestamps_s[index, frame])

    def has_image(self, camera: str, frame: int) -> bool:
        return bool(np.isfinite(self.camera_time(camera, frame)))

    def has_lidar(self, frame: int, lidar: str | None = None) -> bool:
        """Whether LiDAR ``lidar`` (None: the primary one) has a sweep at ``frame``."""
        if not self.rig.lidars or (lidar is not None and lidar not in self.rig.lidar_names):
            return False
        return bool(np.isfinite(self.lidar_time(frame, lidar)))

    def lidars_at(self, frame: int) -> tuple[LidarSpec, ...]:
        """The LiDARs with a sweep at ``frame``, in rig order."""
        return tuple(lid for lid in self.rig.lidars if self.has_lidar(frame, lid.name))

    def world_returns(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Every LiDAR's returns at ``frame`` in the world: points (M, 3) float64 and intensities (M,)
        (empty without a sweep there)."""
        sweeps = [(self.T_world_lidar(frame, lid.name), self.lidar(frame, lid.name)) for lid in self.lidars_at(frame)]
        if not sweeps:
            return np.zeros((0, 3)), np.zeros(0, np.float32)
        xyz = np.concatenate([transform_points(T, sweep.xyz_m.astype(np.float64)) for T, sweep in sweeps])
        return xyz, np.concatenate([sweep.intensity for _, sweep in sweeps])

    def ego_pose_at(self, time_s: float) -> np.ndarray:
        """T_world_ego at ``time_s``, interpolated in the pose stream (or the frames' poses)."""
        times, poses = self.pose_stream if self.pose_stream is not None else (self.timestamps_s, self.ego_poses)
        return interpolate_poses(times, poses, float(time_s))

    def _sensor_pose(self, time_s: float, frame: int) -> np.ndarray:
        if not np.isfinite(time_s) or time_s == self.timestamps_s[frame]:
            return self.ego_poses[frame]
        return self.ego_pose_at(time_s)

    def T_world_lidar(self, frame: int, lidar: str | None = None) -> np.ndarray:
        """LiDAR ``lidar``'s pose (None: the primary one) at its sweep's time on ``frame``."""
        spec = self.rig.lidar_named(lidar)
        return self._sensor_pose(self.lidar_time(frame, spec.name), frame) @ spec.T_ego_lidar

    def T_world_camera(self, camera: str, frame: int) -> np.ndarray:
        """The camera's pose at its image's time on ``frame``."""
        cam = self.rig.camera(camera)
        return self._sensor_pose(self.camera_time(camera, frame), frame) @ cam.T_ego_camera

    def actor_poses_at(self, frame: int) -> dict[str, np.ndarray]:
        """T_world_box of every actor valid at ``frame``."""
        return {t.actor_id: t.poses[frame] for t in self.tracks if t.valid[frame]}


CORRIDOR_HALF_WIDTH_M = 6.0  # drivable corridor around the logged ego path when a log has no map
CORRIDOR_EXTENSION_M = 30.0  # the corridor continues this far beyond the path's ends


def corridor_map(ego_poses: np.ndarray, speed_limit_mps: float = 13.9) -> RoadMap:
    """The map of a log without one: a lane along the logged ego path (extended along the first and
    last heading) and a drivable corridor around it."""
    import shapely

    xy = ego_poses[:, :2, 3]
    keep = np.concatenate([[True], np.linalg.norm(np.diff(xy, axis=0), axis=1) > 0.05])
    xy = xy[keep]
    head0, head1 = ego_poses[0, :2, 0], ego_poses[-1, :2, 0]
    head0, head1 = head0 / np.linalg.norm(head0), head1 / np.linalg.norm(head1)
    line = np.vstack([xy[0] - CORRIDOR_EXTENSION_M * head0, xy, xy[-1] + CORRIDOR_EXTENSION_M * head1])
    area = shapely.LineString(line).buffer(CORRIDOR_HALF_WIDTH_M, cap_style="flat").simplify(0.05)
    polys = list(area.geoms) if hasattr(area, "geoms") else [area]
    drivable = tuple(np.asarray(p.exterior.coords)[:-1] for p in polys)
    return RoadMap(drivable, (Lane("ego_path", line, 3.5, speed_limit_mps),))
