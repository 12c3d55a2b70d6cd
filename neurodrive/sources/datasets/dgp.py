"""TRI DGP (DDAD rig) scene -> log. Reads the scene dataset JSON, the scene JSON, its calibration,
ontology and per-datum files directly.

Frames are the scene's samples; a frame's time is its LiDAR datum's. Every datum carries the
sensor's world pose: the LiDAR's is the ego pose (its extrinsic is the identity), a camera's gives
the ego pose at the camera's own time (``pose @ inv(extrinsic)``; DDAD's cameras fire ~90 ms
before its LiDAR). These poses form the pose stream. Points and 3D boxes are in the ego frame at
the LiDAR's time; ``instance_id`` is stable across samples (tracks). No ring index: the LiDAR
pattern is measured with elevation rows. The merged cloud's frame lies on the ground, so rays are
cast from a virtual LiDAR on the roof (``lidar_on_the_roof``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np

from neurodrive.errors import DataError
from neurodrive.geometry import invert_pose
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
    safe_file_name,
    stream_timing,
    tracks_from_boxes,
)

CATEGORY_RULES = (
    ("car", "car"),
    ("truck", "truck"),
    ("trailer", "truck"),
    ("towed", "truck"),
    ("bus", "bus"),
    ("person", "pedestrian"),
    ("pedestrian", "pedestrian"),
    ("bicycle", "cyclist"),
    ("motorcycle", "cyclist"),
)

# (azimuth columns, elevation bin in degrees) of the measured pattern: DDAD's Luminar returns are
# not on beams; on the sample this grid leaves 25 % of the returns sharing a ray (docs/datasets.md)
DGP_PATTERN_BINS = (2048, 0.1)


def _pose(p: dict, source: Path, where: str) -> np.ndarray:
    r, t = field_of(p, "rotation", source, where), field_of(p, "translation", source, where)
    q = [field_of(r, k, source, f"{where}.rotation") for k in ("qw", "qx", "qy", "qz")]
    return dataset_pose(q, [field_of(t, k, source, f"{where}.translation") for k in "xyz"], source, where)


def _time_s(stamp: object, source: Path) -> float:
    try:
        if not isinstance(stamp, str):
            raise ValueError
        day = datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")
        frac = stamp[19:].rstrip("Z").lstrip(".")
        return (day - datetime(1970, 1, 1)).total_seconds() + (float("0." + frac) if frac else 0.0)
    except ValueError as e:
        raise DataError(source, "id.timestamp", f"not an ISO time: {stamp!r}") from e


def _scene_file(dataset_json: Path, scene: str | None) -> Path:
    ds = read_dataset_json(dataset_json, "DGP scene dataset")
    splits = field_of(ds, "scene_splits", dataset_json, "")
    if not isinstance(splits, dict):
        raise DataError(dataset_json, "scene_splits", "expected a mapping of splits")
    files: list[str] = []
    for key, split in splits.items():
        names = split.get("filenames", []) if isinstance(split, dict) else None
        if not isinstance(names, list):
            raise DataError(dataset_json, f"scene_splits.{key}.filenames", "expected a list of scene files")
        for i, f in enumerate(names):
            dataset_file(dataset_json.parent, f, dataset_json, f"scene_splits.{key}.filenames[{i}]")
            if f not in files:
                files.append(f)
    if not files:
        raise DataError(dataset_json, "scene_splits", "lists no scene")
    if scene is None:
        return dataset_json.parent / files[0]
    match = [f for f in files if f == scene or Path(f).parts[0] == scene]
    if not match:
        raise DataError(dataset_json, "scene_splits", f"unknown scene '{scene}' (known: {', '.join(files)})")
    return dataset_json.parent / match[0]


def import_dgp(dataset_json: Path, scene: str | None = None, progress: Progress = no_progress) -> ImportedLog:
    dataset_json = Path(dataset_json)
    root = dataset_json.parent  # every file the dataset names must stay inside this folder
    scene_path = _scene_file(dataset_json, scene)
    folder = scene_path.parent
    sc = read_dataset_json(scene_path, "DGP scene")
    datums = {
        field_of(d, "key", scene_path, f"data[{i}]"): d for i, d in enumerate(field_of(sc, "data", scene_path, ""))
    }
    samples = field_of(sc, "samples", scene_path, "")
    if not isinstance(samples, list) or not samples:
        raise DataError(scene_path, "samples", "lists no samples")
    ext, intr, calib_path = _calibration(folder, samples[0], scene_path)
    labels_by_id = _ontology(folder, sc)
    per_sample = [_datums_by_name(s, i, datums, scene_path) for i, s in enumerate(samples)]
    lidar_name = next(
        (n for n, d in per_sample[0].items() if "point_cloud" in field_of(d, "datum", scene_path, f"data[{d['key']}]")),
        None,
    )
    if lidar_name is None:
        raise DataError(scene_path, "data", "the first sample has no point_cloud datum")
    cam_names = sorted(n for n, d in per_sample[0].items() if "image" in d["datum"])
    cameras = _cameras(cam_names, intr, ext, per_sample[0], calib_path, scene_path)
    n = len(samples)
    times, ego, cam_times = np.zeros(n), np.zeros((n, 4, 4)), np.full((len(cameras), n), np.nan)
    stream: dict[float, np.ndarray] = {}
    images: dict[tuple[str, int], Path] = {}
    sweeps: list[LidarSweep] = []
    boxes: dict[str, list] = {}
    labels: dict[str, str] = {}
    for f, by_name in enumerate(per_sample):
        if lidar_name not in by_name:
            raise DataError(scene_path, f"samples[{f}].datum_keys", f"no {lidar_name} datum in this sample")
        lid = by_name[lidar_name]
        pc_where = f"data[{lid['key']}].datum.point_cloud"
        pc = field_of(lid["datum"], "point_cloud", scene_path, f"data[{lid['key']}].datum")
        times[f] = _time_s(field_of(lid["id"], "timestamp", scene_path, f"data[{lid['key']}].id"), scene_path)
        ego[f] = _pose(field_of(pc, "pose", scene_path, pc_where), scene_path, f"{pc_where}.pose") @ invert_pose(
            ext[lidar_name]
        )
        stream[times[f]] = ego[f]
        for c, cam in enumerate(cameras):
            if cam.name not in by_name:
                continue
            d = by_name[cam.name]
            where = f"data[{d['key']}].datum.image"
            img = field_of(d["datum"], "image", scene_path, f"data[{d['key']}].datum")
            cam_times[c, f] = _time_s(field_of(d["id"], "timestamp", scene_path, f"data[{d['key']}].id"), scene_path)
            pose = _pose(field_of(img, "pose", scene_path, where), scene_path, f"{where}.pose")
            stream[cam_times[c, f]] = pose @ invert_pose(cam.T_ego_camera)
            images[(cam.name, f)] = dataset_file(root, img.get("filename"), scene_path, f"{where}.filename", folder)
            check_image(images[(cam.name, f)], cam)
        sweeps.append(_read_points(dataset_file(root, pc.get("filename"), scene_path, f"{pc_where}.filename", folder)))
        _sample_boxes(root, folder, pc, ego[f] @ ext[lidar_name], f, labels_by_id, boxes, labels)
        progress("reading DGP samples", f + 1, n)
    T_ego_lidar, sweeps = lidar_on_the_roof(ext[lidar_name], sweeps, cameras)
    lidar, report = measured_lidar(
        lidar_name, T_ego_lidar, sweeps, "elevation bins", 250.0, 10.0, True, *DGP_PATTERN_BINS
    )
    return ImportedLog(
        name=f"dgp-{folder.name}",
        rig=SensorRig(tuple(cameras), (lidar,)),
        timestamps_s=times,
        ego_poses=ego,
        tracks=tracks_from_boxes(boxes, labels, CATEGORY_RULES, n),
        road_map=None,
        frame_rate_hz=float(1.0 / np.median(np.diff(times))) if n > 1 else 10.0,
        timing=stream_timing(cam_times, times.copy(), stream, {"kind": "measured", "method": "DGP per-datum poses"}),
        images=images,
        sweeps={(lidar.name, f): s for f, s in enumerate(sweeps)},
        metadata={
            "dataset": "dgp",
            "scene": str(scene_path.relative_to(dataset_json.parent)),
            "lidar_pattern": {lidar.name: report.as_dict()},
            "licence": "DGP: MIT; DDAD data: CC BY-NC-SA 4.0 (TRI)",
            "map": "none",
        },
    )


def _calibration(folder: Path, first_sample: dict, scene_path: Path) -> tuple[dict, dict, Path]:
    """Extrinsics (name -> T_ego_sensor), intrinsics (name -> record) and the file of the scene's
    calibration."""
    where = "samples[0].calibration_key"
    key = safe_file_name(field_of(first_sample, "calibration_key", scene_path, "samples[0]"), scene_path, where, "key")
    path = folder / "calibration" / f"{key}.json"
    calib = read_dataset_json(path, "DGP calibration")
    names, extrinsics, intrinsics = (field_of(calib, k, path, "") for k in ("names", "extrinsics", "intrinsics"))
    if not (
        all(isinstance(v, list) for v in (names, extrinsics, intrinsics))
        and len(names) == len(extrinsics) == len(intrinsics)
    ):
        raise DataError(path, "names", "names, extrinsics and intrinsics must be lists of the same length")
    ext = {n: _pose(e, path, f"extrinsics[{i}]") for i, (n, e) in enumerate(zip(names, extrinsics))}
    return ext, dict(zip(names, intrinsics)), path


def _datums_by_name(sample: dict, index: int, datums: dict, scene_path: Path) -> dict[str, dict]:
    """Sensor name -> datum of one sample (names checked: they become folders of the log)."""
    by_name = {}
    for key in field_of(sample, "datum_keys", scene_path, f"samples[{index}]"):
        if key not in datums:
            raise DataError(scene_path, "samples.datum_keys", f"unknown datum key {key}")
        where = f"data[{key}].id.name"
        name = field_of(field_of(datums[key], "id", scene_path, f"data[{key}]"), "name", scene_path, where)
        by_name[safe_file_name(name, scene_path, where, "sensor name")] = datums[key]
    return by_name


def lidar_on_the_roof(
    T_ego_lidar: np.ndarray, sweeps: list[LidarSweep], cameras: list[CameraSpec]
) -> tuple[np.ndarray, list[LidarSweep]]:
    """Where the rays start: DDAD's point cloud merges four roof LiDARs into a frame whose origin lies
    on the ground (returns near the car sit at z ~ 0). Rays cast from there graze the road, so a
    rendered sweep would hit the ground metres early. When the frame is on the ground (the 5th
    percentile of z within 15 m is within 0.5 m of 0), a virtual LiDAR at the height of the highest
    camera (the roof) is used instead: (T_ego_lidar, sweeps in its frame)."""
    near = np.concatenate([s.xyz_m[np.linalg.norm(s.xyz_m[:, :2], axis=1) < 15.0] for s in sweeps])
    if len(near) < 100 or abs(float(np.percentile(near[:, 2], 5))) > 0.5 or not cameras:
        return T_ego_lidar, sweeps
    height_m = max(float((invert_pose(T_ego_lidar) @ c.T_ego_camera)[2, 3]) for c in cameras)
    lift = np.eye(4)
    lift[2, 3] = height_m
    shift = np.array([0.0, 0.0, height_m], np.float32)
    return T_ego_lidar @ lift, [replace(s, xyz_m=s.xyz_m - shift) for s in sweeps]


def _read_points(path: Path) -> LidarSweep:
    from neurodrive.logs.io import read_npz

    pts = read_npz(path, {"data": (None, 4)})["data"]
    return LidarSweep(pts[:, :3].astype(np.float32), np.clip(pts[:, 3], 0, 1).astype(np.float32))


SOURCE = DatasetSource(
    "dgp",
    "TRI DGP / DDAD scene dataset JSON: one scene, its cameras, LiDAR and tracked 3D boxes",
    "the scene dataset JSON",
    lambda src, o: import_dgp(src, o.get("scene"), o.get("progress") or no_progress),
    options=("scene",),
    root_of=lambda src: src.parent,
)


def _cameras(
    names: list[str], intr: dict, ext: dict, first: dict, calib_path: Path, scene_path: Path
) -> list[CameraSpec]:
    cameras = []
    for c in names:
        if c not in intr:
            raise DataError(calib_path, "names", f"no calibration for camera '{c}'")
        k = intr[c]
        fx, fy, cx, cy = numbers(
            [field_of(k, key, calib_path, f"intrinsics.{c}") for key in ("fx", "fy", "cx", "cy")],
            4,
            calib_path,
            f"intrinsics.{c}",
        )
        skew = numbers(k.get("skew", 0.0), 1, calib_path, f"intrinsics.{c}.skew")[0]
        img = first[c]["datum"]["image"]
        where = f"data[{first[c]['key']}].datum.image"
        width, height = image_size(
            field_of(img, "width", scene_path, where), field_of(img, "height", scene_path, where), scene_path, where
        )
        cameras.append(CameraSpec(c, width, height, opencv_intrinsics(fx, fy, cx, cy, skew), ext[c]))
    return cameras


def _sample_boxes(
    root: Path,
    folder: Path,
    pc: dict,
    T_world_lidar: np.ndarray,
    frame: int,
    names: dict,
    boxes: dict[str, list],
    labels: dict[str, str],
) -> None:
    """Add the point cloud's 3D boxes (in the LiDAR frame) to ``boxes`` / ``labels``."""
    box_name = (pc.get("annotations") or {}).get("1")
    if not box_name:
        return
    box_file = dataset_file(root, box_name, folder, "point_cloud.annotations.1", folder)
    for i, a in enumerate(read_dataset_json(box_file, "DGP 3D boxes").get("annotations", [])):
        where = f"annotations[{i}]"
        b = field_of(a, "box", box_file, where)
        pose = T_world_lidar @ _pose(field_of(b, "pose", box_file, f"{where}.box"), box_file, f"{where}.box.pose")
        size = numbers(
            [field_of(b, k, box_file, f"{where}.box") for k in ("length", "width", "height")],
            3,
            box_file,
            f"{where}.box.size",
        )
        if np.any(size <= 0):
            raise DataError(box_file, f"{where}.box", f"box size must be positive, got {size.tolist()}")
        aid = str(field_of(a, "instance_id", box_file, where))
        class_id = field_of(a, "class_id", box_file, where)
        boxes.setdefault(aid, []).append((frame, pose, size))
        labels[aid] = names.get(class_id, f"class {class_id}")


def _ontology(folder: Path, scene: dict) -> dict[int, str]:
    """Class id -> name of the scene's 3D-box ontology (empty without one)."""
    key = next(iter((scene.get("ontologies") or {}).values()), None)
    if not key:
        return {}
    path = folder / "ontology" / f"{safe_file_name(key, folder, 'ontologies', 'key')}.json"
    onto = read_dataset_json(path, "DGP ontology")
    return {field_of(i, "id", path, "items"): str(field_of(i, "name", path, "items")) for i in onto.get("items", [])}
