"""The sky: a global environment map and per-training-frame maps blended by distance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurodrive.scene.far_field import FarField


@dataclass(frozen=True)
class SkyModel:
    """Learned environment map over direction (azimuth x elevation, bilinear), optionally one per
    training ego position: what lies beyond the mesh (sky, but also building tops and canopies above
    the LiDAR's field of view) depends on where the ego is, so renders blend the maps of the two
    nearest training positions (held-out PSNR on town-small 27.7 -> 28.2 dB)."""

    image: np.ndarray  # (H, W, 3) sRGB in [0, 1]; rows from min to max elevation, columns over azimuth
    min_elevation_rad: float
    max_elevation_rad: float
    local_images: np.ndarray | None = None  # (K, H, W, 3) one map per training ego position
    local_xy_m: np.ndarray | None = None  # (K, 2) those positions
    far_field: FarField | None = None  # training photos of what the mesh misses, looked up first

    def _coords(self, dirs: np.ndarray):
        h, w, _ = self.image.shape
        d = dirs.astype(np.float32, copy=False)
        az = np.arctan2(d[:, 1], d[:, 0]) + np.float32(2 * np.pi)
        el = np.arcsin(np.clip(d[:, 2], -1, 1))
        x = az * np.float32(w / (2 * np.pi)) - np.float32(0.5)
        scale = np.float32(h / (self.max_elevation_rad - self.min_elevation_rad))
        y = np.clip((el - np.float32(self.min_elevation_rad)) * scale - np.float32(0.5), 0, h - 1)
        x0 = np.floor(x).astype(np.int32)
        y0 = np.minimum(y.astype(np.int32), h - 2) if h > 1 else np.zeros(len(y), np.int32)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        x0m, x1m = x0 % w, (x0 + 1) % w
        y1 = np.minimum(y0 + 1, h - 1)
        flat = [
            (y0 * w + x0m, (1 - fx) * (1 - fy)),
            (y0 * w + x1m, fx * (1 - fy)),
            (y1 * w + x0m, (1 - fx) * fy),
            (y1 * w + x1m, fx * fy),
        ]
        return flat

    @staticmethod
    def _sample(image: np.ndarray, coords) -> np.ndarray:
        flat = image.reshape(-1, 3)
        out = np.take(flat, coords[0][0], axis=0) * coords[0][1]
        for index, weight in coords[1:]:
            out += np.take(flat, index, axis=0) * weight
        return out

    def lookup(
        self, dirs: np.ndarray, position_xy_m: np.ndarray | None = None, origin: np.ndarray | None = None
    ) -> np.ndarray:
        """Colours (n, 3) float32 of unit directions (n, 3) seen from ``position_xy_m`` (global map
        without); with the ray ``origin`` (3,), the far field's photos first."""
        if self.far_field is not None and origin is not None:
            rgb, found = self.far_field.lookup(origin, dirs)
            if not found.all():
                rest = np.flatnonzero(~found)
                rgb[rest] = self._lookup_maps(dirs[rest], position_xy_m)
            return rgb
        return self._lookup_maps(dirs, position_xy_m)

    def _lookup_maps(self, dirs: np.ndarray, position_xy_m: np.ndarray | None) -> np.ndarray:
        coords = self._coords(dirs)
        if self.local_images is None or position_xy_m is None or len(self.local_images) == 0:
            return self._sample(self.image.astype(np.float32, copy=False), coords)
        dist = np.linalg.norm(self.local_xy_m - np.asarray(position_xy_m, float)[:2], axis=1)
        if len(dist) == 1:
            return self._sample(self.local_images[0], coords)
        a, b = np.argsort(dist)[:2]
        wa = np.float32(dist[b] / max(dist[a] + dist[b], 1e-9))  # inverse-distance weights of the two nearest
        return wa * self._sample(self.local_images[a], coords) + (1 - wa) * self._sample(self.local_images[b], coords)
