"""nuScenes (v1.0 table layout) -> log. Reads the JSON tables directly (the devkit pins numpy<2).

Frames are the scene's keyframes (samples); a frame's time is its LIDAR_TOP sweep's. Each sensor
datum has its own ego pose: all of them form the pose stream, so cameras (which fire up to ~40 ms
from the LiDAR) get the pose at their own time. LiDAR points stay in the LIDAR_TOP frame with their
ring index; the ray pattern is measured with rows from the ring. Boxes: ``size`` is (width, length,
height) in nuScenes, stored here as (length, width, height).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurodrive.errors import DataError
from neurodrive.lidar.sensor import LidarSweep
from neurodrive.logs.model import CameraSpec, SensorRig
from neurodrive.sources.datasets.common import (
    DatasetSource,
    ImportedLog,
    Progress,
    check_image,
    dataset_file,
    dataset_pose,
    field_of,
    image_size,
    measured_lidar,
    no_progress,
    numbers,
    opencv_intrinsics,
    read_dataset_json,
    ring_index,
    safe_file_name,
    stream_timing,
    tracks_from_boxes,
)

CATEGORY_RULES = (
    ("vehicle.car", "car"),
    ("vehicle.emergency", "car"),
    ("vehicle.bus", "bus"),
    ("vehicle.truck", "truck"),
    ("vehicle.construction", "truck"),
    ("vehicle.trailer", "truck"),
    ("vehicle.bicycle", "cyclist"),
    ("vehicle.motorcycle", "cyclist"),
    ("human.pedestrian", "pedestrian"),
)
TABLES: tuple[str, ...] = ("scene", "sample", "sample_data", "calibrated_sensor", "sensor", "ego_pose")
TABLES += ("sample_annotation", "instance", "category")


def _tables(root: Path, version: str) -> dict[str, dict[str, dict]]:
    folder = root / version
    if not folder.is_dir():
        raise DataError(folder, None, f"no table folder for version '{version}' (is {root} a nuScenes dataroot?)")
    out: dict[str, dict[str, dict]] = {}
    for name in TABLES:
        path = folder / f"{name}.json"
        rows = read_dataset_json(path, f"nuScenes table '{name}'")
        if not isinstance(rows, list):
            raise DataError(path, None, "expected a list of records")
        out[name] = {str(field_of(r, "token", path, f"[{i}]")): r for i, r in enumerate(rows)}
    return out


def _ref(t: dict, tables: Path, table: str, record: dict, key: str, target: str) -> dict:
    """The ``target`` record that ``record[key]`` (a row of ``table``) points to; one DataError
    naming the table file and field when the token is missing or dangling."""
    where = str(record.get("token", "?"))
    token = field_of(record, key, tables / f"{table}.json", where)
    row = t[target].get(token) if isinstance(token, str) else None
    if row is None:
        raise DataError(tables / f"{table}.json", f"{where}.{key}", f"refers to a missing {target} record {token!r}")
    return row


def read_pcd_bin(path: Path) -> LidarSweep:
    """A LIDAR_TOP ``.pcd.bin``: float32 (N, 5) x, y, z, intensity (0-255), ring."""
    if not path.is_file():
        raise DataError(path, None, "missing LiDAR file")
    raw = np.fromfile(path, np.float32)
    if raw.size == 0 or raw.size % 5:
        raise DataError(path, "points", f"size {raw.size * 4} bytes is not a whole number of 5-float points")
    pts = raw.reshape(-1, 5)
    if not np.all(np.isfinite(pts)):
        raise DataError(path, "points", "contains NaN or infinite values")
    ring = ring_index(pts[:, 4], path, "ring")
    return LidarSweep(pts[:, :3].copy(), np.clip(pts[:, 3] / 255.0, 0, 1).astype(np.float32), ring=ring)


def _pose(record: dict, source: Path, where: str) -> np.ndarray:
    return dataset_pose(
        field_of(record, "rotation", source, where), field_of(record, "translation", source, where), source, where
    )


def _time_s(record: dict, source: Path) -> float:
    where = str(record.get("token", "?"))
    return float(numbers(field_of(record, "timestamp", source, where), 1, source, f"{where}.timestamp")[0]) * 1e-6


def import_nuscenes(
    root: Path, version: str = "v1.0-mini", scene: str | None = None, progress: Progress = no_progress
) -> ImportedLog:
    """The keyframes of one nuScenes scene (default: the first in scene.json)."""
    root = Path(root)
    t = _tables(root, version)
    tables = root / version
    scenes = {str(field_of(s, "name", tables / "scene.json", k)): s for k, s in t["scene"].items()}
    if scene is None:
        scene = sorted(scenes)[0] if scenes else None
    if scene not in scenes:
        raise DataError(tables / "scene.json", "name", f"unknown scene '{scene}' (known: {', '.join(sorted(scenes))})")
    samples: list[dict] = []
    token = field_of(scenes[scene], "first_sample_token", tables / "scene.json", scenes[scene].get("token", scene))
    while token:
        sample = t["sample"].get(token) if isinstance(token, str) else None
        if sample is None:
            raise DataError(tables / "sample.json", "token", f"scene '{scene}' refers to a missing sample {token!r}")
        if any(s is sample for s in samples):
            raise DataError(tables / "sample.json", f"{token}.next", f"scene '{scene}': the samples form a loop")
        samples.append(sample)
        token = sample.get("next", "")
    data: dict[str, dict[str, dict]] = {s["token"]: {} for s in samples}
    for sd in t["sample_data"].values():
        if sd.get("is_key_frame") and sd.get("sample_token") in data:
            sensor = _sensor(t, tables, sd)
            where = f"{sensor.get('token', '?')}.channel"
            channel = safe_file_name(
                field_of(sensor, "channel", tables / "sensor.json", where), tables / "sensor.json", where, "sensor name"
            )
            data[sd["sample_token"]][channel] = sd
    return _assemble(root, tables, t, scene, samples, data, progress)


def _assemble(
    root: Path, tables: Path, t: dict, scene: str, samples: list, data: dict, progress: Progress
) -> ImportedLog:
    sd_file, cs_file = tables / "sample_data.json", tables / "calibrated_sensor.json"
    first = data[samples[0]["token"]]
    if "LIDAR_TOP" not in first:
        raise DataError(sd_file, "LIDAR_TOP", f"scene '{scene}' has no LIDAR_TOP keyframe")
    cam_names = sorted(ch for ch, sd in first.items() if _sensor(t, tables, sd).get("modality") == "camera")
    cameras = [_camera(t, tables, ch, first[ch]) for ch in cam_names]
    n = len(samples)
    lidar_sd = [data[s["token"]].get("LIDAR_TOP") for s in samples]
    missing = [f for f, sd in enumerate(lidar_sd) if sd is None]
    if missing:
        raise DataError(sd_file, "LIDAR_TOP", f"scene '{scene}' has no LIDAR_TOP keyframe at sample {missing[0]}")
    times = np.array([_time_s(sd, sd_file) for sd in lidar_sd])
    ego = np.stack([_ego_pose(t, tables, sd) for sd in lidar_sd])
    cam_times = np.full((len(cameras), n), np.nan)
    images: dict[tuple[str, int], Path] = {}
    stream: dict[float, np.ndarray] = {}
    sweeps = []
    for f, s in enumerate(samples):
        for c, cam in enumerate(cameras):
            sd = data[s["token"]].get(cam.name)
            if sd is None:
                continue
            cam_times[c, f] = _time_s(sd, sd_file)
            images[(cam.name, f)] = dataset_file(root, sd.get("filename"), sd_file, f"{sd['token']}.filename")
            check_image(images[(cam.name, f)], cam)
            stream[cam_times[c, f]] = _ego_pose(t, tables, sd)
        stream[times[f]] = ego[f]
        sd = lidar_sd[f]
        sweeps.append(read_pcd_bin(dataset_file(root, sd.get("filename"), sd_file, f"{sd['token']}.filename")))
        progress("reading nuScenes samples", f + 1, n)
    cs = _ref(t, tables, "sample_data", lidar_sd[0], "calibrated_sensor_token", "calibrated_sensor")
    lidar, report = measured_lidar(
        "LIDAR_TOP",
        _pose(cs, cs_file, cs["token"]),
        sweeps,
        "ring index",
        max_range_m=120.0,
        rotation_rate_hz=20.0,
        motion_compensated=False,
    )
    boxes, labels = _boxes(t, tables, samples)
    return ImportedLog(
        name=f"nuscenes-{scene}",
        rig=SensorRig(tuple(cameras), (lidar,)),
        timestamps_s=times,
        ego_poses=ego,
        tracks=tracks_from_boxes(boxes, labels, CATEGORY_RULES, n),
        road_map=None,
        frame_rate_hz=2.0,
        timing=stream_timing(
            cam_times, times.copy(), stream, {"kind": "measured", "method": "nuScenes ego_pose (localisation)"}
        ),
        images=images,
        sweeps={(lidar.name, f): s for f, s in enumerate(sweeps)},
        metadata={
            "dataset": "nuscenes",
            "scene": scene,
            "lidar_pattern": {lidar.name: report.as_dict()},
            "licence": "CC BY-NC-SA 4.0 (nuScenes, Motional)",
            "map": "none (nuScenes maps are not read)",
        },
    )


def _camera(t: dict, tables: Path, channel: str, sd: dict) -> CameraSpec:
    """The camera of a keyframe's sample_data record ``sd`` (size, intrinsics, extrinsics checked)."""
    sd_file, cs_file = tables / "sample_data.json", tables / "calibrated_sensor.json"
    cs = _ref(t, tables, "sample_data", sd, "calibrated_sensor_token", "calibrated_sensor")
    k = numbers(field_of(cs, "camera_intrinsic", cs_file, cs["token"]), 9, cs_file, f"{cs['token']}.camera_intrinsic")
    width, height = image_size(
        field_of(sd, "width", sd_file, sd["token"]), field_of(sd, "height", sd_file, sd["token"]), sd_file, sd["token"]
    )
    K = opencv_intrinsics(k[0], k[4], k[2], k[5])
    return CameraSpec(channel, width, height, K, _pose(cs, cs_file, cs["token"]))


