"""Video / viewer frames: the cameras as a driver sees them, labelled, beside the bird's-eye view."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from neurodrive.sim.simulator import Observation, Simulator
from neurodrive.viz.bev import BevStyle, bird_eye_view


def driver_order(names_and_poses: list[tuple[str, np.ndarray]]) -> list[str]:
    """Camera names ordered as a driver sees them: left to right by the azimuth of the optical axis
    (T_ego_camera's z axis) in the ego frame (x forward, y left)."""

    def azimuth(T: np.ndarray) -> float:
        return math.atan2(T[1, 2], T[0, 2])

    return [n for n, _ in sorted(names_and_poses, key=lambda item: -azimuth(item[1]))]


def compose_frame(
    sim: Simulator, observation: Observation, height_px: int = 360, selected: str | None = None
) -> np.ndarray:
    """Camera images side by side as a driver sees them (left | front | right, each labelled), then
    the bird's-eye view (the last ``height_px`` columns), with a status line."""
    panels, labels = [], []
    if observation.sensors is not None:
        rig = {c.name: c for c in sim.rig.cameras} if sim.rig is not None else {}
        cams = observation.sensors.cameras
        order = driver_order([(n, rig[n].T_ego_camera) for n in cams if n in rig]) + [n for n in cams if n not in rig]
        for name in order:
            im = Image.fromarray(cams[name].rgb)
            panels.append(
                np.asarray(
                    im.resize((max(1, round(im.width * height_px / im.height)), height_px), Image.Resampling.BILINEAR)
                )
            )
            labels.append(name)
    panels.append(bird_eye_view(sim, observation, BevStyle(size_px=height_px), selected))
    labels.append("bird's-eye view (LiDAR)")
    lefts = np.cumsum([0] + [p.shape[1] for p in panels])
    frame = np.concatenate(panels, axis=1)
    cut = frame.shape[1] % 2
    frame = frame[:, cut:]  # even width for the H.264 encoder (the bird view stays last)
    img = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(img)
    for left, label in zip(lefts[:-1], labels):
        x = max(int(left) - cut, 0) + 6
        draw.rectangle((x - 3, height_px - 18, x + 7 * len(label), height_px - 3), fill=(0, 0, 0))
        draw.text((x, height_px - 16), label, fill=(255, 255, 255))
    draw.text(
        (6, 4),
        f"t={observation.time_s:4.1f}s  v={observation.ego.speed_mps:4.1f} m/s  "
        f"collisions={len(sim.record.collisions)}",
        fill=(255, 255, 255),
    )
    return np.asarray(img)
