"""Checks of an imported log as a person would look at it: every camera with the LiDAR points
(coloured by depth) and the 3D boxes drawn on it, a bird's-eye view with boxes and the ego path
(``neurodrive info LOG --overlay DIR``), and the numbers behind them (``depth_edge_alignment``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from neurodrive.geometry import BOX_EDGES, box_corners, invert_pose, transform_points
from neurodrive.io_utils import atomic_write_bytes
from neurodrive.logs.model import DrivingLog
from neurodrive.logs.writer import encode_png


def lidar_world_points(log: DrivingLog, frame: int) -> np.ndarray:
    """(M, 3) world points of the sweeps (every LiDAR's) of the frame nearest in time to ``frame`` that
    has one (empty: none)."""
    frames = [f for f in range(log.num_frames) if log.lidars_at(f)]
    if not frames:
        return np.zeros((0, 3))
    f = min(frames, key=lambda k: abs(log.timestamps_s[k] - log.timestamps_s[frame]))
    return log.world_returns(f)[0]


def project_points(log: DrivingLog, camera: str, frame: int, world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions (K, 2) and depths (K,) of the world points visible in ``camera`` at ``frame``."""
    cam = log.rig.camera(camera)
    pts = transform_points(invert_pose(log.T_world_camera(camera, frame)), world)
    uv, inside = cam.project(pts)
    return uv[inside], pts[inside, 2]


def depth_colours(depth_m: np.ndarray, max_m: float = 60.0) -> np.ndarray:
    """(K, 3) uint8 colours: near red -> far blue."""
    t = np.clip(depth_m / max_m, 0, 1)[:, None]
    return (255 * ((1 - t) * np.array([1.0, 0.2, 0.1]) + t * np.array([0.1, 0.4, 1.0]))).astype(np.uint8)


def camera_overlay(log: DrivingLog, camera: str, frame: int, world: np.ndarray | None = None) -> np.ndarray:
    """The camera's image with LiDAR points (by depth; ``world`` (M, 3), default the frame's sweep)
    and the frame's 3D boxes drawn on it."""
    image = Image.fromarray(log.image(camera, frame))
    draw = ImageDraw.Draw(image)
    world = lidar_world_points(log, frame) if world is None else world
    uv, depth = project_points(log, camera, frame, world)
    for (u, v), c in zip(uv, depth_colours(depth)):
        draw.ellipse((u - 1.5, v - 1.5, u + 1.5, v + 1.5), fill=tuple(int(x) for x in c))
    cam = log.rig.camera(camera)
    T_cam_world = invert_pose(log.T_world_camera(camera, frame))
    for track in log.tracks:
        if not track.valid[frame]:
            continue
        corners = transform_points(T_cam_world, box_corners(track.poses[frame], track.size_m))
        if np.any(corners[:, 2] < 0.5):
            continue
        uvc, _ = cam.project(corners)
        for a, b in BOX_EDGES:
            draw.line([tuple(uvc[a]), tuple(uvc[b])], fill=(255, 255, 0), width=2)
    return np.asarray(image)


def bev_overlay(log: DrivingLog, frame: int, path: Path, world: np.ndarray | None = None) -> None:
    """Bird's-eye view of the map, the ego path, the LiDAR points (``world``, default the frame's
    sweep) and the boxes at ``frame``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 8), dpi=100)
    for poly in log.road_map.drivable_areas:
        ax.fill(poly[:, 0], poly[:, 1], color="0.9", zorder=0)
    pts = lidar_world_points(log, frame) if world is None else world
    if len(pts):
        sel = pts[:: max(1, len(pts) // 30000)]
        ax.scatter(sel[:, 0], sel[:, 1], s=0.2, c="0.4", zorder=1)
    ax.plot(log.ego_poses[:, 0, 3], log.ego_poses[:, 1, 3], "b-", lw=1.5, label="ego path", zorder=2)
    for track in log.tracks:
        if track.valid[frame]:
            c = box_corners(track.poses[frame], track.size_m)[[0, 4, 6, 2, 0], :2]
            ax.plot(c[:, 0], c[:, 1], "r-", lw=1, zorder=3)
    e = log.ego_poses[frame, :2, 3]
    ax.set_xlim(e[0] - 60, e[0] + 60)
    ax.set_ylim(e[1] - 60, e[1] + 60)
    ax.set_aspect("equal")
    ax.set_title(f"{log.name} frame {frame}: {'map' if log.has_map else 'no map (corridor)'}")
    ax.legend(loc="upper right")
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_overlays(log: DrivingLog, out: Path, num_frames: int = 3) -> list[Path]:
    """Overlays of ``num_frames`` frames spread over the log; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    frames = sorted({int(round(x)) for x in np.linspace(0, log.num_frames - 1, num_frames)})
    written = []
    for f in frames:
        world = lidar_world_points(log, f)  # read once, drawn in every view of the frame
        for cam in log.rig.camera_names:
            if log.has_image(cam, f):
                p = out / f"frame{f:06d}_{cam}.png"
                atomic_write_bytes(p, encode_png(camera_overlay(log, cam, f, world)))
                written.append(p)
        p = out / f"frame{f:06d}_bev.png"
        bev_overlay(log, f, p, world)
        written.append(p)
    return written


def depth_edge_alignment(log: DrivingLog, camera: str, frame: int, shift_px: int = 0) -> float:
    """Mean image gradient (0-255 grey levels per pixel) at the projected LiDAR points that sit on a
    depth edge (a neighbouring point in the same image row band is >25 % nearer or farther). When the
    calibration is right, depth edges land on image edges: this is higher than with the points
    shifted by ``shift_px`` pixels (the chance level)."""
    from scipy.ndimage import sobel

    grey = log.image(camera, frame).astype(np.float32).mean(axis=2)
    grad = np.hypot(sobel(grey, 0), sobel(grey, 1)) / 8.0
    uv, depth = project_points(log, camera, frame, lidar_world_points(log, frame))
    cols = np.floor(uv[:, 0]).astype(int)
    rows = np.floor(uv[:, 1]).astype(int)
    order = np.lexsort((cols, rows // 3))
    r, c, d = rows[order], cols[order], depth[order]
    same_band = (r[1:] // 3 == r[:-1] // 3) & (np.abs(c[1:] - c[:-1]) <= 4)
    jump = same_band & (np.abs(d[1:] - d[:-1]) > 0.25 * np.minimum(d[1:], d[:-1]))
    edge = np.zeros(len(d), bool)
    edge[1:] |= jump & (d[1:] < d[:-1])  # the nearer side of the edge is the object's silhouette
    edge[:-1] |= jump & (d[:-1] < d[1:])
    h, w = grey.shape
    cc = np.clip(c[edge] + shift_px, 0, w - 1)
    return float(grad[np.clip(r[edge], 0, h - 1), cc].mean()) if edge.any() else 0.0
