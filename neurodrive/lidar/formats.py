"""LiDAR sweeps as fixed-shape arrays for learning: a range image (the sensor's ray pattern) or a
fixed number of points (any sensor)."""

from __future__ import annotations

import numpy as np

from neurodrive.lidar.sensor import LidarSpec, LidarSweep


def range_intensity_image(sweep: LidarSweep, lidar: LidarSpec) -> np.ndarray:
    """(2, rows, cols) float32 in the sensor's range image (``lidar.pattern.image_shape``; beams x
    azimuth bins for a beam grid): range (m, 0 = no return, capped at the max range) and intensity."""
    ranges = np.minimum(sweep.range_m(), lidar.max_range_m).astype(np.float32)
    intensity = np.clip(sweep.intensity, 0.0, 1.0).astype(np.float32)
    return np.stack([sweep.ray_image(lidar, ranges), sweep.ray_image(lidar, intensity)])


def fixed_points(sweep: LidarSweep, lidar: LidarSpec, count: int) -> np.ndarray:
    """(count, 4) float32 x, y, z (ego frame, m) and intensity of up to ``count`` returns picked evenly
    over the sweep (deterministic); zero rows when the sweep has fewer."""
    pts = np.zeros((count, 4), np.float32)
    T = lidar.T_ego_lidar
    xyz = sweep.xyz_m @ T[:3, :3].T.astype(np.float32) + T[:3, 3].astype(np.float32)
    if len(xyz):
        pick = np.linspace(0, len(xyz) - 1, min(count, len(xyz))).astype(int)
        r = np.float32(lidar.max_range_m)
        pts[: len(pick), :3] = np.clip(xyz[pick], -r, r)
        pts[: len(pick), 3] = np.clip(sweep.intensity[pick], 0, 1)
    return pts
