"""Argoverse 2 sensor-dataset log -> log. Reads the feather files with pyarrow (the ``av2`` package
pulls kornia, numba, polars and PyAV) and the vector map JSON directly.

Frames are the annotation timestamps (10 Hz); the ego poses (``city_SE3_egovehicle``, ~170 Hz)
form the pose stream and are interpolated at each frame. A frame has a LiDAR sweep when a sweep file
carries its timestamp (``lidar_timestamps_s`` NaN elsewhere). Sweeps: a sweep file holds both
LiDARs, split by ``laser_number`` (0-31: ``up_lidar``, 32-63: ``down_lidar``, which is mounted upside
down; measured: each group's lasers keep one elevation in their own sensor's frame), each moved from the
ego frame into its sensor's frame (``calibration/egovehicle_SE3_sensor.feather``), intensity / 255, the
laser number within the sensor as ring (the pattern's rows) and ``offset_ns`` as time offsets.
Cuboids are in the ego frame at their timestamp. Map: lane segments (centreline = midline of the two
boundaries) and drivable areas.
Camera images, when a log has them, are not imported yet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurodrive.errors import DataError
from neurodrive.geometry import interpolate_poses, invert_pose, poses_from_quaternions
from neurodrive.lidar.sensor import LidarSweep
from neurodrive.logs.model import Lane, RoadMap, SensorRig
from neurodrive.logs.writer import LogTiming
from neurodrive.sources.datasets.common import (
    DatasetSource,
    ImportedLog,
    Progress,
    dataset_pose,
    measured_lidar,
    no_progress,
    read_dataset_json,
    ring_index,
    tracks_from_boxes,
)

CATEGORY_RULES = (
    ("regular_vehicle", "car"),
    ("large_vehicle", "truck"),
    ("box_truck", "truck"),
    ("truck", "truck"),
    ("vehicular_trailer", "truck"),
    ("articulated_bus", "bus"),
    ("school_bus", "bus"),
    ("bus", "bus"),
    ("pedestrian", "pedestrian"),
    ("bicyclist", "cyclist"),
    ("motorcyclist", "cyclist"),
    ("wheeled_rider", "cyclist"),
)
DEFAULT_SPEED_LIMIT_MPS = 11.2  # 25 mph: AV2's map has no speed limits


def read_feather(path: Path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Columns of a feather file as numpy arrays; one DataError naming the file and a missing column."""
    import pyarrow as pa
    import pyarrow.feather as feather

    if not path.is_file():
        raise DataError(path, None, "missing feather file")
    try:
        table = feather.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(path, None, f"corrupt or truncated feather file: {e}") from e
    out = {}
    for c in columns:
        if c not in table.column_names:
            raise DataError(path, c, "missing column")
        out[c] = table.column(c).to_numpy(zero_copy_only=False)
    return out


def _poses(cols: dict[str, np.ndarray], path: Path) -> np.ndarray:
    """Poses of a feather file's rows; one DataError naming the file, column and row of a NaN or
    infinite value or a zero quaternion."""
    for c in POSE_COLUMNS:
        bad = ~np.isfinite(cols[c].astype(np.float64))
        if np.any(bad):
            raise DataError(path, f"{c}[{int(np.argmax(bad))}]", "contains NaN or infinite values")
    q = np.stack([cols["qw"], cols["qx"], cols["qy"], cols["qz"]], axis=1).astype(np.float64)
    t = np.stack([cols["tx_m"], cols["ty_m"], cols["tz_m"]], axis=1).astype(np.float64)
    norm = np.linalg.norm(q, axis=1)
    if np.any(norm < 1e-6):
        raise DataError(path, f"qw[{int(np.argmax(norm < 1e-6))}]", "is a zero quaternion")
    return poses_from_quaternions(q, t)


POSE_COLUMNS = ("qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m")


def read_sweep(path: Path) -> LidarSweep:
    c = read_feather(path, ("x", "y", "z", "intensity", "laser_number", "offset_ns"))
    xyz = np.stack([c["x"], c["y"], c["z"]], axis=1).astype(np.float32)
    if not np.all(np.isfinite(xyz)):
        raise DataError(path, "x", "contains NaN or infinite values")
    return LidarSweep(
        xyz,
        np.clip(c["intensity"].astype(np.float32) / 255.0, 0, 1),
        ring=ring_index(c["laser_number"], path, "laser_number"),
        time_offset_s=(c["offset_ns"].astype(np.float64) * 1e-9).astype(np.float32),
    )


