"""PandaSet sequence -> log (the dataset UniSim and NeuRAD report on; Xiao et al., ITSC 2021).

A sequence folder (``ROOT/<sequence>``) holds ``lidar/NN.pkl.gz`` (pickled pandas DataFrames: x, y, z
in the WORLD frame, i intensity 0-255, t per-point time, d sensor: 0 Pandar64 spinning 360 deg, 1
PandarGT forward-facing), ``lidar/poses.json`` / ``timestamps.json``, ``camera/<name>/NN.jpg`` with
``poses.json`` (camera-to-world, OpenCV axes: x right, y down, z forward; checked by projecting the
LiDAR onto image edges in the tests), ``intrinsics.json`` and ``timestamps.json``, and
``annotations/cuboids/NN.pkl.gz`` (world-frame boxes; ``uuid`` stable across frames). The pickles are
read by ``pandas_pickle`` (no pandas, no code run).

Frames are the LiDAR sweeps (10 Hz). PandaSet gives one LiDAR pose per frame, in Hesai's axes (x right,
y forward, z up), but not at the sensor's optical centre: the Pandar64 is found 1.85 m above it
(``top_beam_height_m``, from its datasheet's top beam); both LiDARs are placed there (the PandarGT has
no pose of its own). The ego frame turns those axes to x forward / y left and puts its origin on the
ground under the LiDAR (the ground height is measured on the first sweep: PandaSet has no vehicle frame).
Each LiDAR's points go from the world into its frame at the sweep's pose, per-point times become
offsets from the sweep's timestamp, intensity / 255; rays are measured patterns (elevation bins, as for
DGP; ``PATTERN_GRIDS``). Cameras keep their JPEG
bytes; each has its own timestamps, and its rig extrinsic is the mean of its pose in the ego frame
(interpolated at the image's time) over the imported frames. Cuboids: a box's local y is its length
(``dimensions.y``), so heading = yaw + 90 deg; the two cuboids PandaSet makes of an object seen by both
LiDARs (``cuboids.sensor_id`` 0 / 1, linked by ``cuboids.sibling_id``) become one track, on the
Pandar64's box where there is one. No map: a corridor along the ego path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from neurodrive.errors import DataError
from neurodrive.geometry import interpolate_poses, invert_pose, make_pose, rot_z
from neurodrive.lidar.sensor import LidarSpec, LidarSweep
from neurodrive.logs.model import CameraSpec, SensorRig
from neurodrive.sources.datasets.common import (
    DatasetSource,
    ImportedLog,
    Progress,
    check_image,
    dataset_pose,
    ground_height_m,
    measured_lidar,
    no_progress,
    numbers,
    opencv_intrinsics,
    read_dataset_json,
    safe_file_name,
    stream_timing,
    tracks_from_boxes,
)
from neurodrive.sources.datasets.pandas_pickle import read_dataframe_pickle

LIDARS = ("pandar64", "pandar_gt")  # column d: 0, 1
# (azimuth columns, elevation bin in degrees, max range m) of each measured pattern; on the sample 17 % and
# 14 % of the returns share a ray (the Pandar64 spins, 0.2 deg apart; the PandarGT scans 60 deg finer)
PATTERN_GRIDS = {"pandar64": (1800, 0.2, 200.0), "pandar_gt": (3600, 0.1, 300.0)}
CAMERAS = ("front_camera", "front_left_camera", "front_right_camera", "left_camera", "right_camera", "back_camera")
IMAGE_SIZE = (1920, 1080)
# Hesai axes (x right, y forward, z up) -> ego axes (x forward, y left, z up)
R_LIDAR_EGO = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
CATEGORY_RULES = (
    ("car", "car"),
    ("pickup truck", "car"),
    ("emergency vehicle", "car"),
    ("medium-sized truck", "truck"),
    ("semi-truck", "truck"),
    ("towed object", "truck"),
    ("other vehicle - construction vehicle", "truck"),
    ("bus", "bus"),
    ("pedestrian", "pedestrian"),
    ("bicycle", "cyclist"),
    ("motorcycle", "cyclist"),
    ("motorized scooter", "cyclist"),
    ("personal mobility device", "cyclist"),
    ("other vehicle - pedicab", "cyclist"),
)
LIDAR_COLUMNS = ("x", "y", "z", "i", "t", "d")
CUBOID_COLUMNS = (
    "uuid",
    "label",
    "yaw",
    "stationary",
    "position.x",
    "position.y",
    "position.z",
    "dimensions.x",
    "dimensions.y",
    "dimensions.z",
    "cuboids.sibling_id",
    "cuboids.sensor_id",
)


def read_table(path: Path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The columns of one pickled DataFrame; one DataError naming the file for a missing file or column."""
    if not path.is_file():
        raise DataError(path, None, "missing file")
    table = read_dataframe_pickle(path)
    lengths = {len(v) for v in table.values()}
    for c in columns:
        if c not in table:
            raise DataError(path, c, "missing column")
    if len(lengths) > 1:
        raise DataError(path, None, f"columns of different lengths {sorted(lengths)}")
    return {c: table[c] for c in columns}


