"""nuScenes (v1.0 table layout) -> log. Reads the JSON tables directly (the devkit pins numpy<2).

Frames are the scene's keyframes (samples); a frame's time is its LIDAR_TOP sweep's. Each sensor
datum has its own ego pose: all of them form the pose stream, so cameras (which fire up to ~40 ms
from the LiDAR) get the pose at their own time. LiDAR points stay in the LIDAR_TOP frame with their
ring index; the ray pattern is measured with rows from the ring. Boxes: ``size`` is (width, length,
height) in nuScenes, stored here as (length, width, height).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from neurodrive.errors import DataError
from neurodrive.geometry import pose_from_quaternion
from neurodrive.logs.model import CameraSpec, LidarSweep, SensorRig
from neurodrive.sources.datasets.common import (
    DatasetSource,
    ImportedLog,
    check_image_size,
    field_of,
    measured_lidar,
    opencv_intrinsics,
    read_dataset_json,
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


def read_pcd_bin(path: Path) -> LidarSweep:
    """A LIDAR_TOP ``.pcd.bin``: float32 (N, 5) x, y, z, intensity (0-255), ring."""
    if not path.is_file():
        raise DataError(path, None, "missing LiDAR file")
    raw = np.fromfile(path, np.float32)
    if raw.size % 5:
        raise DataError(path, "points", f"size {raw.size * 4} bytes is not a whole number of 5-float points")
    pts = raw.reshape(-1, 5)
    if not np.all(np.isfinite(pts)):
        raise DataError(path, "points", "contains NaN or infinite values")
    return LidarSweep(
        pts[:, :3].copy(), np.clip(pts[:, 3] / 255.0, 0, 1).astype(np.float32), ring=pts[:, 4].astype(np.int16)
    )


def _pose(record: dict, source: Path, where: str) -> np.ndarray:
    return pose_from_quaternion(
        field_of(record, "rotation", source, where), field_of(record, "translation", source, where)
    )


def import_nuscenes(root: Path, version: str = "v1.0-mini", scene: str | None = None) -> ImportedLog:
    """The keyframes of one nuScenes scene (default: the first in scene.json)."""
    root = Path(root)
    t = _tables(root, version)
    tables = root / version
    scenes = {s["name"]: s for s in t["scene"].values()}
    if scene is None:
        scene = sorted(scenes)[0]
    if scene not in scenes:
        raise DataError(tables / "scene.json", "name", f"unknown scene '{scene}' (known: {', '.join(sorted(scenes))})")
    samples, token = [], scenes[scene]["first_sample_token"]
    while token:
        sample = t["sample"].get(token)
        if sample is None:
            raise DataError(tables / "sample.json", "token", f"scene '{scene}' refers to a missing sample {token}")
        samples.append(sample)
        token = sample.get("next", "")
    sensor_of = {k: t["sensor"][c["sensor_token"]] for k, c in t["calibrated_sensor"].items()}
    data: dict[str, dict[str, dict]] = {s["token"]: {} for s in samples}
    for sd in t["sample_data"].values():
        if sd.get("is_key_frame") and sd.get("sample_token") in data:
            data[sd["sample_token"]][sensor_of[sd["calibrated_sensor_token"]]["channel"]] = sd
    return _assemble(root, tables, t, scene, samples, data)


def _assemble(root: Path, tables: Path, t: dict, scene: str, samples: list, data: dict) -> ImportedLog:
    first = data[samples[0]["token"]]
    if "LIDAR_TOP" not in first:
        raise DataError(tables / "sample_data.json", "LIDAR_TOP", f"scene '{scene}' has no LIDAR_TOP keyframe")
    cam_names = sorted(ch for ch, sd in first.items() if sensor_modality(t, sd) == "camera")
    cameras = []
    for ch in cam_names:
        sd = first[ch]
        cs = t["calibrated_sensor"][sd["calibrated_sensor_token"]]
        k = np.asarray(field_of(cs, "camera_intrinsic", tables / "calibrated_sensor.json", cs["token"]), float)
        cameras.append(
            CameraSpec(
                ch,
                int(sd["width"]),
                int(sd["height"]),
                opencv_intrinsics(k[0, 0], k[1, 1], k[0, 2], k[1, 2]),
                _pose(cs, tables / "calibrated_sensor.json", cs["token"]),
            )
        )
    n = len(samples)
    lidar_sd = [data[s["token"]]["LIDAR_TOP"] for s in samples]
    times = np.array([sd["timestamp"] * 1e-6 for sd in lidar_sd])
    ego = np.stack(
        [_pose(t["ego_pose"][sd["ego_pose_token"]], tables / "ego_pose.json", sd["ego_pose_token"]) for sd in lidar_sd]
    )
    cam_times = np.full((len(cameras), n), np.nan)
    images: dict[tuple[str, int], Path] = {}
    stream: dict[float, np.ndarray] = {}
    for f, s in enumerate(samples):
        for c, cam in enumerate(cameras):
            sd = data[s["token"]].get(cam.name)
            if sd is None:
                continue
            cam_times[c, f] = sd["timestamp"] * 1e-6
            images[(cam.name, f)] = root / sd["filename"]
            check_image_size(root / sd["filename"], cam)
            stream[cam_times[c, f]] = _pose(
                t["ego_pose"][sd["ego_pose_token"]], tables / "ego_pose.json", sd["ego_pose_token"]
            )
        stream[times[f]] = ego[f]
    sweeps = [read_pcd_bin(root / sd["filename"]) for sd in lidar_sd]
    cs = t["calibrated_sensor"][lidar_sd[0]["calibrated_sensor_token"]]
    lidar, report = measured_lidar(
        "LIDAR_TOP",
        _pose(cs, tables / "calibrated_sensor.json", cs["token"]),
        sweeps,
        "ring index",
        max_range_m=120.0,
        rotation_rate_hz=20.0,
        motion_compensated=False,
    )
    boxes, labels = _boxes(t, tables, samples)
    return ImportedLog(
        name=f"nuscenes-{scene}",
        rig=SensorRig(tuple(cameras), lidar),
        timestamps_s=times,
        ego_poses=ego,
        tracks=tracks_from_boxes(boxes, labels, CATEGORY_RULES, n),
        road_map=None,
        frame_rate_hz=2.0,
        timing=stream_timing(
            cam_times, times.copy(), stream, {"kind": "measured", "method": "nuScenes ego_pose (localisation)"}
        ),
        images=images,
        sweeps=dict(enumerate(sweeps)),
        metadata={
            "dataset": "nuscenes",
            "scene": scene,
            "lidar_pattern": report.as_dict(),
            "licence": "CC BY-NC-SA 4.0 (nuScenes, Motional)",
            "map": "none (nuScenes maps are not read)",
        },
    )


def sensor_modality(t: dict[str, Any], sd: dict) -> str:
    return t["sensor"][t["calibrated_sensor"][sd["calibrated_sensor_token"]]["sensor_token"]]["modality"]


SOURCE = DatasetSource(
    "nuscenes",
    "nuScenes dataroot (JSON tables): keyframes of one scene, 6 cameras, LIDAR_TOP, boxes",
    "the dataroot folder",
    lambda src, o: import_nuscenes(src, o.get("version") or "v1.0-mini", o.get("scene")),
)


def _boxes(t: dict, tables: Path, samples: list) -> tuple[dict[str, list], dict[str, str]]:
    """Per-instance boxes (frame, T_world_box, (l, w, h)) and nuScenes category names."""
    boxes: dict[str, list] = {}
    labels: dict[str, str] = {}
    frame_of = {s["token"]: f for f, s in enumerate(samples)}
    for a in t["sample_annotation"].values():
        if a["sample_token"] not in frame_of:
            continue
        w, length, h = a["size"]
        inst = a["instance_token"]
        boxes.setdefault(inst, []).append(
            (
                frame_of[a["sample_token"]],
                _pose(a, tables / "sample_annotation.json", a["token"]),
                np.array([length, w, h]),
            )
        )
        labels[inst] = t["category"][t["instance"][inst]["category_token"]]["name"]
    return boxes, labels
