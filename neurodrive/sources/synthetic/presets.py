"""Presets of the procedural town generator."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class TownConfig:
    name: str
    seed: int = 0
    # timing
    num_frames: int = 50
    frame_rate_hz: float = 10.0
    # town layout
    extent_x_m: tuple[float, float] = (-130.0, 200.0)
    extent_y_m: tuple[float, float] = (-90.0, 90.0)
    cross_roads_x_m: tuple[float, ...] = (22.0, 130.0)
    # traffic
    ego_start_x_m: float = -12.0
    ego_speed_mps: float = 8.5
    num_moving_cars: int = 5
    num_parked_cars: int = 10
    num_pedestrians: int = 3
    track_range_m: float = 80.0  # actors are tracked (valid) within this distance of the ego
    # cameras
    image_width_px: int = 480
    image_height_px: int = 270
    camera_hfov_deg: float = 75.0
    side_camera_yaw_deg: float = 60.0
    supersample: int = 2  # rays per pixel side (anti-aliasing)
    image_noise_std: float = 0.004  # sRGB units in [0, 1]
    camera_gains: tuple[float, float, float] = (1.0, 0.93, 1.07)  # front, front_left, front_right
    # LiDAR
    lidar_beams: int = 64
    lidar_azimuth_bins: int = 1024
    lidar_top_elevation_deg: float = 15.0  # a Pandar64-like vertical field of view
    lidar_bottom_elevation_deg: float = -25.0
    lidar_max_range_m: float = 100.0
    lidar_range_noise_m: float = 0.01
    lidar_intensity_noise: float = 0.01


PRESETS: dict[str, TownConfig] = {
    "town-small": TownConfig(name="town-small"),
    # a few frames at low resolution for tests and quick checks
    "tiny": TownConfig(
        name="tiny",
        num_frames=8,
        extent_x_m=(-60.0, 80.0),
        extent_y_m=(-50.0, 50.0),
        cross_roads_x_m=(22.0,),
        num_moving_cars=3,
        num_parked_cars=4,
        num_pedestrians=1,
        image_width_px=160,
        image_height_px=90,
        supersample=1,
        lidar_beams=32,
        lidar_azimuth_bins=512,
    ),
}


def get_preset(name: str, seed: int | None = None, num_frames: int | None = None) -> TownConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
    cfg = PRESETS[name]
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    if num_frames is not None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be positive, got {num_frames}")
        cfg = replace(cfg, num_frames=num_frames)
    return cfg
