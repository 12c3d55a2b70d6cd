"""Reading logs in the on-disk format of docs/log_format.md (writing: ``logs.writer``).

Layout of a log folder::

    log.json                      name, frame rate, sensor rig, pose source (LogSchema)
    poses.npz                     timestamps_s (N,), ego_poses (N, 4, 4); from version 2 optionally
                                  camera_timestamps_s (C, N), lidar_timestamps_s (L, N) (NaN: no data;
                                  version 2: (N,)), stream_timestamps_s (K,), stream_ego_poses (K, 4, 4)
    tracks.json, tracks.npz       actor id/category/size; poses (A, N, 4, 4), valid (A, N)
    map.json                      drivable-area polygons and lane centrelines (MapSchema); optional from v2
    camera/<name>/<frame>.png     RGB images (v2 also .jpg), frame number zero-padded to 6 digits
    lidar/<name>/<frame>.npz      one folder per LiDAR (version 3; versions 1-2: lidar/<frame>.npz):
                                  xyz_m (M, 3), intensity (M,); beam (M,), azimuth_index (M,) for a beam
                                  grid; optional ring (M,), time_offset_s (M,)
    lidar/<name>/pattern.npz      a LiDAR's measured ray pattern (``pattern == "measured"``; version 2:
                                  lidar_pattern.npz)
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ValidationError

from neurodrive.errors import DataError
from neurodrive.geometry import rigid_mask
from neurodrive.lidar.pattern import MeasuredPattern
from neurodrive.lidar.sensor import LidarSpec, LidarSweep
from neurodrive.logs.model import (
    CATEGORIES,
    ActorTrack,
    CameraSpec,
    DrivingLog,
    Lane,
    RoadMap,
    SensorRig,
    corridor_map,
)
from neurodrive.logs.schema import (
    LogSchema,
    MapSchema,
    TracksSchema,
    describe_validation_error,
)

IMAGE_SUFFIXES = (".png", ".jpg")  # images are stored as PNG; importers may keep a dataset's JPEG bytes


def image_path(root: Path, camera: str, frame: int) -> Path:
    """The image file of ``camera`` at ``frame`` (the PNG name when there is none yet)."""
    base = Path(root) / "camera" / camera / f"{frame:06d}"
    for suffix in IMAGE_SUFFIXES[1:]:
        if base.with_suffix(suffix).is_file():
            return base.with_suffix(suffix)
    return base.with_suffix(".png")


def lidar_path(root: Path, frame: int, lidar: str | None) -> Path:
    """The sweep file of LiDAR ``lidar`` at ``frame``; ``lidar`` None: the one LiDAR of a version 1-2 log."""
    folder = Path(root) / "lidar"
    return (folder if lidar is None else folder / lidar) / f"{frame:06d}.npz"


def lidar_pattern_path(root: Path, lidar: str | None) -> Path:
    """The measured pattern of LiDAR ``lidar``; ``lidar`` None: the one LiDAR of a version 1-2 log."""
    return Path(root) / "lidar_pattern.npz" if lidar is None else Path(root) / "lidar" / lidar / "pattern.npz"


# ----------------------------------------------------------------------------------------- reading


def read_json_file(path: Path, missing: str = "missing file") -> Any:
    """The parsed content of a JSON file; one DataError naming it for a folder, a missing file (with
    the ``missing`` explanation), text that is not UTF-8 or not JSON."""
    if path.is_dir():
        raise DataError(path, None, "is a folder, expected a JSON file")
    if not path.is_file():
        raise DataError(path, None, missing)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, None, f"not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from e
    except UnicodeDecodeError as e:
        raise DataError(path, None, f"not UTF-8 text: {e}") from e


def read_json(path: Path, schema: type[BaseModel]) -> Any:
    """Parse and validate a JSON file; errors name the file and the field."""
    raw = read_json_file(path)
    try:
        return schema.model_validate(raw)
    except ValidationError as e:
        field, problem = describe_validation_error(e)
        raise DataError(path, field, problem) from e


def read_npz(
    path: Path,
    shapes: dict[str, tuple[int | None, ...]],
    finite: bool = True,
    optional: dict[str, tuple[int | None, ...]] | None = None,
    may_be_nan: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Load arrays from an ``.npz`` (pickles refused) and check their shapes; None matches any size.

    ``optional`` arrays are checked the same way when present. With ``finite``, float arrays must be
    finite except those named in ``may_be_nan``."""
    if not path.is_file():
        raise DataError(path, None, "missing file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError) as e:
        raise DataError(path, None, f"corrupt or truncated npz file: {e}") from e
    present_optional = {k: v for k, v in (optional or {}).items() if k in arrays}
    for name, shape in (shapes | present_optional).items():
        if name not in arrays:
            raise DataError(path, name, "missing array")
        arr = arrays[name]
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise DataError(path, name, f"expected shape {want}, got {arr.shape}")
        if arr.dtype == object:
            raise DataError(path, name, "object arrays are not allowed")
        check_finite = finite and name not in may_be_nan
        if check_finite and np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise DataError(path, f"{name}[{bad[0]}]", "contains NaN or infinite values")
    return arrays


def _check_poses(path: Path, name: str, poses: np.ndarray, mask: np.ndarray | None = None) -> None:
    bad = ~rigid_mask(poses) & (True if mask is None else np.asarray(mask, bool))
    if np.any(bad):
        raise DataError(path, f"{name}[{int(np.argmax(bad))}]", "is not a finite rigid 4x4 transform")


def _rig_from_schema(schema: LogSchema, root: Path) -> SensorRig:
    cams = tuple(
        CameraSpec(
            c.name,
            c.width_px,
            c.height_px,
            np.asarray(c.intrinsics),
            np.asarray(c.T_ego_camera),
            None if c.distortion is None else np.asarray(c.distortion, float),
        )
        for c in schema.rig.cameras
    )
    if schema.version >= 3 and schema.rig.lidar is not None:
        raise DataError(root / "log.json", "rig.lidar", "version 3 logs list their LiDARs in rig.lidars")
    if schema.version < 3 and schema.rig.lidars:
        raise DataError(root / "log.json", "rig.lidars", f"version {schema.version} logs have one rig.lidar")
    listed = schema.rig.lidars if schema.version >= 3 else [lid for lid in [schema.rig.lidar] if lid is not None]
    lidars = []
    for lid in listed:
        folder_name = lid.name if schema.version >= 3 else None
        measured = _read_pattern(lidar_pattern_path(root, folder_name)) if lid.pattern == "measured" else None
        lidars.append(
            LidarSpec(
                name=lid.name,
                T_ego_lidar=np.asarray(lid.T_ego_lidar),
                beam_elevations_rad=np.deg2rad(np.asarray(lid.beam_elevations_deg)),
                azimuth_bins=lid.azimuth_bins,
                min_range_m=lid.min_range_m,
                max_range_m=lid.max_range_m,
                rotation_rate_hz=lid.rotation_rate_hz,
                measured_pattern=measured,
                motion_compensated=lid.motion_compensated,
            )
        )
    return SensorRig(cams, tuple(lidars))


def _read_pattern(path: Path) -> MeasuredPattern:
    arrays = read_npz(
        path,
        {
            "ray_directions": (None, 3),
            "ray_cells": (None,),
            "image_shape": (2,),
            "rows_from_ring": (),
            "ring_to_row": (None,),
            "elevation_edges_rad": (None,),
        },
    )
    rows, cols = (int(v) for v in arrays["image_shape"])
    cells = arrays["ray_cells"]
    if rows <= 0 or cols <= 0:
        raise DataError(path, "image_shape", f"must be positive, got {arrays['image_shape'].tolist()}")
    if len(cells) != len(arrays["ray_directions"]):
        raise DataError(path, "ray_cells", "needs one entry per ray direction")
    if len(cells) and (cells.min() < 0 or cells.max() >= rows * cols or len(np.unique(cells)) != len(cells)):
        raise DataError(path, "ray_cells", f"must be distinct cells of the {rows}x{cols} image")
    return MeasuredPattern.from_arrays(arrays)


def read_image(path: Path, camera: CameraSpec) -> np.ndarray:
    """(H, W, 3) uint8 image, checked against the camera's resolution."""
    if not path.is_file():
        raise DataError(path, None, "missing image file")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(path, "pixels", f"corrupt or truncated image: {e}") from e
    if rgb.shape != (camera.height_px, camera.width_px, 3):
        raise DataError(
            path,
            "shape",
            f"expected {camera.height_px}x{camera.width_px} for camera '{camera.name}', "
            f"got {rgb.shape[0]}x{rgb.shape[1]}",
        )
    return rgb


def read_lidar(path: Path, lidar: LidarSpec) -> LidarSweep:
    """One sweep; beam-grid sweeps name each return's (beam, azimuth bin), each ray at most once."""
    grid = lidar.measured_pattern is None
    need: dict[str, tuple[int | None, ...]] = {"xyz_m": (None, 3), "intensity": (None,)}
    if grid:
        need |= {"beam": (None,), "azimuth_index": (None,)}
    arrays = read_npz(path, need)
    m = arrays["xyz_m"].shape[0]
    optional = ("beam", "azimuth_index", "ring", "time_offset_s")
    for name in ("intensity", *optional):
        if name in arrays and arrays[name].shape != (m,):
            raise DataError(path, name, f"has shape {arrays[name].shape} but xyz_m has {m} points")
    for name in ("beam", "azimuth_index", "ring"):
        if name in arrays and not np.issubdtype(arrays[name].dtype, np.integer):
            raise DataError(path, name, f"expected integers, got {arrays[name].dtype}")
    intensity = arrays["intensity"].astype(np.float32)
    if m and (intensity.min() < 0.0 or intensity.max() > 1.0):
        raise DataError(path, "intensity", "values must lie in [0, 1]")
    beam = az = None
    if grid:
        beam, az = arrays["beam"].astype(np.int64), arrays["azimuth_index"].astype(np.int64)
        if m and (beam.min() < 0 or beam.max() >= lidar.num_beams):
            raise DataError(path, "beam", f"beam index outside [0, {lidar.num_beams})")
        if m and (az.min() < 0 or az.max() >= lidar.azimuth_bins):
            raise DataError(path, "azimuth_index", f"azimuth index outside [0, {lidar.azimuth_bins})")
        if len(np.unique(beam * lidar.azimuth_bins + az)) != m:
            raise DataError(path, "azimuth_index", "a (beam, azimuth) ray appears more than once")
    if "ring" in arrays and m and arrays["ring"].min() < 0:
        raise DataError(path, "ring", "ring numbers must not be negative")
    return LidarSweep(
        xyz_m=arrays["xyz_m"].astype(np.float32),
        intensity=intensity,
        beam=None if beam is None else beam.astype(np.int16),
        azimuth_index=None if az is None else az.astype(np.int32),
        ring=arrays["ring"].astype(np.int16) if "ring" in arrays else None,
        time_offset_s=arrays["time_offset_s"].astype(np.float32) if "time_offset_s" in arrays else None,
    )


def _read_poses(root: Path, n: int, cameras: int, lidars: int, version: int) -> dict[str, np.ndarray]:
    """poses.npz: frame times and poses, optional sensor times (NaN allowed) and pose stream; LiDAR
    times come back as (L, N) whatever the version."""
    path = root / "poses.npz"
    arrays = read_npz(
        path,
        {"timestamps_s": (n,), "ego_poses": (n, 4, 4)},
        optional={
            "camera_timestamps_s": (cameras, n),
            "lidar_timestamps_s": (lidars, n) if version >= 3 else (n,),
            "stream_timestamps_s": (None,),
            "stream_ego_poses": (None, 4, 4),
        },
        may_be_nan=("camera_timestamps_s", "lidar_timestamps_s"),  # NaN: no data on that frame
    )
    if ("stream_timestamps_s" in arrays) != ("stream_ego_poses" in arrays):
        raise DataError(path, "stream_ego_poses", "stream_timestamps_s and stream_ego_poses come together")
    for name in ("timestamps_s", "stream_timestamps_s"):
        t = arrays.get(name)
        if t is not None and len(t) > 1 and not np.all(np.diff(t) > 0):
            i = int(np.argmin(np.diff(t) > 0)) + 1
            raise DataError(path, f"{name}[{i}]", "timestamps must be strictly increasing")
    if "stream_ego_poses" in arrays:
        if len(arrays["stream_ego_poses"]) != len(arrays["stream_timestamps_s"]) or not len(arrays["stream_ego_poses"]):
            raise DataError(path, "stream_ego_poses", "needs one pose per stream timestamp (at least one)")
        _check_poses(path, "stream_ego_poses", arrays["stream_ego_poses"])
    _check_poses(path, "ego_poses", arrays["ego_poses"])
    if "lidar_timestamps_s" in arrays and version < 3:
        arrays["lidar_timestamps_s"] = arrays["lidar_timestamps_s"][None]
    return arrays


def _read_tracks(root: Path, n: int, version: int) -> tuple[ActorTrack, ...]:
    tracks_meta: TracksSchema = read_json(root / "tracks.json", TracksSchema)
    a = len(tracks_meta.tracks)
    tracks_file = root / "tracks.npz"
    tr = read_npz(tracks_file, {"poses": (a, n, 4, 4), "valid": (a, n)}, finite=False)
    track_poses, valid = tr["poses"].astype(np.float64), tr["valid"].astype(bool)
    tracks = []
    for i, t in enumerate(tracks_meta.tracks):
        if version >= 2 and t.category not in CATEGORIES:
            raise DataError(root / "tracks.json", f"tracks[{i}].category", f"'{t.category}' is not one of {CATEGORIES}")
        if not np.all(np.isfinite(track_poses[i][valid[i]])):
            frame = int(np.argwhere(valid[i] & ~np.all(np.isfinite(track_poses[i]), axis=(1, 2)))[0, 0])
            raise DataError(tracks_file, f"poses[{i}][{frame}]", f"actor '{t.id}' has a NaN pose on a valid frame")
        _check_poses(tracks_file, f"poses[{i}]", track_poses[i], valid[i])
        tracks.append(ActorTrack(t.id, t.category, np.asarray(t.size_m), track_poses[i], valid[i], t.dataset_category))
    return tuple(tracks)


def _read_map(root: Path, version: int, ego_poses: np.ndarray) -> tuple[RoadMap, bool]:
    if version >= 2 and not (root / "map.json").exists():
        return corridor_map(ego_poses), False
    map_meta: MapSchema = read_json(root / "map.json", MapSchema)
    lanes = tuple(
        Lane(
            lane.id,
            np.asarray(lane.centerline_m, dtype=float),
            lane.width_m,
            lane.speed_limit_mps,
            tuple(lane.successors),
        )
        for lane in map_meta.lanes
    )
    return RoadMap(tuple(np.asarray(p, dtype=float) for p in map_meta.drivable_areas), lanes), True


def load_log(root: str | Path, check_files: bool = True) -> DrivingLog:
    """Load and validate a log's metadata; images and sweeps are read lazily on access.

    Raises :class:`DataError` naming the file and field of the first problem found.
    """
    root = Path(root)
    if root.is_file():
        raise DataError(root, None, "is a file, expected a log folder (with log.json)")
    if not root.is_dir():
        raise DataError(root, None, "log folder does not exist")
    meta: LogSchema = read_json(root / "log.json", LogSchema)
    rig = _rig_from_schema(meta, root)
    n = meta.num_frames
    poses = _read_poses(root, n, len(rig.cameras), len(rig.lidars), meta.version)
    folder_of = {lid.name: (lid.name if meta.version >= 3 else None) for lid in rig.lidars}
    ego_poses = poses["ego_poses"].astype(np.float64)
    camera_times = poses.get("camera_timestamps_s")
    lidar_times = poses.get("lidar_timestamps_s")
    stream = None
    if "stream_timestamps_s" in poses:
        stream = (poses["stream_timestamps_s"].astype(np.float64), poses["stream_ego_poses"].astype(np.float64))
    tracks = _read_tracks(root, n, meta.version)
    road_map, has_map = _read_map(root, meta.version, ego_poses)

    if check_files:
        for frame in range(n):
            for c, cam in enumerate(rig.cameras):
                has = camera_times is None or np.isfinite(camera_times[c, frame])
                if has and not image_path(root, cam.name, frame).is_file():
                    raise DataError(image_path(root, cam.name, frame), None, "missing image file")
            for k, lid in enumerate(rig.lidars):
                has = lidar_times is None or np.isfinite(lidar_times[k, frame])
                path = lidar_path(root, frame, folder_of[lid.name])
                if has and not path.is_file():
                    raise DataError(path, None, "missing LiDAR sweep file")

    return DrivingLog(
        root=root,
        name=meta.name,
        rig=rig,
        timestamps_s=poses["timestamps_s"].astype(np.float64),
        ego_poses=ego_poses,
        tracks=tracks,
        road_map=road_map,
        metadata=dict(meta.metadata) | {"frame_rate_hz": meta.frame_rate_hz},
        camera_timestamps_s=None if camera_times is None else camera_times.astype(np.float64),
        lidar_timestamps_s=None if lidar_times is None else lidar_times.astype(np.float64),
        pose_stream=stream,
        pose_source=meta.pose_source.model_dump(),
        has_map=has_map,
        _read_image=lambda cam, f: read_image(image_path(root, cam, f), rig.camera(cam)),
        _read_lidar=lambda name, f: read_lidar(lidar_path(root, f, folder_of[name]), rig.lidar_named(name)),
    )
