"""Which rays a LiDAR fires in one sweep, and where each lands in the sensor's range image.

Everything that casts, fits or formats LiDAR rays reads a :class:`RayPattern` instead of a beam
count and an azimuth bin count: the renderer casts ``directions()``, the ray-drop features look at
neighbours in the range image (rays placed by ``cells()``), a logged sweep says which ray each
return came from (``rays_of``), and a rendered sweep is written back in the log's own indexing
(``sweep_from_rays``). :class:`BeamGrid` is the spinning LiDAR with one elevation per beam and
evenly spaced azimuth bins; a sensor without such a grid (a measured per-ray pattern, e.g. lasers
with individual azimuth offsets) implements the same five members, placing its rays in an image of
its own choosing (one ray per cell).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from neurodrive.logs.model import LidarSweep


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
        return sweep.beam.astype(np.int64) * self.azimuth_bins + sweep.azimuth_index

    def sweep_from_rays(self, rays: np.ndarray, xyz_m: np.ndarray, intensity: np.ndarray) -> LidarSweep:
        from neurodrive.logs.model import LidarSweep

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
