"""Writing logs in the on-disk format of docs/log_format.md (reading: ``logs.io``).

Every file is written atomically; a source builds a whole log inside ``io_utils.staged_directory``
so that an interrupted import leaves nothing half-written at its destination.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from neurodrive.io_utils import atomic_write_bytes, atomic_write_json, atomic_write_npz, inside
from neurodrive.logs.io import image_path, lidar_path, lidar_pattern_path
from neurodrive.logs.model import ActorTrack, DrivingLog, RoadMap, SensorRig
from neurodrive.logs.schema import FORMAT_NAME, FORMAT_VERSION


def _rig_to_json(rig: SensorRig) -> dict:
    cameras = []
    for c in rig.cameras:
        cam = {
            "name": c.name,
            "width_px": c.width_px,
            "height_px": c.height_px,
            "intrinsics": c.intrinsics.tolist(),
            "T_ego_camera": c.T_ego_camera.tolist(),
        }
        if c.is_distorted:
            cam["distortion"] = np.asarray(c.distortion, float).tolist()
        cameras.append(cam)
    lidars = [
        {
            "name": lid.name,
            "T_ego_lidar": lid.T_ego_lidar.tolist(),
            "beam_elevations_deg": np.rad2deg(lid.beam_elevations_rad).tolist(),
            "azimuth_bins": lid.azimuth_bins,
            "min_range_m": lid.min_range_m,
            "max_range_m": lid.max_range_m,
            "rotation_rate_hz": lid.rotation_rate_hz,
            "pattern": "beam_grid" if lid.measured_pattern is None else "measured",
            "motion_compensated": lid.motion_compensated,
        }
        for lid in rig.lidars
    ]
    return {"cameras": cameras, "lidars": lidars}


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 colour image or an (H, W) uint16 single-channel image."""
    buf = io.BytesIO()
    if image.dtype == np.uint16:
        Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    else:
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG", compress_level=4)
    return buf.getvalue()


@dataclass(frozen=True)
class LogTiming:
    """Version-2 timing of a log: per-sensor times (NaN where a sensor has no data on a frame) and a
    denser ego trajectory; all optional (None: every sensor at the frame's time, poses per frame)."""

    camera_timestamps_s: np.ndarray | None = None  # (C, N)
    lidar_timestamps_s: np.ndarray | None = None  # (L, N); (N,) for a rig with one LiDAR
    stream_timestamps_s: np.ndarray | None = None  # (K,)
    stream_ego_poses: np.ndarray | None = None  # (K, 4, 4)
    pose_source: dict = field(default_factory=lambda: {"kind": "measured", "method": "unknown"})

    def arrays(self) -> dict[str, np.ndarray]:
        names = ("camera_timestamps_s", "lidar_timestamps_s", "stream_timestamps_s", "stream_ego_poses")
        arrays = {n: np.asarray(getattr(self, n), np.float64) for n in names if getattr(self, n) is not None}
        if "lidar_timestamps_s" in arrays:
            arrays["lidar_timestamps_s"] = np.atleast_2d(arrays["lidar_timestamps_s"])
        return arrays


