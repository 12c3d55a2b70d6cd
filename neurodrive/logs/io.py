"""Reading and writing logs in the on-disk format of docs/log_format.md.

Layout of a log folder::

    log.json                      name, frame rate, sensor rig (LogSchema)
    poses.npz                     timestamps_s (N,), ego_poses (N, 4, 4)
    tracks.json, tracks.npz       actor id/category/size; poses (A, N, 4, 4), valid (A, N)
    map.json                      drivable-area polygons and lane centrelines (MapSchema)
    camera/<name>/<frame>.png     RGB images, frame number zero-padded to 6 digits
    lidar/<frame>.npz             xyz_m (M, 3), intensity (M,), beam (M,), azimuth_index (M,)
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ValidationError

from neurodrive.errors import DataError
from neurodrive.geometry import is_rigid
from neurodrive.io_utils import atomic_write_bytes, atomic_write_json, atomic_write_npz
from neurodrive.logs.model import (
    ActorTrack,
    CameraSpec,
    DrivingLog,
    Lane,
    LidarSpec,
    LidarSweep,
    RoadMap,
    SensorRig,
)
from neurodrive.logs.schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    LogSchema,
    MapSchema,
    TracksSchema,
    describe_validation_error,
)


def image_path(root: Path, camera: str, frame: int) -> Path:
    return Path(root) / "camera" / camera / f"{frame:06d}.png"


def lidar_path(root: Path, frame: int) -> Path:
    return Path(root) / "lidar" / f"{frame:06d}.npz"


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


def read_npz(path: Path, shapes: dict[str, tuple[int | None, ...]], finite: bool = True) -> dict[str, np.ndarray]:
    """Load arrays from an ``.npz`` (pickles refused) and check their shapes; None matches any size."""
    if not path.is_file():
        raise DataError(path, None, "missing file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError) as e:
        raise DataError(path, None, f"corrupt or truncated npz file: {e}") from e
    for name, shape in shapes.items():
        if name not in arrays:
            raise DataError(path, name, "missing array")
        arr = arrays[name]
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise DataError(path, name, f"expected shape {want}, got {arr.shape}")
        if arr.dtype == object:
            raise DataError(path, name, "object arrays are not allowed")
        if finite and np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise DataError(path, f"{name}[{bad[0]}]", "contains NaN or infinite values")
    return arrays


def _check_poses(path: Path, name: str, poses: np.ndarray, mask: np.ndarray | None = None) -> None:
    for i in range(poses.shape[0]):
        if (mask is None or mask[i]) and not is_rigid(poses[i]):
            raise DataError(path, f"{name}[{i}]", "is not a finite rigid 4x4 transform")


def _rig_from_schema(schema: LogSchema) -> SensorRig:
    cams = tuple(
        CameraSpec(c.name, c.width_px, c.height_px, np.asarray(c.intrinsics), np.asarray(c.T_ego_camera))
        for c in schema.rig.cameras
    )
    lid = schema.rig.lidar
    lidar = LidarSpec(
        name=lid.name,
        T_ego_lidar=np.asarray(lid.T_ego_lidar),
        beam_elevations_rad=np.deg2rad(np.asarray(lid.beam_elevations_deg)),
        azimuth_bins=lid.azimuth_bins,
        min_range_m=lid.min_range_m,
        max_range_m=lid.max_range_m,
        rotation_rate_hz=lid.rotation_rate_hz,
    )
    return SensorRig(cams, lidar)


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
    arrays = read_npz(path, {"xyz_m": (None, 3), "intensity": (None,), "beam": (None,), "azimuth_index": (None,)})
    m = arrays["xyz_m"].shape[0]
    for name in ("intensity", "beam", "azimuth_index"):
        if arrays[name].shape[0] != m:
            raise DataError(path, name, f"has {arrays[name].shape[0]} entries but xyz_m has {m}")
    for name in ("beam", "azimuth_index"):
        if not np.issubdtype(arrays[name].dtype, np.integer):
            raise DataError(path, name, f"expected integers, got {arrays[name].dtype}")
    beam, az = arrays["beam"].astype(np.int64), arrays["azimuth_index"].astype(np.int64)
    if m and (beam.min() < 0 or beam.max() >= lidar.num_beams):
        raise DataError(path, "beam", f"beam index outside [0, {lidar.num_beams})")
    if m and (az.min() < 0 or az.max() >= lidar.azimuth_bins):
        raise DataError(path, "azimuth_index", f"azimuth index outside [0, {lidar.azimuth_bins})")
    if len(np.unique(beam * lidar.azimuth_bins + az)) != m:
        raise DataError(path, "azimuth_index", "a (beam, azimuth) ray appears more than once")
    intensity = arrays["intensity"].astype(np.float32)
    if m and (intensity.min() < 0.0 or intensity.max() > 1.0):
        raise DataError(path, "intensity", "values must lie in [0, 1]")
    return LidarSweep(
        xyz_m=arrays["xyz_m"].astype(np.float32),
        intensity=intensity,
        beam=beam.astype(np.int16),
        azimuth_index=az.astype(np.int32),
    )


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
    rig = _rig_from_schema(meta)
    n = meta.num_frames

    poses_file = root / "poses.npz"
    poses = read_npz(poses_file, {"timestamps_s": (n,), "ego_poses": (n, 4, 4)})
    timestamps = poses["timestamps_s"].astype(np.float64)
    if n > 1 and not np.all(np.diff(timestamps) > 0):
        i = int(np.argmin(np.diff(timestamps) > 0)) + 1
        raise DataError(poses_file, f"timestamps_s[{i}]", "timestamps must be strictly increasing")
    ego_poses = poses["ego_poses"].astype(np.float64)
    _check_poses(poses_file, "ego_poses", ego_poses)

    tracks_meta: TracksSchema = read_json(root / "tracks.json", TracksSchema)
    a = len(tracks_meta.tracks)
    tracks_file = root / "tracks.npz"
    tr = read_npz(tracks_file, {"poses": (a, n, 4, 4), "valid": (a, n)}, finite=False)
    track_poses, valid = tr["poses"].astype(np.float64), tr["valid"].astype(bool)
    tracks = []
    for i, t in enumerate(tracks_meta.tracks):
        if not np.all(np.isfinite(track_poses[i][valid[i]])):
            frame = int(np.argwhere(valid[i] & ~np.all(np.isfinite(track_poses[i]), axis=(1, 2)))[0, 0])
            raise DataError(tracks_file, f"poses[{i}][{frame}]", f"actor '{t.id}' has a NaN pose on a valid frame")
        _check_poses(tracks_file, f"poses[{i}]", track_poses[i], valid[i])
        tracks.append(ActorTrack(t.id, t.category, np.asarray(t.size_m), track_poses[i], valid[i]))

    map_meta: MapSchema = read_json(root / "map.json", MapSchema)
    road_map = RoadMap(
        drivable_areas=tuple(np.asarray(p, dtype=float) for p in map_meta.drivable_areas),
        lanes=tuple(
            Lane(
                lane.id,
                np.asarray(lane.centerline_m, dtype=float),
                lane.width_m,
                lane.speed_limit_mps,
                tuple(lane.successors),
            )
            for lane in map_meta.lanes
        ),
    )

    if check_files:
        for frame in range(n):
            for cam in rig.cameras:
                if not image_path(root, cam.name, frame).is_file():
                    raise DataError(image_path(root, cam.name, frame), None, "missing image file")
            if not lidar_path(root, frame).is_file():
                raise DataError(lidar_path(root, frame), None, "missing LiDAR sweep file")

    return DrivingLog(
        root=root,
        name=meta.name,
        rig=rig,
        timestamps_s=timestamps,
        ego_poses=ego_poses,
        tracks=tuple(tracks),
        road_map=road_map,
        metadata=dict(meta.metadata) | {"frame_rate_hz": meta.frame_rate_hz},
        _read_image=lambda cam, f: read_image(image_path(root, cam, f), rig.camera(cam)),
        _read_lidar=lambda f: read_lidar(lidar_path(root, f), rig.lidar),
    )


# ----------------------------------------------------------------------------------------- writing


def _rig_to_json(rig: SensorRig) -> dict:
    lid = rig.lidar
    return {
        "cameras": [
            {
                "name": c.name,
                "width_px": c.width_px,
                "height_px": c.height_px,
                "intrinsics": c.intrinsics.tolist(),
                "T_ego_camera": c.T_ego_camera.tolist(),
            }
            for c in rig.cameras
        ],
        "lidar": {
            "name": lid.name,
            "T_ego_lidar": lid.T_ego_lidar.tolist(),
            "beam_elevations_deg": np.rad2deg(lid.beam_elevations_rad).tolist(),
            "azimuth_bins": lid.azimuth_bins,
            "min_range_m": lid.min_range_m,
            "max_range_m": lid.max_range_m,
            "rotation_rate_hz": lid.rotation_rate_hz,
        },
    }


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 colour image or an (H, W) uint16 single-channel image."""
    buf = io.BytesIO()
    if image.dtype == np.uint16:
        Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    else:
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG", compress_level=4)
    return buf.getvalue()


