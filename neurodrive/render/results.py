"""What rendering returns: camera images, LiDAR sweeps, the realism confidence of a frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurodrive.geometry import wrap_angle
from neurodrive.lidar.sensor import LidarSweep
from neurodrive.scene.meta import SceneMeta

NO_ACTOR = -1


@dataclass(frozen=True)
class CameraRender:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth_m: np.ndarray  # (H, W) float32 z-depth, inf where the sky is seen
    instance: np.ndarray  # (H, W) int32 index into the rendered actor ids, NO_ACTOR elsewhere
    actor_ids: tuple[str, ...]
    unseen_share: float = 0.0  # share of pixels on surfaces no training pixel saw (filled in)


@dataclass(frozen=True)
class RealismConfidence:
    """How far a render is extrapolated from the log it was reconstructed from."""

    distance_to_training_m: float  # ego position to the nearest training ego position
    heading_difference_rad: float  # to that training pose
    unseen_pixel_share: float  # over all cameras: pixels on surfaces never seen in training
    score: float  # in [0, 1]; 1: a training view, falls with distance, turn and unseen surface

    @staticmethod
    def assess(meta: SceneMeta, T_world_ego: np.ndarray, unseen_share: float) -> RealismConfidence:
        poses = np.asarray(meta.training_ego_xy_yaw, float).reshape(-1, 3)
        if len(poses) == 0:
            dist, turn = float("nan"), float("nan")
            score = 1.0 - unseen_share
        else:
            d = np.linalg.norm(poses[:, :2] - T_world_ego[:2, 3], axis=1)
            k = int(np.argmin(d))
            yaw = np.arctan2(T_world_ego[1, 0], T_world_ego[0, 0])
            dist = float(d[k])
            turn = float(abs(wrap_angle(yaw - poses[k, 2])))
            score = float(np.exp(-dist / 4.0) * np.exp(-turn / 0.6) * (1.0 - unseen_share))
        return RealismConfidence(dist, turn, float(unseen_share), score)


@dataclass(frozen=True)
class FrameRender:
    """All sensors rendered from one placement of the scene (one instant)."""

    cameras: dict[str, CameraRender]
    lidars: dict[str, LidarRender]  # by LiDAR name, in rig order
    confidence: RealismConfidence

    @property
    def lidar(self) -> LidarRender | None:
        """The primary (first) LiDAR's sweep, None without LiDAR."""
        return next(iter(self.lidars.values()), None)


@dataclass(frozen=True)
class LidarRender:
    sweep: LidarSweep
    instance: np.ndarray  # (M,) int32 actor index of each return, NO_ACTOR for background
    actor_ids: tuple[str, ...]
    return_probability: np.ndarray  # (B, W) predicted probability that each ray returns
