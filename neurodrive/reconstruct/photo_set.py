"""The training photos a scene keeps for image-based rendering (``scene/photos.py``): the log's own
encoded image bytes of every training frame, never a held-out one."""

from __future__ import annotations

import numpy as np

from neurodrive.logs.io import image_path
from neurodrive.logs.model import DrivingLog
from neurodrive.scene.decoder import AppearanceDecoder
from neurodrive.scene.photos import PhotoSet


def training_photos(log: DrivingLog, frames: list[int], decoder: AppearanceDecoder, actor_ids: list[str]) -> PhotoSet:
    """Every image of ``frames`` (the training frames) with its camera pose, intrinsics, fitted
    exposure and the poses of ``actor_ids`` at that frame (NaN where an actor is absent)."""
    cameras, frame_of, sizes, poses, intrinsics, distortion, exposure, actor_poses, encoded = ([] for _ in range(9))
    for f in frames:
        at_frame = log.actor_poses_at(f)
        for cam in log.rig.cameras:
            if not log.has_image(cam.name, f):
                continue
            cameras.append(cam.name)
            frame_of.append(f)
            sizes.append((cam.width_px, cam.height_px))
            poses.append(log.T_world_camera(cam.name, f))
            intrinsics.append(np.asarray(cam.intrinsics, float))
            distortion.append(np.zeros(5) if cam.distortion is None else np.asarray(cam.distortion, float))
            exposure.append(decoder.exposure_at(cam.name, f).astype(np.float64))
            actor_poses.append([at_frame.get(a, np.full((4, 4), np.nan)) for a in actor_ids])
            encoded.append(image_path(log.root, cam.name, f).read_bytes())
    count = len(cameras)
    return PhotoSet(
        tuple(cameras),
        np.array(frame_of, np.int64),
        np.array(sizes, np.int64).reshape(count, 2),
        np.array(poses, float).reshape(count, 4, 4),
        np.array(intrinsics, float).reshape(count, 3, 3),
        np.array(distortion, float).reshape(count, 5),
        np.array(exposure, float).reshape(count, 3, 4),
        tuple(actor_ids),
        np.array(actor_poses, float).reshape(count, len(actor_ids), 4, 4),
        tuple(encoded),
    )