class LogWriter:
    """Writes a log folder file by file; each file is written atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def write_image(self, camera: str, frame: int, rgb: np.ndarray) -> None:
        atomic_write_bytes(image_path(self.root, camera, frame), encode_png(rgb))

    def write_lidar(self, frame: int, sweep: LidarSweep) -> None:
        atomic_write_npz(
            lidar_path(self.root, frame),
            xyz_m=sweep.xyz_m.astype(np.float32),
            intensity=sweep.intensity.astype(np.float32),
            beam=sweep.beam.astype(np.int16),
            azimuth_index=sweep.azimuth_index.astype(np.int32),
        )

    def write_metadata(
        self,
        name: str,
        rig: SensorRig,
        timestamps_s: np.ndarray,
        ego_poses: np.ndarray,
        tracks: tuple[ActorTrack, ...],
        road_map: RoadMap,
        frame_rate_hz: float,
        metadata: dict | None = None,
    ) -> None:
        n = len(timestamps_s)
        atomic_write_json(
            self.root / "log.json",
            {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "name": name,
                "num_frames": n,
                "frame_rate_hz": frame_rate_hz,
                "rig": _rig_to_json(rig),
                "metadata": metadata or {},
            },
        )
        atomic_write_npz(
            self.root / "poses.npz", timestamps_s=np.asarray(timestamps_s), ego_poses=np.asarray(ego_poses)
        )
        atomic_write_json(
            self.root / "tracks.json",
            {
                "tracks": [
                    {"id": t.actor_id, "category": t.category, "size_m": np.asarray(t.size_m).tolist()} for t in tracks
                ]
            },
        )
        atomic_write_npz(
            self.root / "tracks.npz",
            poses=np.stack([t.poses for t in tracks]) if tracks else np.zeros((0, n, 4, 4)),
            valid=np.stack([t.valid for t in tracks]) if tracks else np.zeros((0, n), dtype=bool),
        )
        atomic_write_json(
            self.root / "map.json",
            {
                "drivable_areas": [np.asarray(p).tolist() for p in road_map.drivable_areas],
                "lanes": [
                    {
                        "id": lane.lane_id,
                        "centerline_m": np.asarray(lane.centerline_m).tolist(),
                        "width_m": lane.width_m,
                        "speed_limit_mps": lane.speed_limit_mps,
                        "successors": list(lane.successors),
                    }
                    for lane in road_map.lanes
                ],
            },
        )


def write_log(log: DrivingLog, root: str | Path) -> None:
    """Write a complete copy of ``log`` (all frames) to ``root``."""
    writer = LogWriter(root)
    for frame in range(log.num_frames):
        for cam in log.rig.camera_names:
            writer.write_image(cam, frame, log.image(cam, frame))
        writer.write_lidar(frame, log.lidar(frame))
    writer.write_metadata(
        log.name,
        log.rig,
        log.timestamps_s,
        log.ego_poses,
        log.tracks,
        log.road_map,
        float(log.metadata.get("frame_rate_hz", 10.0)),
        {k: v for k, v in log.metadata.items() if k != "frame_rate_hz"},
    )