class LogWriter:
    """Writes a log folder file by file; each file is written atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _image_file(self, camera: str, frame: int) -> Path:
        inside(self.root / "camera", camera)  # a camera name is one folder name, never a path
        return image_path(self.root, camera, frame)

    def write_image(self, camera: str, frame: int, rgb: np.ndarray) -> None:
        atomic_write_bytes(self._image_file(camera, frame), encode_png(rgb))

    def copy_image(self, camera: str, frame: int, src: Path) -> None:
        """Keep a dataset's PNG or JPEG file byte for byte (no re-encoding)."""
        suffix = {".jpeg": ".jpg"}.get(src.suffix.lower(), src.suffix.lower())
        if suffix not in (".png", ".jpg"):
            raise ValueError(f"{src}: only PNG and JPEG images can be kept as they are")
        atomic_write_bytes(self._image_file(camera, frame).with_suffix(suffix), src.read_bytes())

    def write_lidar(self, frame: int, sweep, lidar: str) -> None:
        """The sweep of LiDAR ``lidar`` (its name, one folder name) at ``frame``."""
        arrays = {"xyz_m": sweep.xyz_m.astype(np.float32), "intensity": sweep.intensity.astype(np.float32)}
        if sweep.beam is not None and sweep.azimuth_index is not None:
            arrays |= {"beam": sweep.beam.astype(np.int16), "azimuth_index": sweep.azimuth_index.astype(np.int32)}
        if sweep.ring is not None:
            arrays["ring"] = sweep.ring.astype(np.int16)
        if sweep.time_offset_s is not None:
            arrays["time_offset_s"] = sweep.time_offset_s.astype(np.float32)
        inside(self.root / "lidar", lidar)  # a LiDAR name is one folder name, never a path
        atomic_write_npz(lidar_path(self.root, frame, lidar), **arrays)

    def write_metadata(
        self,
        name: str,
        rig: SensorRig,
        timestamps_s: np.ndarray,
        ego_poses: np.ndarray,
        tracks: tuple[ActorTrack, ...],
        road_map: RoadMap | None,
        frame_rate_hz: float,
        metadata: dict | None = None,
        timing: LogTiming | None = None,
    ) -> None:
        """The log's metadata files; ``road_map`` None writes no map.json (a log without a map)."""
        n = len(timestamps_s)
        timing = timing or LogTiming()
        for lid in rig.lidars:
            if lid.measured_pattern is not None:
                inside(self.root / "lidar", lid.name)
                atomic_write_npz(lidar_pattern_path(self.root, lid.name), **lid.measured_pattern.to_arrays())
        atomic_write_npz(
            self.root / "poses.npz",
            timestamps_s=np.asarray(timestamps_s),
            ego_poses=np.asarray(ego_poses),
            **timing.arrays(),
        )
        atomic_write_json(
            self.root / "tracks.json",
            {
                "tracks": [
                    {
                        "id": t.actor_id,
                        "category": t.category,
                        "dataset_category": t.dataset_category,
                        "size_m": np.asarray(t.size_m).tolist(),
                    }
                    for t in tracks
                ]
            },
        )
        atomic_write_npz(
            self.root / "tracks.npz",
            poses=np.stack([t.poses for t in tracks]) if tracks else np.zeros((0, n, 4, 4)),
            valid=np.stack([t.valid for t in tracks]) if tracks else np.zeros((0, n), dtype=bool),
        )
        if road_map is not None:
            atomic_write_json(self.root / "map.json", _map_to_json(road_map))
        # log.json last: a folder without it is not a log
        atomic_write_json(
            self.root / "log.json",
            {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "name": name,
                "num_frames": n,
                "frame_rate_hz": frame_rate_hz,
                "rig": _rig_to_json(rig),
                "pose_source": timing.pose_source,
                "metadata": metadata or {},
            },
        )


def _map_to_json(road_map: RoadMap) -> dict:
    return {
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
    }


def write_log(log: DrivingLog, root: str | Path) -> None:
    """Write a complete copy of ``log`` (all frames) to ``root``."""
    writer = LogWriter(root)
    for frame in range(log.num_frames):
        for cam in log.rig.camera_names:
            if log.has_image(cam, frame):
                writer.write_image(cam, frame, log.image(cam, frame))
        for lidar in log.rig.lidar_names:
            if log.has_lidar(frame, lidar):
                writer.write_lidar(frame, log.lidar(frame, lidar), lidar)
    stream = log.pose_stream or (None, None)
    writer.write_metadata(
        log.name,
        log.rig,
        log.timestamps_s,
        log.ego_poses,
        log.tracks,
        log.road_map if log.has_map else None,
        float(log.metadata.get("frame_rate_hz", 10.0)),
        {k: v for k, v in log.metadata.items() if k != "frame_rate_hz"},
        LogTiming(log.camera_timestamps_s, log.lidar_timestamps_s, stream[0], stream[1], dict(log.pose_source)),
    )