LIDAR_LASERS = (("up_lidar", 0), ("down_lidar", 32))  # (sensor, first laser_number); 32 lasers each
LASERS_PER_LIDAR = 32


def lidar_extrinsics(log_dir: Path) -> dict[str, np.ndarray]:
    """T_ego_lidar of both LiDARs (``calibration/egovehicle_SE3_sensor.feather``)."""
    path = log_dir / "calibration" / "egovehicle_SE3_sensor.feather"
    cal = read_feather(path, ("sensor_name", "qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m"))
    names = [str(n) for n in cal["sensor_name"]]
    out = {}
    for lidar, _ in LIDAR_LASERS:
        if lidar not in names:
            raise DataError(path, "sensor_name", f"has no '{lidar}' row")
        i = names.index(lidar)
        q, t = [cal[k][i] for k in ("qw", "qx", "qy", "qz")], [cal[k][i] for k in ("tx_m", "ty_m", "tz_m")]
        out[lidar] = dataset_pose(q, t, path, lidar)
    return out


def split_sweep(sweep: LidarSweep, extrinsics: dict[str, np.ndarray]) -> dict[str, LidarSweep]:
    """The returns of each LiDAR (by laser number) in its own sensor frame, rings counted from 0."""
    assert sweep.ring is not None and sweep.time_offset_s is not None
    out = {}
    for lidar, first in LIDAR_LASERS:
        sel = (sweep.ring >= first) & (sweep.ring < first + LASERS_PER_LIDAR)
        T_lidar_ego = invert_pose(extrinsics[lidar])
        xyz = sweep.xyz_m[sel].astype(np.float64) @ T_lidar_ego[:3, :3].T + T_lidar_ego[:3, 3]
        out[lidar] = LidarSweep(
            xyz.astype(np.float32),
            sweep.intensity[sel],
            ring=(sweep.ring[sel] - first).astype(np.int16),
            time_offset_s=sweep.time_offset_s[sel],
        )
    return out


def read_map(log_dir: Path) -> RoadMap | None:
    import shapely

    found = sorted((log_dir / "map").glob("log_map_archive_*.json"))
    if not found:
        return None
    data = read_dataset_json(found[0], "AV2 vector map")
    lanes = []
    for seg in data.get("lane_segments", {}).values():
        left = np.array([[p["x"], p["y"]] for p in seg["left_lane_boundary"]])
        right = np.array([[p["x"], p["y"]] for p in seg["right_lane_boundary"]])
        s = np.linspace(0, 1, max(len(left), len(right), 2))
        lp = np.stack([np.interp(s, np.linspace(0, 1, len(left)), left[:, k]) for k in range(2)], axis=1)
        rp = np.stack([np.interp(s, np.linspace(0, 1, len(right)), right[:, k]) for k in range(2)], axis=1)
        width = float(np.clip(np.mean(np.linalg.norm(lp - rp, axis=1)), 0.5, 50.0))
        succ = tuple(str(x) for x in seg.get("successors", []) or [])
        lanes.append(Lane(str(seg["id"]), (lp + rp) / 2, width, DEFAULT_SPEED_LIMIT_MPS, succ))
    areas = []
    for area in data.get("drivable_areas", {}).values():
        poly = shapely.make_valid(shapely.Polygon([(p["x"], p["y"]) for p in area["area_boundary"]]))
        for part in getattr(poly, "geoms", [poly]):
            if isinstance(part, shapely.Polygon) and part.area > 0.01:
                areas.append(np.asarray(part.exterior.coords)[:-1])
    known = {lane.lane_id for lane in lanes}
    lanes = [
        Lane(la.lane_id, la.centerline_m, la.width_m, la.speed_limit_mps, tuple(s for s in la.successors if s in known))
        for la in lanes
    ]
    return RoadMap(tuple(areas), tuple(lanes))


