"""Write a synthetic driving log from the procedural town (``neurodrive generate``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from neurodrive.geometry import make_pose
from neurodrive.io_utils import staged_directory
from neurodrive.lidar.sensor import LidarSpec
from neurodrive.logs.model import ActorTrack, CameraSpec, SensorRig
from neurodrive.logs.writer import LogTiming, LogWriter
from neurodrive.sources.synthetic.presets import TownConfig
from neurodrive.sources.synthetic.raycaster import WorldRenderer
from neurodrive.sources.synthetic.town import Town, build_town, ego_poses

GROUND_TRUTH_DIR = "ground_truth"
CAMERA_MOUNT_M = [1.6, 0.0, 1.55]
LIDAR_MOUNT_M = [1.2, 0.0, 1.9]


def make_rig(cfg: TownConfig) -> SensorRig:
    """Three forward cameras (front, front_left, front_right) and a spinning LiDAR on the roof."""
    yaw = np.deg2rad(cfg.side_camera_yaw_deg)
    cams = tuple(
        CameraSpec.looking(
            name, cfg.image_width_px, cfg.image_height_px, np.deg2rad(cfg.camera_hfov_deg), CAMERA_MOUNT_M, y, 0.04
        )
        for name, y in (("front", 0.0), ("front_left", yaw), ("front_right", -yaw))
    )
    lidar = LidarSpec(
        name="top",
        T_ego_lidar=make_pose(LIDAR_MOUNT_M),
        beam_elevations_rad=np.deg2rad(
            np.linspace(cfg.lidar_top_elevation_deg, cfg.lidar_bottom_elevation_deg, cfg.lidar_beams)
        ),
        azimuth_bins=cfg.lidar_azimuth_bins,
        min_range_m=1.0,
        max_range_m=cfg.lidar_max_range_m,
        rotation_rate_hz=cfg.frame_rate_hz,
    )
    return SensorRig(cams, (lidar,))


def actor_tracks(town: Town, timestamps_s: np.ndarray, ego: np.ndarray, track_range_m: float) -> tuple[ActorTrack, ...]:
    """Exact boxes of every actor that comes within ``track_range_m`` of the ego at some frame."""
    tracks = []
    for actor in town.actors:
        poses = np.stack([actor.pose_at(t) for t in timestamps_s])
        dist = np.linalg.norm(poses[:, :2, 3] - ego[:, :2, 3], axis=1)
        valid = dist <= track_range_m
        if valid.any():
            tracks.append(ActorTrack(actor.actor_id, actor.category, actor.size_m.copy(), poses, valid))
    return tuple(tracks)


def generate_log(
    cfg: TownConfig,
    out: str | Path,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render ``cfg.num_frames`` frames of the town into a log folder at ``out``.

    The folder appears only when complete; it also holds ``ground_truth/`` (the world).
    """
    out = Path(out)
    town = build_town(cfg)
    rig = make_rig(cfg)
    timestamps = np.arange(cfg.num_frames) / cfg.frame_rate_hz
    ego = ego_poses(cfg, timestamps, town.ego_lane_y_m)
    tracks = actor_tracks(town, timestamps, ego, cfg.track_range_m)
    renderer = WorldRenderer(town.world)
    seeds = np.random.SeedSequence(cfg.seed).spawn(cfg.num_frames)
    with staged_directory(out, overwrite=overwrite) as staging:
        writer = LogWriter(staging)
        for frame, t in enumerate(timestamps):
            rng = np.random.default_rng(seeds[frame])
            scene = renderer.scene({a.actor_id: a.pose_at(t) for a in town.actors})
            for cam, gain in zip(rig.cameras, cfg.camera_gains):
                image = renderer.render_camera(scene, cam, ego[frame], cfg.supersample, gain, cfg.image_noise_std, rng)
                writer.write_image(cam.name, frame, image.rgb)
            lidar = renderer.render_lidar(
                scene, rig.lidar, ego[frame], rng, cfg.lidar_range_noise_m, cfg.lidar_intensity_noise
            )
            writer.write_lidar(frame, lidar.sweep, rig.lidar.name)
            if progress:
                progress(frame + 1, cfg.num_frames)
        writer.write_metadata(
            name=cfg.name,
            rig=rig,
            timestamps_s=timestamps,
            ego_poses=ego,
            tracks=tracks,
            road_map=town.road_map,
            frame_rate_hz=cfg.frame_rate_hz,
            timing=LogTiming(pose_source={"kind": "measured", "method": "simulation (exact)"}),
            metadata={
                "generator": "neurodrive.town",
                "preset": cfg.name,
                "seed": cfg.seed,
                "camera_gains": {c.name: g for c, g in zip(rig.cameras, cfg.camera_gains)},
            },
        )
        town.world.save(staging / GROUND_TRUTH_DIR)
    return out