def _pose_list(path: Path, what: str, count: int) -> np.ndarray:
    """(count, 4, 4) poses of a ``poses.json`` (position + heading quaternion w, x, y, z)."""
    records = read_dataset_json(path, what)
    if not isinstance(records, list) or len(records) < count:
        raise DataError(path, None, f"expected a list of at least {count} poses")
    poses = []
    for i, rec in enumerate(records[:count]):
        if (
            not isinstance(rec, dict)
            or not isinstance(rec.get("heading"), dict)
            or not isinstance(rec.get("position"), dict)
        ):
            raise DataError(path, f"[{i}]", "expected {position: {x, y, z}, heading: {w, x, y, z}}")
        q = [rec["heading"].get(k) for k in "wxyz"]
        t = [rec["position"].get(k) for k in "xyz"]
        poses.append(dataset_pose(q, t, path, f"[{i}]"))
    return np.stack(poses)


def _times(path: Path, count: int) -> np.ndarray:
    values = read_dataset_json(path, "timestamps")
    if not isinstance(values, list) or len(values) < count:
        raise DataError(path, None, f"expected a list of at least {count} timestamps")
    times = numbers(values[:count], count, path, "timestamps")
    if count > 1 and not np.all(np.diff(times) > 0):
        raise DataError(path, f"[{int(np.argmin(np.diff(times) > 0)) + 1}]", "timestamps must increase")
    return times


def _sweeps(seq: Path, frame: int, T_world_lidar: np.ndarray, time_s: float) -> list[LidarSweep]:
    """Both LiDARs' sweeps of one frame, each in the LiDAR frame at the sweep's pose."""
    path = seq / "lidar" / f"{frame:02d}.pkl.gz"
    c = read_table(path, LIDAR_COLUMNS)
    xyz = np.stack([c["x"], c["y"], c["z"]], axis=1).astype(np.float64)
    for name in LIDAR_COLUMNS:
        if not np.all(np.isfinite(c[name].astype(np.float64))):
            raise DataError(path, name, "contains NaN or infinite values")
    sensor = c["d"].astype(np.int64)
    if np.any((sensor < 0) | (sensor >= len(LIDARS))):
        raise DataError(path, "d", f"sensor ids must be 0 (Pandar64) or 1 (PandarGT), got {np.unique(sensor)}")
    T_lidar_world = invert_pose(T_world_lidar)
    local = xyz @ T_lidar_world[:3, :3].T + T_lidar_world[:3, 3]
    out = []
    for k in range(len(LIDARS)):
        sel = sensor == k
        out.append(
            LidarSweep(
                local[sel].astype(np.float32),
                np.clip(c["i"][sel].astype(np.float32) / 255.0, 0, 1),
                time_offset_s=(c["t"][sel].astype(np.float64) - time_s).astype(np.float32),
            )
        )
    return out


def _cuboid_boxes(seq: Path, frames: int) -> tuple[dict[str, list], dict[str, str]]:
    """Boxes per track ``id -> [(frame, T_world_box, size)]`` with siblings merged (a frame's
    Pandar64 or unsplit box after its PandarGT one, so ``tracks_from_boxes`` keeps it), and labels."""
    rows = []
    parent: dict[str, str] = {}

    def root(u: str) -> str:
        while parent.setdefault(u, u) != u:
            u = parent[u]
        return u

    for f in range(frames):
        path = seq / "annotations" / "cuboids" / f"{f:02d}.pkl.gz"
        c = read_table(path, CUBOID_COLUMNS)
        for i in range(len(c["uuid"])):
            uuid = safe_file_name(str(c["uuid"][i]), path, f"uuid[{i}]", "track id")
            sibling = str(c["cuboids.sibling_id"][i])
            if sibling not in ("-", "", "nan", "None"):
                a, b = root(uuid), root(sibling)
                parent[max(a, b)] = min(a, b)
            values = numbers([c[k][i] for k in CUBOID_COLUMNS[4:10]] + [c["yaw"][i]], 7, path, f"row {i}")
            if np.any(values[3:6] <= 0):
                raise DataError(path, f"dimensions[{i}]", "box sizes must be positive")
            rows.append((f, uuid, str(c["label"][i]), int(c["cuboids.sensor_id"][i]), values))
    labels: dict[str, str] = {}
    for _, uuid, label, _, _ in rows:  # a merged track's label: its first cuboid's in the files
        labels.setdefault(root(uuid), label)
    boxes: dict[str, list] = {}
    rows.sort(key=lambda r: (r[0], r[3] != 1))  # per frame: PandarGT boxes (sensor 1) first
    for f, uuid, _, _, (x, y, z, width, length, height, yaw) in rows:
        pose = make_pose([x, y, z], rot_z(yaw + np.pi / 2))  # the box's length runs along its local y
        boxes.setdefault(root(uuid), []).append((f, pose, np.array([length, width, height])))
    return boxes, labels


