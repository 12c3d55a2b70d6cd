"""Which rays a LiDAR fires in one sweep, and where each lands in the sensor's range image.

Everything that casts, fits or formats LiDAR rays reads a :class:`RayPattern` instead of a beam
count and an azimuth bin count: the renderer casts ``directions()``, the ray-drop features look at
neighbours in the range image (rays placed by ``cells()``), a logged sweep says which ray each
return came from (``rays_of``), and a rendered sweep is written back in the log's own indexing
(``sweep_from_rays``). :class:`BeamGrid` is the spinning LiDAR with one elevation per beam and
evenly spaced azimuth bins (the synthetic sensor). :class:`MeasuredPattern` is a real sensor's
pattern measured from its own returns (``measure_pattern``): rows from a ring / laser index where
the data has one, else elevation bins; columns are azimuth bins; each (row, column) cell that the
sensor hit becomes one ray along the mean direction of the returns that fell in it. Returns of a
real sweep are not forced onto the pattern: several may share a ray (range images keep the
nearest), and ``rays_of`` gives -1 for a return outside every ray's cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from neurodrive.lidar.sensor import LidarSweep


class RayPattern(Protocol):
    @property
    def image_shape(self) -> tuple[int, int]:
        """(rows, cols) of the range image the rays are placed in."""

    @property
    def is_full_grid(self) -> bool:
        """True when ray n fills cell n of the image (every cell has a ray, row-major)."""

    def directions(self) -> np.ndarray:
        """(N, 3) unit ray directions in the LiDAR frame (x forward, y left, z up)."""

    def cells(self) -> np.ndarray:
        """(N,) flat (row-major) image cell of each ray; no two rays share a cell."""

    def rays_of(self, sweep: LidarSweep) -> np.ndarray:
        """(M,) index of the ray each return of ``sweep`` came from."""

    def sweep_from_rays(self, rays: np.ndarray, xyz_m: np.ndarray, intensity: np.ndarray) -> LidarSweep:
        """A sweep of returns from rays ``rays`` (M,) at points ``xyz_m`` (M, 3) (LiDAR frame)."""


@dataclass(frozen=True)
class BeamGrid:
    """A spinning LiDAR firing every (beam, azimuth bin) once: beam b at elevation
    ``elevations_rad[b]``, bin a at azimuth ``2*pi*a/azimuth_bins`` counter-clockwise from +x.
    Ray index = beam * azimuth_bins + bin = its image cell."""

    elevations_rad: np.ndarray  # (B,)
    azimuth_bins: int  # W
    _directions: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        el = np.asarray(self.elevations_rad, float)[:, None]
        az = (2.0 * np.pi * np.arange(self.azimuth_bins) / self.azimuth_bins)[None, :]
        dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el) * np.ones_like(az)], axis=-1)
        dirs = dirs.reshape(-1, 3)
        dirs.flags.writeable = False
        object.__setattr__(self, "_directions", dirs)

    @property
    def image_shape(self) -> tuple[int, int]:
        return int(len(self.elevations_rad)), int(self.azimuth_bins)

    @property
    def is_full_grid(self) -> bool:
        return True

    def directions(self) -> np.ndarray:
        return self._directions

    def cells(self) -> np.ndarray:
        return np.arange(len(self._directions))

    def rays_of(self, sweep: LidarSweep) -> np.ndarray:
        if sweep.beam is None or sweep.azimuth_index is None:
            raise ValueError("a beam-grid LiDAR needs each return's beam and azimuth_index")
        return sweep.beam.astype(np.int64) * self.azimuth_bins + sweep.azimuth_index

    def sweep_from_rays(self, rays: np.ndarray, xyz_m: np.ndarray, intensity: np.ndarray) -> LidarSweep:
        from neurodrive.lidar.sensor import LidarSweep

        beam, az = np.divmod(np.asarray(rays, np.int64), self.azimuth_bins)
        return LidarSweep(
            np.asarray(xyz_m, np.float32),
            np.asarray(intensity, np.float32),
            beam.astype(np.int16),
            az.astype(np.int32),
        )


def to_image(pattern: RayPattern, values: np.ndarray, fill: float) -> np.ndarray:
    """(rows, cols) image of per-ray ``values`` (N,), ``fill`` where no ray lands; the dtype of ``values``."""
    rows, cols = pattern.image_shape
    img = np.full(rows * cols, fill, dtype=np.asarray(values).dtype)
    img[pattern.cells()] = values
    return img.reshape(rows, cols)


def from_image(pattern: RayPattern, image: np.ndarray) -> np.ndarray:
    """(N,) per-ray values of an image (inverse of :func:`to_image`)."""
    return image.reshape(-1)[pattern.cells()]


def azimuth_rad(xyz: np.ndarray) -> np.ndarray:
    """Azimuth in [0, 2*pi) counter-clockwise from +x of points or directions (..., 3)."""
    return np.mod(np.arctan2(xyz[..., 1], xyz[..., 0]), 2.0 * np.pi)


def elevation_rad(xyz: np.ndarray) -> np.ndarray:
    """Elevation above the xy-plane of points or directions (..., 3)."""
    return np.arctan2(xyz[..., 2], np.hypot(xyz[..., 0], xyz[..., 1]))


@dataclass(frozen=True)
class MeasuredPattern:
    """A LiDAR's rays measured from its returns (see the module docstring).

    Row of a return: ``ring_to_row[ring]`` when ``rows_from_ring`` (a ring / laser index stored
    with each return), else the elevation bin of ``elevation_edges_rad`` (descending: row 0 is the
    highest); column: ``floor(azimuth / (2*pi) * cols)``. Ray r points along ``ray_directions[r]``
    and sits in cell ``ray_cells[r]`` (row * cols + col)."""

    ray_directions: np.ndarray  # (N, 3) unit, LiDAR frame
    ray_cells: np.ndarray  # (N,) int64, distinct
    rows: int
    cols: int
    rows_from_ring: bool
    ring_to_row: np.ndarray  # (K,) int64 row of each ring id (-1: unknown); empty unless rows_from_ring
    elevation_edges_rad: np.ndarray  # (rows + 1,) descending; empty when rows_from_ring
    _cell_to_ray: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lookup = np.full(self.rows * self.cols, -1, np.int64)
        lookup[np.asarray(self.ray_cells, np.int64)] = np.arange(len(self.ray_cells))
        object.__setattr__(self, "_cell_to_ray", lookup)

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.rows, self.cols

    @property
    def is_full_grid(self) -> bool:
        return False

    def directions(self) -> np.ndarray:
        return self.ray_directions

    def cells(self) -> np.ndarray:
        return self.ray_cells

    def cells_of_points(self, xyz: np.ndarray, ring: np.ndarray | None) -> np.ndarray:
        """(M,) flat cell of each point (LiDAR frame), -1 outside the image."""
        if self.rows_from_ring:
            if ring is None:
                raise ValueError("this LiDAR's pattern is indexed by ring: the sweep needs its ring field")
            ring = np.asarray(ring, np.int64)
            ok = (ring >= 0) & (ring < len(self.ring_to_row))
            row = np.where(ok, self.ring_to_row[np.clip(ring, 0, max(len(self.ring_to_row) - 1, 0))], -1)
        else:
            edges = self.elevation_edges_rad
            row = np.searchsorted(-edges, -elevation_rad(xyz), side="right") - 1
            row[(row < 0) | (row >= self.rows)] = -1
        col = np.minimum((azimuth_rad(xyz) / (2.0 * np.pi) * self.cols).astype(np.int64), self.cols - 1)
        return np.where(row >= 0, row * self.cols + col, -1)

    def rays_of(self, sweep: LidarSweep) -> np.ndarray:
        if sweep.ray is not None:
            return sweep.ray.astype(np.int64)
        cells = self.cells_of_points(sweep.xyz_m, sweep.ring)
        return np.where(cells >= 0, self._cell_to_ray[np.maximum(cells, 0)], -1)

    def sweep_from_rays(self, rays: np.ndarray, xyz_m: np.ndarray, intensity: np.ndarray) -> LidarSweep:
        from neurodrive.lidar.sensor import LidarSweep

        return LidarSweep(
            np.asarray(xyz_m, np.float32), np.asarray(intensity, np.float32), ray=np.asarray(rays, np.int64)
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays that store this pattern (``from_arrays`` reads them back)."""
        return {
            "ray_directions": self.ray_directions.astype(np.float32),
            "ray_cells": self.ray_cells.astype(np.int64),
            "image_shape": np.array([self.rows, self.cols], np.int64),
            "rows_from_ring": np.array(self.rows_from_ring),
            "ring_to_row": self.ring_to_row.astype(np.int64),
            "elevation_edges_rad": self.elevation_edges_rad.astype(np.float64),
        }

    @staticmethod
    def from_arrays(arrays: dict[str, np.ndarray]) -> MeasuredPattern:
        dirs = np.asarray(arrays["ray_directions"], np.float64)
        dirs = dirs / np.maximum(np.linalg.norm(dirs, axis=1, keepdims=True), 1e-12)
        rows, cols = (int(v) for v in arrays["image_shape"])
        return MeasuredPattern(
            dirs,
            np.asarray(arrays["ray_cells"], np.int64),
            rows,
            cols,
            bool(arrays["rows_from_ring"]),
            np.asarray(arrays["ring_to_row"], np.int64),
            np.asarray(arrays["elevation_edges_rad"], np.float64),
        )