def _ego_pose(t: dict, tables: Path, sd: dict) -> np.ndarray:
    pose = _ref(t, tables, "sample_data", sd, "ego_pose_token", "ego_pose")
    return _pose(pose, tables / "ego_pose.json", str(pose.get("token", "?")))


def _sensor(t: dict, tables: Path, sd: dict) -> dict:
    """The sensor record of a sample_data record (through its calibrated_sensor)."""
    cs = _ref(t, tables, "sample_data", sd, "calibrated_sensor_token", "calibrated_sensor")
    return _ref(t, tables, "calibrated_sensor", cs, "sensor_token", "sensor")


SOURCE = DatasetSource(
    "nuscenes",
    "nuScenes dataroot (JSON tables): keyframes of one scene, 6 cameras, LIDAR_TOP, boxes",
    "the dataroot folder",
    lambda src, o: import_nuscenes(
        src, o.get("version") or "v1.0-mini", o.get("scene"), o.get("progress") or no_progress
    ),
    options=("scene", "version"),
)


def _boxes(t: dict, tables: Path, samples: list) -> tuple[dict[str, list], dict[str, str]]:
    """Per-instance boxes (frame, T_world_box, (l, w, h)) and nuScenes category names."""
    boxes: dict[str, list] = {}
    labels: dict[str, str] = {}
    frame_of = {s["token"]: f for f, s in enumerate(samples)}
    source = tables / "sample_annotation.json"
    for a in t["sample_annotation"].values():
        if a.get("sample_token") not in frame_of:
            continue
        where = str(a["token"])
        w, length, h = numbers(field_of(a, "size", source, where), 3, source, f"{where}.size")
        if min(w, length, h) <= 0:
            raise DataError(source, f"{where}.size", f"box size must be positive, got {[w, length, h]}")
        instance = _ref(t, tables, "sample_annotation", a, "instance_token", "instance")
        category = _ref(t, tables, "instance", instance, "category_token", "category")
        inst = instance["token"]
        boxes.setdefault(inst, []).append(
            (frame_of[a["sample_token"]], _pose(a, source, where), np.array([length, w, h]))
        )
        labels[inst] = str(category.get("name", "other"))
    return boxes, labels
