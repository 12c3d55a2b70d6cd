"""A LiDAR of a rig (``LidarSpec``: mount, beams or measured rays, ranges) and one sweep of its returns
(``LidarSweep``). Logs hold them (``logs/model.py``); casting, fitting and rendering read the rays
through ``LidarSpec.pattern`` (``lidar/pattern.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from neurodrive.lidar.pattern import BeamGrid, MeasuredPattern, RayPattern, to_image


@dataclass(frozen=True)
class LidarSpec:
    """A LiDAR. Without ``measured_pattern`` it is a beam grid: every sweep fires each (beam, azimuth
    bin) ray once, beam b at elevation ``beam_elevations_rad[b]``, bin a at azimuth
    ``2*pi*a/azimuth_bins`` counter-clockwise from the sensor's +x axis. With one (real sensors), the
    rays are the measured ones and ``beam_elevations_rad`` / ``azimuth_bins`` describe its image
    rows (mean elevation) and columns. Sensor axes: x forward, y left, z up. Casting, fitting and
    formatting read the rays through :attr:`pattern` (``neurodrive.lidar.pattern``).
    """

    name: str
    T_ego_lidar: np.ndarray  # (4, 4) lidar -> ego
    beam_elevations_rad: np.ndarray  # (B,)
    azimuth_bins: int  # W
    min_range_m: float
    max_range_m: float
    rotation_rate_hz: float
    measured_pattern: MeasuredPattern | None = field(default=None, repr=False)
    motion_compensated: bool = True  # each sweep's points are in the LiDAR frame at the sweep's time

    @property
    def num_beams(self) -> int:
        return int(self.beam_elevations_rad.shape[0])

    @cached_property
    def pattern(self) -> RayPattern:
        """The rays of one sweep and their places in the range image."""
        if self.measured_pattern is not None:
            return self.measured_pattern
        return BeamGrid(self.beam_elevations_rad, self.azimuth_bins)


@dataclass(frozen=True)
class LidarSweep:
    """The returns of one sweep, in the LiDAR frame at the sweep's timestamp.

    Every ray of the sensor's pattern without a return here was dropped: see :meth:`return_mask`.
    Beam-grid sweeps name each return's ray (``beam``, ``azimuth_index``); real sweeps keep the
    dataset's optional per-point fields (``ring``: ring / laser number, ``time_offset_s``: firing
    time after the sweep's timestamp); ``ray`` is set on rendered sweeps of a measured pattern.
    """

    xyz_m: np.ndarray  # (M, 3) float32
    intensity: np.ndarray  # (M,) float32 in [0, 1]
    beam: np.ndarray | None = None  # (M,) int16, beam index of each return (beam grid)
    azimuth_index: np.ndarray | None = None  # (M,) int32, azimuth bin of each return (beam grid)
    ring: np.ndarray | None = None  # (M,) int16, ring / laser number
    time_offset_s: np.ndarray | None = None  # (M,) float32
    ray: np.ndarray | None = None  # (M,) int64, ray of the pattern (rendered sweeps)

    @property
    def num_returns(self) -> int:
        return int(self.xyz_m.shape[0])

    def range_m(self) -> np.ndarray:
        return np.linalg.norm(self.xyz_m, axis=1)

    def ray_image(self, lidar: LidarSpec, values: np.ndarray, fill: float = 0) -> np.ndarray:
        """(rows, cols) range image of the sensor's pattern holding ``values`` (M,) at the returns
        (their dtype), ``fill`` elsewhere."""
        values = np.asarray(values)
        rays = lidar.pattern.rays_of(self)
        per_ray = np.full(len(lidar.pattern.directions()), fill, dtype=values.dtype)
        if lidar.measured_pattern is None or self.ray is not None:  # beam-grid / rendered: one return per ray
            per_ray[rays] = values
        else:  # recorded returns may share a ray: the nearest wins
            order = np.argsort(-self.range_m(), kind="stable")
            order = order[rays[order] >= 0]
            per_ray[rays[order]] = values[order]
        return to_image(lidar.pattern, per_ray, fill)

    def return_mask(self, lidar: LidarSpec) -> np.ndarray:
        """(rows, cols) bool: True where the ray returned, False where it was dropped (or no ray)."""
        return self.ray_image(lidar, np.ones(self.num_returns, bool), False)

    def range_image(self, lidar: LidarSpec) -> np.ndarray:
        """(rows, cols) range in metres, 0 where dropped."""
        return self.ray_image(lidar, self.range_m().astype(np.float32), 0)