@dataclass(frozen=True)
class PatternReport:
    """How a measured pattern was derived and how well the returns fit it."""

    rows_from: str  # "ring index", "laser number", "scan order", "elevation bins"
    rays: int
    image_shape: tuple[int, int]
    shared_ray_fraction: float  # returns that share their ray with a nearer return of the same sweep
    outside_fraction: float  # returns that fall in no ray's cell

    def as_dict(self) -> dict:
        return {
            "rows_from": self.rows_from,
            "rays": self.rays,
            "image_shape": list(self.image_shape),
            "shared_ray_fraction": round(self.shared_ray_fraction, 5),
            "outside_fraction": round(self.outside_fraction, 5),
        }


def measure_pattern(
    sweeps: list[tuple[np.ndarray, np.ndarray | None]],
    rows_from: str,
    cols: int | None = None,
    elevation_bin_rad: float = np.deg2rad(0.2),
) -> tuple[MeasuredPattern, PatternReport]:
    """The pattern of a LiDAR from some of its sweeps: (xyz (M, 3) in the LiDAR frame, ring (M,) or
    None) each. ``rows_from`` names where rows come from (any name with a ring, else elevation
    bins of ``elevation_bin_rad``); ``cols`` defaults to the median returns per row and sweep."""
    xyz = np.concatenate([s[0] for s in sweeps]).astype(np.float64)
    keep = np.linalg.norm(xyz, axis=1) > 1e-6
    use_ring = all(s[1] is not None for s in sweeps)
    rings = np.concatenate([np.asarray(s[1]) for s in sweeps]).astype(np.int64)[keep] if use_ring else None
    xyz = xyz[keep]
    el = elevation_rad(xyz)
    if rings is not None:
        ids = np.unique(rings)
        med = np.array([np.median(el[rings == r]) for r in ids])
        order = ids[np.argsort(-med)]
        ring_to_row = np.full(int(ids.max()) + 1, -1, np.int64)
        ring_to_row[order] = np.arange(len(order))
        rows, edges = len(order), np.zeros(0)
        row = ring_to_row[rings]
    else:
        hi, lo = np.percentile(el, 99.95) + 1e-6, np.percentile(el, 0.05) - 1e-6
        rows = max(1, int(np.ceil((hi - lo) / elevation_bin_rad)))
        edges = hi - np.arange(rows + 1) * (hi - lo) / rows
        ring_to_row = np.zeros(0, np.int64)
        row = np.clip(np.searchsorted(-edges, -el, side="right") - 1, -1, rows)
        row[row >= rows] = -1
    if cols is None:
        per_row = np.bincount(row[row >= 0], minlength=rows) / len(sweeps)
        cols = int(max(8, np.median(per_row[per_row > 0])))
    col = np.minimum((azimuth_rad(xyz) / (2.0 * np.pi) * cols).astype(np.int64), cols - 1)
    cell = np.where(row >= 0, row * cols + col, -1)
    inside = cell >= 0
    unit = xyz[inside] / np.linalg.norm(xyz[inside], axis=1, keepdims=True)
    ray_cells, inverse = np.unique(cell[inside], return_inverse=True)
    mean = np.zeros((len(ray_cells), 3))
    np.add.at(mean, inverse, unit)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    pattern = MeasuredPattern(mean, ray_cells, rows, cols, rings is not None, ring_to_row, edges)
    shared, outside, total = 0, 0, 0
    for s_xyz, s_ring in sweeps:
        c = pattern.cells_of_points(np.asarray(s_xyz, np.float64), s_ring)
        total += len(c)
        outside += int(np.sum(c < 0))
        shared += int(np.sum(c >= 0) - len(np.unique(c[c >= 0])))
    report = PatternReport(rows_from, len(ray_cells), (rows, cols), shared / max(total, 1), outside / max(total, 1))
    return pattern, report
