"""The files ``neurodrive render`` writes: per camera PNG, 16-bit depth, actor masks; each LiDAR's sweep
as .npz and .ply (``lidar`` the primary LiDAR, ``lidar_<name>`` the others); the realism confidence."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_render(stage: Path, result, frame: int, lane_shift: float, actor_ids) -> None:
    """Files of ``neurodrive render``: per camera PNG, 16-bit depth (mm), actor masks; LiDAR .npz / .ply
    per LiDAR; the realism confidence."""
    from neurodrive.io_utils import atomic_write_bytes, atomic_write_json, atomic_write_npz
    from neurodrive.logs.writer import encode_png

    for name, img in result.cameras.items():
        atomic_write_bytes(stage / f"{name}.png", encode_png(img.rgb))
        depth_mm = np.where(np.isfinite(img.depth_m), np.clip(img.depth_m * 1000, 0, 65535), 0).astype(np.uint16)
        atomic_write_bytes(stage / f"{name}_depth_mm.png", encode_png(depth_mm))
        atomic_write_npz(
            stage / f"{name}_instance.npz", instance=img.instance, actor_ids=np.array(img.actor_ids, dtype=str)
        )
    for k, (name, lidar) in enumerate(result.lidars.items()):
        stem = "lidar" if k == 0 else f"lidar_{name}"  # the primary LiDAR, then the others by name
        sweep = lidar.sweep
        atomic_write_npz(
            stage / f"{stem}.npz",
            xyz_m=sweep.xyz_m,
            intensity=sweep.intensity,
            beam=sweep.beam,
            azimuth_index=sweep.azimuth_index,
            instance=lidar.instance,
        )
        write_lidar_ply(stage / f"{stem}.ply", sweep.xyz_m, sweep.intensity)
    c = result.confidence
    atomic_write_json(
        stage / "confidence.json",
        {
            "distance_to_training_m": c.distance_to_training_m,
            "heading_difference_rad": c.heading_difference_rad,
            "unseen_pixel_share": c.unseen_pixel_share,
            "score": c.score,
            "frame": frame,
            "lane_shift_m": lane_shift,
            "actors": list(actor_ids),
        },
    )


def write_lidar_ply(path: Path, xyz: np.ndarray, intensity: np.ndarray) -> None:
    """Binary little-endian PLY with x, y, z, intensity (float32)."""
    from neurodrive.io_utils import atomic_write_bytes

    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(xyz)}\n"
        "property float x\nproperty float y\nproperty float z\nproperty float intensity\nend_header\n"
    )
    body = np.concatenate([xyz.astype("<f4"), intensity.astype("<f4")[:, None]], axis=1).tobytes()
    atomic_write_bytes(path, header.encode("ascii") + body)
