"""KITTI raw (synced + rectified drive) -> log, with ego poses from LiDAR odometry when the drive has
no ``oxts/``.

Camera: ``image_02`` (left colour, rectified); its pose and intrinsics come from ``P_rect_02``,
``R_rect_00`` and ``calib_velo_to_cam`` (points map to pixels by ``P_rect_02 @ R_rect_00 @
[R|T]_velo_to_cam``; KITTI puts pixel centres at integers, this format at +0.5). Ego frame: the
Velodyne's axes with the origin on the ground below it (height estimated from the first sweep's
ground returns). Poses: KISS-ICP odometry on the (already motion-compensated) scans, marked
``estimated``. Times: ``timestamps.txt`` when present, else the nominal 10 Hz. The HDL-64E has no
ring field: rows come from the scan order (each laser's returns are stored together, in azimuth
order), which is how the stored scans are laid out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurodrive.errors import DataError
from neurodrive.geometry import invert_pose, make_pose
from neurodrive.lidar.sensor import LidarSweep
from neurodrive.logs.model import CameraSpec, SensorRig
from neurodrive.logs.writer import LogTiming
from neurodrive.sources.datasets.common import (
    DatasetSource,
    ImportedLog,
    Progress,
    check_image,
    ground_height_m,
    measured_lidar,
    no_progress,
    opencv_intrinsics,
)

KITTI_LASERS = 64


def read_calib(path: Path) -> dict[str, np.ndarray]:
    """``key: numbers`` lines of a KITTI calibration file (non-numeric values are skipped)."""
    if not path.is_file():
        raise DataError(path, None, "missing KITTI calibration file")
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        try:
            out[key.strip()] = np.array([float(v) for v in value.split()])
        except ValueError:
            continue
    return out


def _need(calib: dict[str, np.ndarray], path: Path, key: str, size: int) -> np.ndarray:
    if key not in calib or calib[key].size != size:
        raise DataError(path, key, f"missing or not {size} numbers")
    if not np.all(np.isfinite(calib[key])):
        raise DataError(path, key, "contains NaN or infinite values")
    return calib[key]


def read_velodyne(path: Path) -> LidarSweep:
    """A ``velodyne_points/data/*.bin`` scan: float32 (N, 4) x, y, z, reflectance; ring from scan order."""
    if not path.is_file():
        raise DataError(path, None, "missing Velodyne scan")
    raw = np.fromfile(path, np.float32)
    if raw.size == 0 or raw.size % 4:
        raise DataError(path, "points", f"{raw.size * 4} bytes is not a whole number of 4-float points (truncated?)")
    pts = raw.reshape(-1, 4)
    if not np.all(np.isfinite(pts)):
        raise DataError(path, "points", "contains NaN or infinite values")
    az = np.arctan2(pts[:, 1], pts[:, 0])
    ring = np.concatenate([[0], np.cumsum(np.diff(az) < -np.pi)]).astype(np.int16)
    return LidarSweep(pts[:, :3].copy(), np.clip(pts[:, 3], 0, 1), ring=ring)


def lidar_odometry(
    sweeps: list[LidarSweep], max_range_m: float = 100.0, progress: Progress = no_progress
) -> np.ndarray:
    """(N, 4, 4) T_first_lidar of each sweep by KISS-ICP (no deskewing: the scans are compensated).
    One registration thread: with several, its sums add in a varying order and the poses differ in
    the last bits from run to run."""
    from kiss_icp.config import KISSConfig
    from kiss_icp.kiss_icp import KissICP

    config = KISSConfig()
    config.data.max_range = max_range_m
    config.data.deskew = False
    config.mapping.voxel_size = max_range_m / 100.0
    config.registration.max_num_threads = 1
    odometry = KissICP(config)
    poses = []
    for done, sweep in enumerate(sweeps, 1):
        odometry.register_frame(sweep.xyz_m.astype(np.float64), np.zeros(0))
        poses.append(np.asarray(odometry.last_pose, float).copy())
        progress("LiDAR odometry (KISS-ICP)", done, len(sweeps))
    return np.stack(poses)


def _camera(calib_dir: Path, drive: Path) -> tuple[CameraSpec, np.ndarray]:
    c2c_path, v2c_path = calib_dir / "calib_cam_to_cam.txt", calib_dir / "calib_velo_to_cam.txt"
    c2c, v2c = read_calib(c2c_path), read_calib(v2c_path)
    P = _need(c2c, c2c_path, "P_rect_02", 12).reshape(3, 4)
    R_rect = np.eye(4)
    R_rect[:3, :3] = _need(c2c, c2c_path, "R_rect_00", 9).reshape(3, 3)
    w, h = (int(v) for v in _need(c2c, c2c_path, "S_rect_02", 2))
    T_cam0_velo = make_pose(_need(v2c, v2c_path, "T", 3), _need(v2c, v2c_path, "R", 9).reshape(3, 3))
    K = P[:, :3]
    T_cam2_rect0 = make_pose(np.linalg.solve(K, P[:, 3]))
    T_cam_velo = T_cam2_rect0 @ R_rect @ T_cam0_velo
    cam = CameraSpec("image_02", w, h, opencv_intrinsics(K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]), np.eye(4))
    return cam, T_cam_velo


def _timestamps(drive: Path, n: int) -> tuple[np.ndarray, str]:
    path = drive / "velodyne_points" / "timestamps.txt"
    if path.is_file():
        from datetime import datetime

        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        if len(lines) >= n:
            try:
                t = [datetime.strptime(ln[:26], "%Y-%m-%d %H:%M:%S.%f").timestamp() for ln in lines[:n]]
            except ValueError as e:
                raise DataError(path, None, f"not a KITTI timestamp: {e}") from e
            return np.array(t) - t[0], "velodyne_points/timestamps.txt"
    return np.arange(n) * 0.1, "nominal 10 Hz (no timestamps.txt)"


def import_kitti_raw(
    drive: Path, calib_dir: Path | None = None, max_frames: int | None = None, progress: Progress = no_progress
) -> ImportedLog:
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--frames must be at least 1, got {max_frames}")
    drive = Path(drive)
    calib_dir = Path(calib_dir) if calib_dir else drive.parent
    scans = sorted((drive / "velodyne_points" / "data").glob("*.bin"))[:max_frames]
    if not scans:
        raise DataError(drive / "velodyne_points" / "data", None, "no Velodyne scans (*.bin) in this drive folder")
    image_dir = drive / "image_02" / "data"
    cam, T_cam_velo = _camera(calib_dir, drive)
    sweeps = []
    for done, scan in enumerate(scans, 1):
        sweeps.append(read_velodyne(scan))
        progress("reading Velodyne scans", done, len(scans))
    height = ground_height_m(sweeps[0])
    T_ego_lidar = make_pose([0.0, 0.0, height])
    cam = CameraSpec(cam.name, cam.width_px, cam.height_px, cam.intrinsics, T_ego_lidar @ invert_pose(T_cam_velo))
    images = {}
    for f, scan in enumerate(scans):
        img = image_dir / f"{scan.stem}.png"
        if not img.is_file():
            raise DataError(img, None, f"missing image for scan {scan.name}")
        check_image(img, cam)
        images[(cam.name, f)] = img
        progress("checking images", f + 1, len(scans))
    has_oxts = (drive / "oxts" / "data").is_dir()
    odo = lidar_odometry(sweeps, progress=progress)
    ego = np.stack([T_ego_lidar @ p @ invert_pose(T_ego_lidar) for p in odo])
    times, time_source = _timestamps(drive, len(scans))
    lidar, report = measured_lidar("velodyne", T_ego_lidar, sweeps, "scan order", 120.0, 10.0, True)
    return ImportedLog(
        name=f"kitti-{drive.name}",
        rig=SensorRig((cam,), (lidar,)),
        timestamps_s=times,
        ego_poses=ego,
        tracks=(),
        road_map=None,
        frame_rate_hz=10.0,
        timing=LogTiming(pose_source={"kind": "estimated", "method": "KISS-ICP LiDAR odometry"}),
        images=images,
        sweeps={(lidar.name, f): s for f, s in enumerate(sweeps)},
        metadata={
            "dataset": "kitti-raw",
            "drive": drive.name,
            "times": time_source,
            "lidar_height_m": round(height, 3),
            "lidar_pattern": {lidar.name: report.as_dict()},
            "oxts": "present but not read (poses from LiDAR odometry)" if has_oxts else "absent",
            "licence": "CC BY-NC-SA 3.0 (KITTI, Geiger et al.)",
            "map": "none",
        },
    )


SOURCE = DatasetSource(
    "kitti-raw",
    "KITTI raw synced+rectified drive: image_02, Velodyne, calibration; poses by LiDAR odometry",
    "the drive folder",
    lambda src, o: import_kitti_raw(src, o.get("calib"), o.get("frames"), o.get("progress") or no_progress),
    options=("calib", "frames"),
)
