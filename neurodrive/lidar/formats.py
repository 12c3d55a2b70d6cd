"""LiDAR sweeps as fixed-shape arrays for learning: a range image (sensors with a beam grid) or a
fixed number of points (any sensor)."""

from __future__ import annotations

import numpy as np

from neurodrive.logs.model import LidarSpec, LidarSweep


def range_intensity_image(sweep: LidarSweep, lidar: LidarSpec) -> np.ndarray:
    """(2, beams, azimuths) float32: range (m, 0 = no return, capped at the max range) and intensity."""
    img = np.zeros((2, lidar.num_beams, lidar.azimuth_bins), np.float32)
    img[0, sweep.beam, sweep.azimuth_index] = np.minimum(sweep.range_m(), lidar.max_range_m)
    img[1, sweep.beam, sweep.azimuth_index] = np.clip(sweep.intensity, 0.0, 1.0)
    return img


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
