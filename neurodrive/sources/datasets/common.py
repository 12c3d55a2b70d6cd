"""What every dataset importer needs: reading the dataset's files with errors that name them (paths
from data files kept inside the dataset, poses and numbers checked finite), the one category set,
the +0.5 pixel-centre shift, measured LiDAR patterns and a staged, checked log write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurodrive.errors import DataError
from neurodrive.geometry import pose_from_quaternion
from neurodrive.lidar.pattern import PatternReport, elevation_rad, measure_pattern
from neurodrive.lidar.sensor import LidarSpec, LidarSweep
from neurodrive.logs.model import ActorTrack, CameraSpec, RoadMap, SensorRig
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


def dataset_file(root: Path, value: object, source: Path | str, where: str, base: Path | None = None) -> Path:
    """A file named in a dataset's table (relative to ``base``, default ``root``); one DataError
    naming ``source`` and ``where`` when it is not a string, is absolute or leads outside ``root``."""
    from neurodrive.io_utils import path_in_root

    return path_in_root(root, value, source, where, base)


def numbers(value: object, count: int, source: Path | str, where: str) -> np.ndarray:
    """``count`` finite numbers read from a dataset (a list, or a matrix flattened); one DataError
    naming the file and field otherwise."""
    try:
        arr = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(source, where, f"expected {count} numbers, got {value!r}") from e
    if arr.size != count:
        raise DataError(source, where, f"expected {count} numbers, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise DataError(source, where, "contains NaN or infinite values")
    return arr


def dataset_pose(wxyz: object, translation: object, source: Path | str, where: str) -> np.ndarray:
    """T from a quaternion (w, x, y, z) and a translation read from a dataset; one DataError naming
    the file and field for a missing, non-finite or zero quaternion or translation."""
    q = numbers(wxyz, 4, source, f"{where}.rotation")
    t = numbers(translation, 3, source, f"{where}.translation")
    if np.linalg.norm(q) < 1e-6:
        raise DataError(source, f"{where}.rotation", "is a zero quaternion")
    return pose_from_quaternion(q, t)  # scipy normalises the quaternion


MAX_RING = 1023  # ring / laser numbers of real LiDARs are below 128; int16 in the log format


def ring_index(values: np.ndarray, source: Path | str, field: str) -> np.ndarray:
    """A sweep's ring / laser numbers as int16; one DataError when one is not a whole number in
    [0, MAX_RING] (a larger one would wrap around in the log's int16)."""
    values = np.asarray(values)
    bad = ~np.isfinite(values) | (values < 0) | (values > MAX_RING) | (values != np.round(values))
    if np.any(bad):
        raise DataError(source, field, f"{values[bad][0]!r} is not a ring index (whole numbers 0 to {MAX_RING})")
    return values.astype(np.int16)


def safe_file_name(value: object, source: Path | str, where: str, what: str) -> str:
    """A name from a dataset that becomes a file or folder name (``what``: a sensor name, a file key, a
    track id); one DataError naming the file and field, before anything is written, unless it is a
    plain file name (``io_utils.is_safe_name``)."""
    from neurodrive.io_utils import is_safe_name

    if not isinstance(value, str) or not is_safe_name(value):
        raise DataError(
            source, where, f"{what} {value!r} cannot be used as a file name (letters, digits, '_', '.', '-' only)"
        )
    return value


def image_size(width: object, height: object, source: Path | str, where: str) -> tuple[int, int]:
    """(width, height) in pixels read from a dataset; one DataError unless both are positive whole numbers."""
    size = numbers([width, height], 2, source, f"{where}.width/height")
    if np.any(size < 1) or np.any(size != np.round(size)):
        raise DataError(source, f"{where}.width", f"image size {size.tolist()} is not a positive whole number")
    return int(size[0]), int(size[1])


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


def check_image(path: Path, camera: CameraSpec) -> None:
    """One DataError when an image is missing, cannot be decoded whole (a truncated PNG / JPEG) or
    does not have the calibration's size."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(path, None, "missing image file")
    try:
        with Image.open(path) as im:
            size = im.size
            im.load()  # decodes every pixel: a truncated file fails here, not later in export or overlay
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DataError(path, None, f"unreadable or truncated image: {e}") from e
    if size != (camera.width_px, camera.height_px):
        raise DataError(
            path,
            "size",
            f"{size[0]}x{size[1]} does not match the calibration of camera '{camera.name}' "
            f"({camera.width_px}x{camera.height_px})",
        )


def ground_height_m(sweep: LidarSweep, default_m: float = 1.73) -> float:
    """Height of the sensor above the ground (sweep in x forward, z up axes): the median of the lowest
    third of the returns on the strip ahead (4-15 m forward, within 3 m sideways); ``default_m``
    (KITTI's documented 1.73 m) when too few."""
    xyz = sweep.xyz_m
    z = xyz[(xyz[:, 0] > 4) & (xyz[:, 0] < 15) & (np.abs(xyz[:, 1]) < 3), 2]
    return float(-np.median(z[z <= np.percentile(z, 33)])) if len(z) > 100 else default_m


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


Progress = Callable[[str, int, int], None]  # (stage, done, total)


def no_progress(stage: str, done: int, total: int) -> None:
    """The progress callback when nobody listens."""


@dataclass
class ImportedLog:
    """Everything an importer gathered, checked by :meth:`check` and written by :meth:`write` into a
    staged folder."""

    name: str
    rig: SensorRig
    timestamps_s: np.ndarray
    ego_poses: np.ndarray
    tracks: tuple[ActorTrack, ...]
    road_map: RoadMap | None
    frame_rate_hz: float
    timing: LogTiming
    images: dict[tuple[str, int], Path] = field(default_factory=dict)  # (camera, frame) -> source file
    sweeps: dict[tuple[str, int], LidarSweep] = field(default_factory=dict)  # (LiDAR, frame) -> sweep
    metadata: dict = field(default_factory=dict)

    def check(self, source: Path) -> None:
        """Before anything is written: every name that becomes a path is a plain file name and every
        pose, time and calibration is finite (errors name the dataset ``source`` and the field).
        Importers check what they read where they read it; this catches what slipped through."""
        for i, cam in enumerate(self.rig.cameras):
            safe_file_name(cam.name, source, f"cameras[{i}].name", "sensor name")
            numbers(cam.intrinsics, 9, source, f"cameras[{i}].intrinsics")
            numbers(cam.T_ego_camera, 16, source, f"cameras[{i}].T_ego_camera")
        for i, lid in enumerate(self.rig.lidars):
            safe_file_name(lid.name, source, f"lidars[{i}].name", "sensor name")
            numbers(lid.T_ego_lidar, 16, source, f"lidars[{i}].T_ego_lidar")
        for i, track in enumerate(self.tracks):
            safe_file_name(track.actor_id, source, f"tracks[{i}].id", "track id")
            numbers(track.size_m, 3, source, f"tracks[{i}].size_m")
        arrays = {"timestamps_s": self.timestamps_s, "ego_poses": self.ego_poses, **self.timing.arrays()}
        for name, arr in arrays.items():
            finite = np.isfinite(arr) | (name in ("camera_timestamps_s", "lidar_timestamps_s"))
            if not np.all(finite):
                raise DataError(source, name, "contains NaN or infinite values")

    def write(
        self, out: Path, overwrite: bool = False, source: Path | None = None, progress: Progress = no_progress
    ) -> Path:
        """Checks the log, writes it into a staging folder beside ``out``, loads it back (``load_log``)
        and only then moves it into place: a failed import leaves the previous ``out`` as it was."""
        from neurodrive.io_utils import staged_directory
        from neurodrive.logs.io import load_log

        source = Path(source) if source is not None else Path(self.name)
        self.check(source)
        with staged_directory(out, overwrite=overwrite) as staging:
            writer = LogWriter(staging)
            total = len(self.images) + len(self.sweeps) + 1
            for done, ((camera, frame), src) in enumerate(sorted(self.images.items()), 1):
                writer.copy_image(camera, frame, src)
                progress("writing the log", done, total)
            for done, ((lidar, frame), sweep) in enumerate(sorted(self.sweeps.items()), len(self.images) + 1):
                writer.write_lidar(frame, sweep, lidar)
                progress("writing the log", done, total)
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
            try:
                load_log(staging)
            except DataError as e:
                raise DataError(
                    source, e.field, f"the imported log would not load ({Path(e.file).name}): {e.problem}"
                ) from e
            progress("writing the log", total, total)
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


COMMON_OPTIONS = ("overwrite", "progress")  # every importer takes these


@dataclass
class DatasetSource:
    """A dataset importer as a ``LogSource``: ``read(src, options)`` gathers the log, which is then
    checked and written atomically to ``out``.

    ``options`` names the options it reads (besides ``overwrite`` and ``progress``): any other one
    given is refused rather than silently ignored. ``root_of(src)`` is the dataset's folder (the
    files it names must stay inside it; ``out`` must not be, hold or lie inside it)."""

    name: str
    description: str
    input: str  # what SRC is, named in the error when it is missing
    read: Callable[[Path, dict[str, Any]], ImportedLog]
    options: tuple[str, ...] = ()
    root_of: Callable[[Path], Path] = lambda src: src

    def write_log(self, src: Path | None, out: Path, **options: Any) -> Path:
        from neurodrive.io_utils import check_output

        if src is None:
            raise ValueError(f"{self.name} needs {self.input}")
        src = Path(src)
        for key, value in options.items():
            if value is not None and key not in self.options + COMMON_OPTIONS:
                used = ", ".join(f"--{o}" for o in self.options) or "none"
                raise ValueError(f"--{key} is not used by the {self.name} importer (its options: {used})")
        frames = options.get("frames")
        if frames is not None and frames < 1:
            raise ValueError(f"--frames must be at least 1, got {frames}")
        if not src.exists():
            raise DataError(src, None, f"does not exist (expected {self.input})")
        inputs = [("the dataset", self.root_of(src))]
        inputs += [(f"the --{k} folder", v) for k, v in options.items() if isinstance(v, Path)]
        overwrite = bool(options.get("overwrite", False))
        check_output(out, overwrite, "folder", inputs)  # before the import's work, not after it
        imported = self.read(src, options)
        return imported.write(out, overwrite, src, options.get("progress") or no_progress)


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