def _camera(
    seq: Path, name: str, n: int, times: np.ndarray, ego: np.ndarray, t0: float
) -> tuple[CameraSpec, np.ndarray]:
    """A camera (its rig extrinsic: the mean over frames of its pose in the ego frame) and its image
    times (s, from ``t0``)."""
    folder = seq / "camera" / name
    intr = read_dataset_json(folder / "intrinsics.json", f"{name} intrinsics")
    if not isinstance(intr, dict):
        raise DataError(folder / "intrinsics.json", None, "expected {fx, fy, cx, cy}")
    fx, fy, cx, cy = numbers([intr.get(k) for k in ("fx", "fy", "cx", "cy")], 4, folder / "intrinsics.json", "fx")
    poses = _pose_list(folder / "poses.json", f"{name} poses", n)
    cam_times = _times(folder / "timestamps.json", n) - t0
    in_ego = np.stack([invert_pose(interpolate_poses(times, ego, t)) @ p for t, p in zip(cam_times, poses)])
    rotation = Rotation.from_matrix(in_ego[:, :3, :3]).mean().as_matrix()
    T_ego_camera = make_pose(np.mean(in_ego[:, :3, 3], axis=0), rotation)
    cam = CameraSpec(name, *IMAGE_SIZE, opencv_intrinsics(fx, fy, cx, cy), T_ego_camera)
    return cam, cam_times


def import_pandaset(root: Path, sequence: str, frames: int | None, progress: Progress = no_progress) -> ImportedLog:
    root = Path(root)
    sequence = safe_file_name(sequence, root, "--sequence", "sequence")
    seq = root / sequence
    if not (seq / "lidar").is_dir():
        known = sorted(p.name for p in root.iterdir() if (p / "lidar").is_dir()) if root.is_dir() else []
        raise DataError(seq, None, f"no PandaSet sequence '{sequence}' here (found: {', '.join(known) or 'none'})")
    available = len(list((seq / "lidar").glob("[0-9][0-9].pkl.gz")))
    n = min(available, frames) if frames is not None else available
    if n == 0:
        raise DataError(seq / "lidar", None, "holds no sweeps (NN.pkl.gz)")
    lidar_times_abs = _times(seq / "lidar" / "timestamps.json", n)
    t0 = float(lidar_times_abs[0])
    times = lidar_times_abs - t0
    T_world_lidar = _pose_list(seq / "lidar" / "poses.json", "LiDAR poses", n)
    per_frame = []
    for f in range(n):
        per_frame.append(_sweeps(seq, f, T_world_lidar[f], float(lidar_times_abs[f])))
        progress("reading PandaSet sweeps", f + 1, n)
    raise_m = top_beam_height_m([sweeps[0] for sweeps in per_frame])
    per_frame = [[_lowered(sweep, raise_m) for sweep in sweeps] for sweeps in per_frame]
    T_world_lidar = T_world_lidar @ make_pose([0.0, 0.0, raise_m])
    height = ground_height_m(_in_ego_axes(per_frame[0][0]))
    T_lidar_ego = make_pose([0.0, 0.0, -height], R_LIDAR_EGO)
    ego = T_world_lidar @ T_lidar_ego
    T_ego_lidar = invert_pose(T_lidar_ego)
    cameras, cam_times, images = [], np.full((len(CAMERAS), n), np.nan), {}
    for c, name in enumerate(CAMERAS):
        if not (seq / "camera" / name).is_dir():
            continue
        cam, cam_times[c] = _camera(seq, name, n, times, ego, t0)
        cameras.append(cam)
        for f in range(n):
            path = seq / "camera" / name / f"{f:02d}.jpg"
            check_image(path, cam)
            images[(name, f)] = path
        progress("checking images", c + 1, len(CAMERAS))
    cam_times = cam_times[[CAMERAS.index(c.name) for c in cameras]]
    lidars, reports = _lidars(per_frame, T_ego_lidar)
    boxes, labels = _cuboid_boxes(seq, n)
    stream = {float(t): p for t, p in zip(times, ego)}
    return ImportedLog(
        name=f"pandaset-{sequence}",
        rig=SensorRig(tuple(cameras), lidars),
        timestamps_s=times,
        ego_poses=ego,
        tracks=tracks_from_boxes(boxes, labels, CATEGORY_RULES, n),
        road_map=None,
        frame_rate_hz=10.0,
        timing=stream_timing(
            cam_times if cameras else None,
            np.stack([times, times]),
            stream,
            {"kind": "measured", "method": "PandaSet LiDAR poses (GPS/IMU + LiDAR SLAM)"},
        ),
        images=images,
        sweeps={(lid.name, f): per_frame[f][k] for k, lid in enumerate(lidars) for f in range(n)},
        metadata={
            "dataset": "pandaset",
            "sequence": sequence,
            "time_origin_s": t0,
            "lidar_height_m": height,
            "lidar_above_pandaset_pose_m": raise_m,
            "lidar_pattern": reports,
            "licence": "CC BY 4.0 (PandaSet, Hesai and Scale AI)",
            "map": "none",
        },
    )


