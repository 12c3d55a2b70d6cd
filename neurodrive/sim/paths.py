"""Polylines parametrised by arc length: lanes, routes and actor paths."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Polyline:
    """An xy polyline (K >= 2 points, metres) with arc-length lookups."""

    points_m: np.ndarray  # (K, 2)

    def __post_init__(self) -> None:
        pts = np.asarray(self.points_m, float).reshape(-1, 2)
        keep = np.concatenate([[True], np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-6])
        pts = pts[keep]
        if len(pts) < 2:
            raise ValueError("a polyline needs at least two distinct points")
        object.__setattr__(self, "points_m", pts)

    @cached_property
    def cumulative_m(self) -> np.ndarray:
        """(K,) arc length at each point."""
        return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(self.points_m, axis=0), axis=1))])

    @property
    def length_m(self) -> float:
        return float(self.cumulative_m[-1])

    def extended(self, before_m: float, after_m: float) -> Polyline:
        """The polyline prolonged straight along its end directions."""
        p = self.points_m
        d0 = (p[1] - p[0]) / np.linalg.norm(p[1] - p[0])
        d1 = (p[-1] - p[-2]) / np.linalg.norm(p[-1] - p[-2])
        return Polyline(np.vstack([p[0] - d0 * before_m, p, p[-1] + d1 * after_m]))

    def position(self, s_m: np.ndarray | float) -> np.ndarray:
        """xy (..., 2) at arc length(s) s (clamped to the polyline)."""
        s = np.clip(np.asarray(s_m, float), 0.0, self.length_m)
        x = np.interp(s, self.cumulative_m, self.points_m[:, 0])
        y = np.interp(s, self.cumulative_m, self.points_m[:, 1])
        return np.stack([x, y], axis=-1)

    def heading(self, s_m: np.ndarray | float) -> np.ndarray:
        """Heading (rad) of the segment at arc length(s) s."""
        seg = np.clip(
            np.searchsorted(self.cumulative_m, np.asarray(s_m, float), side="right") - 1, 0, len(self.points_m) - 2
        )
        d = self.points_m[seg + 1] - self.points_m[seg]
        return np.arctan2(d[..., 1], d[..., 0])

    def project(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Arc length s and signed lateral offset (m, left positive) of points (..., 2)."""
        xy = np.asarray(xy, float)
        flat = xy.reshape(-1, 2)
        a, b = self.points_m[:-1], self.points_m[1:]
        ab = b - a
        seg_len_sq = np.sum(ab * ab, axis=1)
        rel = flat[:, None, :] - a[None]
        u = np.clip(np.sum(rel * ab[None], axis=2) / seg_len_sq[None], 0.0, 1.0)  # (n, K-1)
        closest = a[None] + u[..., None] * ab[None]
        dist = np.linalg.norm(flat[:, None, :] - closest, axis=2)
        k = np.argmin(dist, axis=1)
        rows = np.arange(len(flat))
        s = self.cumulative_m[k] + u[rows, k] * np.sqrt(seg_len_sq[k])
        cross = ab[k, 0] * rel[rows, k, 1] - ab[k, 1] * rel[rows, k, 0]
        lateral = np.sign(cross) * dist[rows, k]
        return s.reshape(xy.shape[:-1]), lateral.reshape(xy.shape[:-1])