def import_av2(log_dir: Path, progress: Progress = no_progress) -> ImportedLog:
    log_dir = Path(log_dir)
    pose_path = log_dir / "city_SE3_egovehicle.feather"
    pose_cols = read_feather(pose_path, ("timestamp_ns", *POSE_COLUMNS))
    if len(pose_cols["timestamp_ns"]) == 0:
        raise DataError(pose_path, "timestamp_ns", "holds no poses")
    order = np.argsort(pose_cols["timestamp_ns"])
    stream_t = pose_cols["timestamp_ns"][order].astype(np.int64)
    keep = np.concatenate([[True], np.diff(stream_t) > 0])
    stream_t0 = int(stream_t[0])
    stream_s = (stream_t[keep] - stream_t0) * 1e-9
    stream = _poses({k: v[order][keep] for k, v in pose_cols.items()}, pose_path)
    ann_path = log_dir / "annotations.feather"
    ann = read_feather(
        ann_path, ("timestamp_ns", "track_uuid", "category", "length_m", "width_m", "height_m", *POSE_COLUMNS)
    )
    sweep_files = {int(p.stem): p for p in sorted((log_dir / "sensors" / "lidar").glob("*.feather"))}
    frame_ns = np.unique(np.concatenate([ann["timestamp_ns"].astype(np.int64), np.array(list(sweep_files), np.int64)]))
    times = (frame_ns - stream_t0) * 1e-9
    ego = interpolate_poses(stream_s, stream, times)
    frame_of = {int(t): i for i, t in enumerate(frame_ns)}
    box_poses = _poses(ann, ann_path)
    sizes = np.stack([ann["length_m"], ann["width_m"], ann["height_m"]], axis=1).astype(np.float64)
    bad_size = ~np.all(np.isfinite(sizes) & (sizes > 0), axis=1)
    if np.any(bad_size):
        raise DataError(ann_path, f"length_m[{int(np.argmax(bad_size))}]", "box sizes must be positive finite numbers")
    boxes: dict[str, list] = {}
    labels: dict[str, str] = {}
    for i, (t, uuid) in enumerate(zip(ann["timestamp_ns"], ann["track_uuid"])):
        f = frame_of[int(t)]
        size = sizes[i]
        boxes.setdefault(str(uuid), []).append((f, ego[f] @ box_poses[i], size))
        labels[str(uuid)] = str(ann["category"][i])
    lidar_times = np.full((len(LIDAR_LASERS), len(frame_ns)), np.nan)
    extrinsics = lidar_extrinsics(log_dir) if sweep_files else {}
    sweeps = {}
    for done, (ns, path) in enumerate(sweep_files.items(), 1):
        progress("reading AV2 sweeps", done, len(sweep_files))
        for lidar, part in split_sweep(read_sweep(path), extrinsics).items():
            sweeps[(lidar, frame_of[ns])] = part
        lidar_times[:, frame_of[ns]] = times[frame_of[ns]]
    lidars, reports = [], {}
    for lidar, _ in LIDAR_LASERS if sweeps else ():
        own = [s for (name, _), s in sorted(sweeps.items()) if name == lidar]
        spec, report = measured_lidar(lidar, extrinsics[lidar], own, "laser number", 200.0, 10.0, False)
        lidars.append(spec)
        reports[lidar] = report.as_dict()
    road_map = read_map(log_dir)
    return ImportedLog(
        name=f"av2-{log_dir.name}",
        rig=SensorRig((), tuple(lidars)),
        timestamps_s=times,
        ego_poses=ego,
        tracks=tracks_from_boxes(boxes, labels, CATEGORY_RULES, len(frame_ns)),
        road_map=road_map,
        frame_rate_hz=10.0,
        timing=LogTiming(
            None,
            lidar_times if lidars else None,
            stream_s,
            stream,
            {"kind": "measured", "method": "AV2 city_SE3_egovehicle"},
        ),
        sweeps=sweeps,
        metadata={
            "dataset": "av2",
            "log": log_dir.name,
            "time_origin_ns": stream_t0,
            "lidar_pattern": reports or None,
            "licence": "CC BY-NC-SA 4.0 (Argoverse 2)",
            "map": "AV2 vector map" if road_map else "none",
            "cameras": "not imported (images absent in this sample)",
        },
    )


SOURCE = DatasetSource(
    "av2",
    "Argoverse 2 sensor-dataset log folder: poses, LiDAR sweeps, cuboid tracks, vector map",
    "the log folder",
    lambda src, o: import_av2(src, o.get("progress") or no_progress),
)
