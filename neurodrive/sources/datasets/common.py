"""What every dataset importer needs: reading the dataset's files with errors that name them, the
one category set, the +0.5 pixel-centre shift, measured LiDAR patterns and a staged log write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurodrive.errors import DataError
from neurodrive.lidar.pattern import PatternReport, elevation_rad, measure_pattern
from neurodrive.logs.model import ActorTrack, CameraSpec, LidarSpec, LidarSweep, RoadMap, SensorRig
from neurodrive.logs.writer import LogTiming, LogWriter


def read_dataset_json(path: Path, what: str) -> Any:
    """A dataset's JSON file; one DataError naming it when missing (``what`` says which file it
    should have been) or unreadable."""
    from neurodrive.logs.io import read_json_file

    return read_json_file(path, missing=f"missing {what}")


def field_of(record: dict, key: str, source: Path | str, where: str) -> Any:
    """``record[key]``, or a DataError naming the file and ``where.key``."""
    if not isinstance(record, dict) or key not in record:
        raise DataError(source, f"{where}.{key}" if where else key, "missing field")
    return record[key]


def opencv_intrinsics(fx: float, fy: float, cx: float, cy: float, skew: float = 0.0) -> np.ndarray:
    """K in this format's convention (pixel centres at +0.5) from intrinsics whose pixel centres sit at
    integers (KITTI, OpenCV, nuScenes, DGP, AV2): the principal point moves by half a pixel."""
    return np.array([[fx, skew, cx + 0.5], [0.0, fy, cy + 0.5], [0.0, 0.0, 1.0]])


CategoryRule = tuple[str, str]  # (prefix of the dataset label, lower case; category)


def map_category(label: str, rules: tuple[CategoryRule, ...]) -> str:
    """The first rule whose prefix starts the lower-cased ``label``; "other" when none does."""
    low = label.lower()
    for prefix, category in rules:
        if low.startswith(prefix):
            return category
    return "other"


def check_image_size(path: Path, camera: CameraSpec) -> None:
    """One DataError when an image does not have the calibration's size (read from its header)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            size = im.size
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(path, None, f"unreadable image: {e}") from e
    if size != (camera.width_px, camera.height_px):
        raise DataError(
            path,
            "size",
            f"{size[0]}x{size[1]} does not match the calibration of camera '{camera.name}' "
            f"({camera.width_px}x{camera.height_px})",
        )


def measured_lidar(
    name: str,
    T_ego_lidar: np.ndarray,
    sweeps: list[LidarSweep],
    rows_from: str,
    max_range_m: float,
    rotation_rate_hz: float,
    motion_compensated: bool,
    cols: int | None = None,
    elevation_bin_deg: float = 0.2,
) -> tuple[LidarSpec, PatternReport]:
    """A LiDAR spec whose rays are measured from ``sweeps`` (rows from their ring field when they
    have one, else elevation bins of ``elevation_bin_deg``)."""
    sweep_rings = [(s.xyz_m, s.ring) for s in sweeps]
    pattern, report = measure_pattern(sweep_rings, rows_from, cols, np.deg2rad(elevation_bin_deg))
    rows, n_cols = pattern.image_shape
    row_of_ray = pattern.ray_cells // n_cols
    el = elevation_rad(pattern.ray_directions)
    row_el = np.array([np.mean(el[row_of_ray == r]) if np.any(row_of_ray == r) else np.nan for r in range(rows)])
    row_el = np.where(np.isfinite(row_el), row_el, np.nanmean(row_el))
    spec = LidarSpec(
        name=name,
        T_ego_lidar=T_ego_lidar,
        beam_elevations_rad=np.clip(row_el, -np.pi / 2, np.pi / 2),
        azimuth_bins=n_cols,
        min_range_m=0.0,
        max_range_m=max_range_m,
        rotation_rate_hz=rotation_rate_hz,
        measured_pattern=pattern,
        motion_compensated=motion_compensated,
    )
    return spec, report


@dataclass
class ImportedLog:
    """Everything an importer gathered, written by :meth:`write` into a staged folder."""

    name: str
    rig: SensorRig
    timestamps_s: np.ndarray
    ego_poses: np.ndarray
    tracks: tuple[ActorTrack, ...]
    road_map: RoadMap | None
    frame_rate_hz: float
    timing: LogTiming
    images: dict[tuple[str, int], Path] = field(default_factory=dict)  # (camera, frame) -> source file
    sweeps: dict[int, LidarSweep] = field(default_factory=dict)  # frame -> sweep
    metadata: dict = field(default_factory=dict)

    def write(self, out: Path, overwrite: bool = False) -> Path:
        from neurodrive.io_utils import staged_directory

        with staged_directory(out, overwrite=overwrite) as staging:
            writer = LogWriter(staging)
            for (camera, frame), src in sorted(self.images.items()):
                writer.copy_image(camera, frame, src)
            for frame, sweep in sorted(self.sweeps.items()):
                writer.write_lidar(frame, sweep)
            writer.write_metadata(
                self.name,
                self.rig,
                self.timestamps_s,
                self.ego_poses,
                self.tracks,
                self.road_map,
                self.frame_rate_hz,
                self.metadata,
                self.timing,
            )
        return out


def stream_timing(
    camera_timestamps_s: np.ndarray | None,
    lidar_timestamps_s: np.ndarray | None,
    stream: dict[float, np.ndarray],
    pose_source: dict,
) -> LogTiming:
    """Sensor times and a pose stream made of ``stream`` (time s -> T_world_ego) in time order."""
    times = np.array(sorted(stream))
    return LogTiming(camera_timestamps_s, lidar_timestamps_s, times, np.stack([stream[t] for t in times]), pose_source)


@dataclass
class DatasetSource:
    """A dataset importer as a ``LogSource``: ``read(src, options)`` gathers the log, which is then
    written atomically to ``out``."""

    name: str
    description: str
    input: str  # what SRC is, named in the error when it is missing
    read: Callable[[Path, dict[str, Any]], ImportedLog]

    def write_log(self, src: Path | None, out: Path, **options: Any) -> Path:
        if src is None:
            raise ValueError(f"{self.name} needs {self.input}")
        return self.read(Path(src), options).write(out, overwrite=bool(options.get("overwrite", False)))


def tracks_from_boxes(
    boxes: dict[str, list[tuple[int, np.ndarray, np.ndarray]]],
    labels: dict[str, str],
    rules: tuple[CategoryRule, ...],
    num_frames: int,
) -> tuple[ActorTrack, ...]:
    """Tracks from per-instance boxes ``id -> [(frame, T_world_box, size (l, w, h))]``: valid only on
    the frames that have a box; the size is the median over the instance's boxes."""
    tracks = []
    for actor_id in sorted(boxes):
        poses = np.full((num_frames, 4, 4), np.nan)
        valid = np.zeros(num_frames, bool)
        for frame, pose, _ in boxes[actor_id]:
            poses[frame], valid[frame] = pose, True
        size = np.median(np.array([b[2] for b in boxes[actor_id]]), axis=0)
        label = labels[actor_id]
        tracks.append(ActorTrack(actor_id, map_category(label, rules), size, poses, valid, label))
    return tuple(tracks)