PANDAR64_TOP_BEAM_DEG = 15.0  # Hesai's Pandar64 datasheet: vertical field of view -25 deg to +15 deg
TOP_BEAM_PERCENTILE = 99.9  # the returns at least this high in elevation are the top beam's


def top_beam_height_m(sweeps: list[LidarSweep], min_range_m: float = 3.0) -> float:
    """How far above PandaSet's LiDAR pose the Pandar64's optical centre sits: the height from which its
    highest returns (``TOP_BEAM_PERCENTILE``) lie at its top beam's elevation. Seen from the pose itself
    (0.26 m above the ground on the sample, yet the sweeps hold returns on the roofs of nearby cars) they
    reach 79 deg. On the sample: 1.85 m, the same to 2 cm on any single sweep; the PandarGT's returns then
    span 20.6 deg of elevation, its datasheet's 20 deg. 0 when the pose already explains them."""
    xyz = np.concatenate([s.xyz_m for s in sweeps]).astype(np.float64)
    xyz = xyz[np.hypot(xyz[:, 0], xyz[:, 1]) > min_range_m]
    if len(xyz) < 1000:
        return 0.0

    def top_deg(raise_m: float) -> float:
        elevation = np.arctan2(xyz[:, 2] - raise_m, np.hypot(xyz[:, 0], xyz[:, 1]))
        return float(np.degrees(np.percentile(elevation, TOP_BEAM_PERCENTILE)))

    lo, hi = 0.0, 5.0
    if top_deg(lo) <= PANDAR64_TOP_BEAM_DEG:
        return 0.0
    for _ in range(30):  # the top elevation falls as the centre rises: bisection to a millimetre
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if top_deg(mid) > PANDAR64_TOP_BEAM_DEG else (lo, mid)
    return round(0.5 * (lo + hi), 3)


def _lowered(sweep: LidarSweep, raise_m: float) -> LidarSweep:
    """The sweep seen from ``raise_m`` higher up (its points ``raise_m`` lower)."""
    xyz = sweep.xyz_m.astype(np.float64) - np.array([0.0, 0.0, raise_m])
    return LidarSweep(xyz.astype(np.float32), sweep.intensity, time_offset_s=sweep.time_offset_s)


def _in_ego_axes(sweep: LidarSweep) -> LidarSweep:
    """A sweep in Hesai axes turned to x forward / y left (for ``ground_height_m``)."""
    return LidarSweep((sweep.xyz_m.astype(np.float64) @ R_LIDAR_EGO).astype(np.float32), sweep.intensity)


def _lidars(per_frame: list[list[LidarSweep]], T_ego_lidar: np.ndarray) -> tuple[tuple[LidarSpec, ...], dict]:
    """Both LiDARs with patterns measured from their sweeps (elevation bins: PandaSet has no ring ids)."""
    lidars, reports = [], {}
    for k, (name, (cols, bin_deg, max_range_m)) in enumerate(PATTERN_GRIDS.items()):
        own = [sweeps[k] for sweeps in per_frame]
        spec, report = measured_lidar(name, T_ego_lidar, own, "elevation bins", max_range_m, 10.0, True, cols, bin_deg)
        lidars.append(spec)
        reports[name] = report.as_dict()
    return tuple(lidars), reports


def _read(src: Path, options: dict[str, Any]) -> ImportedLog:
    sequence = options.get("sequence")
    if sequence is None:
        found = sorted(p.name for p in Path(src).iterdir() if (p / "lidar").is_dir()) if Path(src).is_dir() else []
        if len(found) != 1:
            raise ValueError(f"pandaset needs --sequence (sequences in {src}: {', '.join(found) or 'none'})")
        sequence = found[0]
    return import_pandaset(src, str(sequence), options.get("frames"), options.get("progress") or no_progress)


SOURCE = DatasetSource(
    "pandaset",
    "PandaSet dataset folder and --sequence: 6 cameras, Pandar64 + PandarGT, cuboid tracks",
    "the PandaSet folder (holding sequence folders such as 002)",
    _read,
    options=("sequence", "frames"),
)
