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
from neurodrive.geometry import invert_pose, pose_from_quaternion
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
    try:
        return pose_from_quaternion([r["qw"], r["qx"], r["qy"], r["qz"]], [t["x"], t["y"], t["z"]])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(source, where, f"bad pose: {e}") from e


def _time_s(stamp: str, source: Path) -> float:
    try:
        day = datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError as e:
        raise DataError(source, "id.timestamp", f"not an ISO time: {stamp!r}") from e
    frac = stamp[19:].rstrip("Z").lstrip(".")
    return (day - datetime(1970, 1, 1)).total_seconds() + (float("0." + frac) if frac else 0.0)


def _scene_file(dataset_json: Path, scene: str | None) -> Path:
    ds = read_dataset_json(dataset_json, "DGP scene dataset")
    files: list[str] = []
    for split in field_of(ds, "scene_splits", dataset_json, "").values():
        files += [f for f in split.get("filenames", []) if f not in files]
    if not files:
        raise DataError(dataset_json, "scene_splits", "lists no scene")
    if scene is None:
        return dataset_json.parent / files[0]
    match = [f for f in files if f == scene or Path(f).parts[0] == scene]
    if not match:
        raise DataError(dataset_json, "scene_splits", f"unknown scene '{scene}' (known: {', '.join(files)})")
    return dataset_json.parent / match[0]


def import_dgp(dataset_json: Path, scene: str | None = None) -> ImportedLog:
    scene_path = _scene_file(Path(dataset_json), scene)
    folder = scene_path.parent
    sc = read_dataset_json(scene_path, "DGP scene")
    datums = {d["key"]: d for d in field_of(sc, "data", scene_path, "")}
    samples = field_of(sc, "samples", scene_path, "")
    calib_path = folder / "calibration" / f"{samples[0]['calibration_key']}.json"
    calib = read_dataset_json(calib_path, "DGP calibration")
    names = field_of(calib, "names", calib_path, "")
    ext = {n: _pose(e, calib_path, f"extrinsics[{i}]") for i, (n, e) in enumerate(zip(names, calib["extrinsics"]))}
    intr = dict(zip(names, calib["intrinsics"]))
    labels_by_id = _ontology(folder, sc)
    per_sample = []
    for s in samples:
        by_name = {}
        for key in s["datum_keys"]:
            if key not in datums:
                raise DataError(scene_path, "samples.datum_keys", f"unknown datum key {key}")
            d = datums[key]
            by_name[d["id"]["name"]] = d
        per_sample.append(by_name)
    lidar_name = next((n for n, d in per_sample[0].items() if "point_cloud" in d["datum"]), None)
    if lidar_name is None:
        raise DataError(scene_path, "data", "the first sample has no point_cloud datum")
    cam_names = sorted(n for n, d in per_sample[0].items() if "image" in d["datum"])
    cameras = _cameras(cam_names, intr, ext, per_sample[0])
    n = len(samples)
    times, ego, cam_times = np.zeros(n), np.zeros((n, 4, 4)), np.full((len(cameras), n), np.nan)
    stream: dict[float, np.ndarray] = {}
    images: dict[tuple[str, int], Path] = {}
    sweeps: list[LidarSweep] = []
    boxes: dict[str, list] = {}
    labels: dict[str, str] = {}
    for f, by_name in enumerate(per_sample):
        lid = by_name[lidar_name]
        pc = lid["datum"]["point_cloud"]
        times[f] = _time_s(lid["id"]["timestamp"], scene_path)
        ego[f] = _pose(pc["pose"], scene_path, f"data[{lid['key']}].pose") @ invert_pose(ext[lidar_name])
        stream[times[f]] = ego[f]
        for c, cam in enumerate(cameras):
            if cam.name not in by_name:
                continue
            d = by_name[cam.name]
            cam_times[c, f] = _time_s(d["id"]["timestamp"], scene_path)
            pose = _pose(d["datum"]["image"]["pose"], scene_path, f"data[{d['key']}].pose")
            stream[cam_times[c, f]] = pose @ invert_pose(cam.T_ego_camera)
            images[(cam.name, f)] = folder / d["datum"]["image"]["filename"]
            check_image_size(images[(cam.name, f)], cam)
        sweeps.append(_read_points(folder / pc["filename"]))
        _sample_boxes(folder, pc, ego[f] @ ext[lidar_name], f, labels_by_id, boxes, labels)
    T_ego_lidar, sweeps = lidar_on_the_roof(ext[lidar_name], sweeps, cameras)
    lidar, report = measured_lidar(
        lidar_name, T_ego_lidar, sweeps, "elevation bins", 250.0, 10.0, True, *DGP_PATTERN_BINS
    )
    return ImportedLog(
        name=f"dgp-{folder.name}",
        rig=SensorRig(tuple(cameras), lidar),
        timestamps_s=times,
        ego_poses=ego,
        tracks=tracks_from_boxes(boxes, labels, CATEGORY_RULES, n),
        road_map=None,
        frame_rate_hz=float(1.0 / np.median(np.diff(times))) if n > 1 else 10.0,
        timing=stream_timing(cam_times, times.copy(), stream, {"kind": "measured", "method": "DGP per-datum poses"}),
        images=images,
        sweeps=dict(enumerate(sweeps)),
        metadata={
            "dataset": "dgp",
            "scene": str(scene_path.relative_to(Path(dataset_json).parent)),
            "lidar_pattern": report.as_dict(),
            "licence": "DGP: MIT; DDAD data: CC BY-NC-SA 4.0 (TRI)",
            "map": "none",
        },
    )


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
    lambda src, o: import_dgp(src, o.get("scene")),
)


def _cameras(names: list[str], intr: dict, ext: dict, first: dict) -> list[CameraSpec]:
    cameras = []
    for c in names:
        k, img = intr[c], first[c]["datum"]["image"]
        K = opencv_intrinsics(k["fx"], k["fy"], k["cx"], k["cy"], k.get("skew", 0.0))
        cameras.append(CameraSpec(c, int(img["width"]), int(img["height"]), K, ext[c]))
    return cameras


def _sample_boxes(
    folder: Path,
    pc: dict,
    T_world_lidar: np.ndarray,
    frame: int,
    names: dict,
    boxes: dict[str, list],
    labels: dict[str, str],
) -> None:
    """Add the point cloud's 3D boxes (in the LiDAR frame) to ``boxes`` / ``labels``."""
    box_file = pc.get("annotations", {}).get("1")
    if not box_file:
        return
    for i, a in enumerate(read_dataset_json(folder / box_file, "DGP 3D boxes").get("annotations", [])):
        b = a["box"]
        pose = T_world_lidar @ _pose(b["pose"], folder / box_file, f"annotations[{i}].box.pose")
        aid = str(a["instance_id"])
        boxes.setdefault(aid, []).append((frame, pose, np.array([b["length"], b["width"], b["height"]])))
        labels[aid] = names.get(int(a["class_id"]), f"class {a['class_id']}")


def _ontology(folder: Path, scene: dict) -> dict[int, str]:
    """Class id -> name of the scene's 3D-box ontology (empty without one)."""
    key = next(iter(scene.get("ontologies", {}).values()), None)
    if not key:
        return {}
    onto = read_dataset_json(folder / "ontology" / f"{key}.json", "DGP ontology")
    return {int(i["id"]): i["name"] for i in onto.get("items", [])}
