"""Export a log as a nerfstudio dataset (read by nerfstudio's ``nerfstudio-data`` parser).

Layout of the exported folder::

    transforms.json            per-image intrinsics, OpenGL camera-to-world matrices, image paths, splits
    images/<camera>_<frame>.png|jpg   the log's images, byte for byte (one flat folder: nerfstudio
                               looks up downscaled copies, images_2/ ..., by file name alone)
    masks/<camera>_<frame>.png        0 where a moving tracked actor is (nerfstudio ignores those pixels)
    points3D.ply               LiDAR returns of the training frames, coloured by the cameras (``ply_file_path``)

Conventions (nerfstudio's): ``transform_matrix`` maps camera to world with OpenGL camera axes (x right,
y up, z back; ours are OpenCV: x right, y down, z forward); pixel centres at integer + 0.5 (ours too);
distortion as OpenCV ``k1, k2, k3, p1, p2`` with ``camera_model: OPENCV``. The world is the log's
world shifted by ``neurodrive.world_origin_m`` (the first ego position) so float32 keeps millimetres.
``train_filenames`` / ``val_filenames`` / ``test_filenames`` hold out the frames ``evaluate-recon``
holds out (``reconstruct.config.holdout_frames``), every camera of them, and the point cloud only
uses training frames' sweeps, as the reconstruction does.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from neurodrive.geometry import invert_pose, points_in_box, transform_points
from neurodrive.io_utils import atomic_write_json, check_apart, staged_directory
from neurodrive.logs.io import image_path
from neurodrive.logs.model import CameraSpec, DrivingLog
from neurodrive.reconstruct.config import ReconConfig, holdout_frames
from neurodrive.reconstruct.evaluate import MOVING_TOLERANCE_M  # the movers evaluate-recon leaves out

OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])  # flips camera y and z: OpenCV axes -> OpenGL axes
MOVING_BOX_MARGIN_M = 0.3  # LiDAR returns this close to a moving actor's box are left out of the points
MASK_FACE_SAMPLES = 9  # samples per box edge when a moving actor's box is projected into a mask


@dataclass(frozen=True)
class NerfstudioExport:
    """What an export wrote.

    Attributes:
        images: images written (every camera of every frame that has one).
        train_images, test_images: how many of them are in the train / held-out (val and test) lists.
        holdout_frames: the frames held out.
        points: LiDAR points in ``points3D.ply`` (0: no LiDAR, no file).
        masked_images: images with a moving actor masked out.
    """

    images: int
    train_images: int
    test_images: int
    holdout_frames: list[int]
    points: int
    masked_images: int


def opengl_camera_to_world(T_world_camera: np.ndarray, origin_m: np.ndarray) -> np.ndarray:
    """nerfstudio's ``transform_matrix`` of a camera pose (OpenCV axes) in a world shifted by ``origin_m``."""
    pose = T_world_camera @ OPENGL_FROM_OPENCV  # a new array: the shift below leaves the input alone
    pose[:3, 3] -= origin_m
    return pose


def _camera_entry(cam: CameraSpec) -> dict:
    k = cam.intrinsics
    entry = {
        "fl_x": float(k[0, 0]),
        "fl_y": float(k[1, 1]),
        "cx": float(k[0, 2]),
        "cy": float(k[1, 2]),
        "w": int(cam.width_px),
        "h": int(cam.height_px),
    }
    k1, k2, p1, p2, k3 = (0.0,) * 5 if cam.distortion is None else (float(c) for c in cam.distortion)
    entry.update({"k1": k1, "k2": k2, "k3": k3, "p1": p1, "p2": p2})
    return entry


def _box_surface(size_m: np.ndarray) -> np.ndarray:
    """(6 * S * S, 3) points on the faces of a centred box of ``size_m``."""
    s = np.linspace(-0.5, 0.5, MASK_FACE_SAMPLES)
    a, b = (g.ravel() for g in np.meshgrid(s, s))
    faces = []
    for axis in range(3):
        for sign in (-0.5, 0.5):
            pts = np.zeros((a.size, 3))
            pts[:, axis] = sign
            pts[:, (axis + 1) % 3] = a
            pts[:, (axis + 2) % 3] = b
            faces.append(pts)
    return np.concatenate(faces) * np.asarray(size_m, float)


def _max_image_radius(cam: CameraSpec) -> float:
    """The largest normalised (undistorted) radius of the image's corners."""
    k = cam.intrinsics
    corners = np.array([[0, 0], [cam.width_px, 0], [0, cam.height_px], [cam.width_px, cam.height_px]], float)
    xy = np.stack([(corners[:, 0] - k[0, 2]) / k[0, 0], (corners[:, 1] - k[1, 2]) / k[1, 1]], axis=1)
    return float(np.linalg.norm(cam.undistort(xy), axis=1).max())


def moving_actor_mask(log: DrivingLog, cam: CameraSpec, frame: int, moving: list[int]) -> np.ndarray | None:
    """(H, W) bool, True where a moving actor's box projects in ``cam`` at ``frame`` (None: nowhere).

    Each box is drawn as the convex hull of samples on its faces in front of the camera; directions
    beyond the image's corners are pulled in to them first, so a lens model never folds them back in.
    """
    from scipy.spatial import ConvexHull, QhullError

    T_camera_world = invert_pose(log.T_world_camera(cam.name, frame))
    r_max = 1.05 * _max_image_radius(cam)
    canvas = Image.new("L", (cam.width_px, cam.height_px), 0)
    draw = ImageDraw.Draw(canvas)
    drawn = False
    for index in moving:
        track = log.tracks[index]
        if not track.valid[frame]:
            continue
        pts = transform_points(T_camera_world @ track.poses[frame], _box_surface(track.size_m))
        pts = pts[pts[:, 2] > 0.05]
        if len(pts) < 3:
            continue
        xy = pts[:, :2] / pts[:, 2:3]
        radius = np.linalg.norm(xy, axis=1, keepdims=True)
        xy = np.where(radius > r_max, xy * (r_max / np.maximum(radius, 1e-9)), xy)
        uv, _ = cam.project(np.c_[xy, np.ones(len(xy))])  # pixels beyond the image too: the hull is clipped
        try:
            hull = uv[ConvexHull(uv).vertices]
        except QhullError:  # degenerate (a box seen exactly edge-on): nothing to draw
            continue
        draw.polygon([tuple(p) for p in hull.tolist()], fill=255)
        drawn = True
    return np.asarray(canvas) > 0 if drawn else None


def sweep_points(
    log: DrivingLog, frame: int, moving: list[int], origin_m: np.ndarray, images: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) shifted by ``origin_m`` and colours (N, 3) in [0, 1] of the sweeps (every
    LiDAR's) on ``frame``.

    Returns near a moving actor's box are left out; each return takes its colour from the first camera
    of ``images`` (camera name -> the frame's decoded image) that sees it, and returns no camera sees
    are left out.
    """
    pts = log.world_returns(frame)[0]
    keep = np.ones(len(pts), bool)
    for index in moving:
        track = log.tracks[index]
        if track.valid[frame]:
            local = transform_points(invert_pose(track.poses[frame]), pts)
            keep &= ~points_in_box(local, track.size_m, MOVING_BOX_MARGIN_M)
    pts = pts[keep]
    colour = np.full((len(pts), 3), np.nan)
    for name, image in images.items():
        cam = log.rig.camera(name)
        uv, seen = cam.project(transform_points(invert_pose(log.T_world_camera(name, frame)), pts))
        seen &= np.isnan(colour[:, 0])
        px = np.minimum(uv[seen].astype(int), [cam.width_px - 1, cam.height_px - 1])
        colour[seen] = image[px[:, 1], px[:, 0]] / 255.0
    seen = ~np.isnan(colour[:, 0])
    return pts[seen] - origin_m, colour[seen]


def write_coloured_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray, voxel_m: float, max_points: int, seed: int) -> int:
    """Binary PLY of the points after averaging per ``voxel_m`` voxel and keeping at most ``max_points``."""
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    cloud.colors = o3d.utility.Vector3dVector(rgb)
    if voxel_m > 0:
        cloud = cloud.voxel_down_sample(voxel_m)
    if len(cloud.points) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(cloud.points), max_points, replace=False))
        cloud = cloud.select_by_index(keep.tolist())
    if not o3d.io.write_point_cloud(path, cloud, write_ascii=False):
        raise OSError(f"could not write {path}")
    return len(cloud.points)


def _with_scene(log: DrivingLog, scene: str | Path) -> tuple[DrivingLog, list[int]]:
    """``log`` with the scene's auto tracks, and the scene's held-out frames; one error when the scene
    was reconstructed from another log."""
    from neurodrive.errors import DataError
    from neurodrive.scene.meta import SceneMeta
    from neurodrive.scene.tracks import log_with_scene_tracks

    meta = SceneMeta.read(scene)
    made_from = meta.log
    if made_from.name != log.name or made_from.num_frames != log.num_frames:
        raise DataError(
            Path(scene) / "scene.json",
            "log",
            f"the scene was reconstructed from '{made_from.name}' ({made_from.num_frames} frames), "
            f"not from '{log.name}' ({log.num_frames} frames)",
        )
    held = list(meta.holdout_frames)
    return log_with_scene_tracks(log, meta), held


def _write_image(
    stage: Path, log: DrivingLog, cam: CameraSpec, frame: int, origin_m: np.ndarray, moving: list[int]
) -> tuple[dict, bool]:
    """Copies one image (and writes its mask when actors move) into ``stage``; its transforms.json
    entry, and whether a moving actor was masked in it."""
    src = image_path(log.root, cam.name, frame)
    rel = f"images/{cam.name}_{frame:06d}{src.suffix}"
    (stage / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, stage / rel)
    pose = opengl_camera_to_world(log.T_world_camera(cam.name, frame), origin_m)
    entry = {"file_path": rel, "transform_matrix": pose.tolist(), **_camera_entry(cam)}
    entry.update({"camera": cam.name, "frame": frame, "timestamp_s": log.camera_time(cam.name, frame)})
    if not moving:
        return entry, False
    box_mask = moving_actor_mask(log, cam, frame, moving)
    keep = np.full((cam.height_px, cam.width_px), 255, np.uint8)
    if box_mask is not None:
        keep[box_mask] = 0
    entry["mask_path"] = f"masks/{cam.name}_{frame:06d}.png"
    (stage / entry["mask_path"]).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(keep).save(stage / entry["mask_path"])
    return entry, box_mask is not None


def export_nerfstudio(
    log: DrivingLog,
    out: str | Path,
    *,
    overwrite: bool = False,
    voxel_m: float = 0.1,
    max_points: int = 500_000,
    mask_moving: bool = True,
    seed: int = 0,
    scene: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> NerfstudioExport:
    """Write ``log`` to ``out`` as a nerfstudio dataset (see the module docstring); the folder is staged
    and moved into place only when complete, so a failed export leaves nothing (or the previous one).

    ``scene``: a scene reconstructed from ``log``; its held-out frames are used and its ``auto-``
    tracks (moving traffic the log has no labels for) are masked too."""
    inputs = [("the log", log.root)] + ([("the scene", scene)] if scene is not None else [])
    check_apart(out, inputs)  # before anything is staged or replaced
    if not log.rig.cameras:
        raise ValueError(f"log '{log.name}' has no cameras: nothing for nerfstudio to train on")
    if not np.isfinite(voxel_m) or voxel_m < 0:
        raise ValueError(f"voxel size (--voxel) must be a finite number >= 0 m, got {voxel_m}")
    if max_points < 1:
        raise ValueError(f"max points (--max-points) must be at least 1, got {max_points}")
    held = holdout_frames(log.num_frames, ReconConfig())
    if scene is not None:
        log, held = _with_scene(log, scene)
    origin_m = log.ego_poses[0, :3, 3].copy()
    moving = [i for i, t in enumerate(log.tracks) if not t.is_static(MOVING_TOLERANCE_M)] if mask_moving else []
    todo = [(f, [c for c in log.rig.cameras if log.has_image(c.name, f)]) for f in range(log.num_frames)]
    total = sum(len(cams) for _, cams in todo)
    if total == 0:
        raise ValueError(f"log '{log.name}' has no camera images")
    frames: list[dict] = []
    splits: dict[str, list[str]] = {"train": [], "test": []}
    xyz, rgb = [], []
    masked = 0
    with staged_directory(out, overwrite) as stage:
        for f, cams in todo:
            # each image decoded once: checked (a corrupt one is one DataError before anything is in
            # place) and used to colour the frame's LiDAR returns
            images = {cam.name: log.image(cam.name, f) for cam in cams}
            for cam in cams:
                entry, has_mask = _write_image(stage, log, cam, f, origin_m, moving)
                masked += has_mask
                frames.append(entry)
                splits["test" if f in held else "train"].append(entry["file_path"])
                if not held:  # too short to hold a frame out: evaluated on training frames, as evaluate-recon is
                    splits["test"].append(entry["file_path"])
                if progress is not None:
                    progress(len(frames), total)
            if f not in held and log.lidars_at(f):  # the point cloud, as the reconstruction, uses training sweeps
                pts, colours = sweep_points(log, f, moving, origin_m, images)
                xyz.append(pts)
                rgb.append(colours)
        cloud = np.concatenate(xyz) if xyz else np.zeros((0, 3))
        points = (
            write_coloured_ply(stage / "points3D.ply", cloud, np.concatenate(rgb), voxel_m, max_points, seed)
            if len(cloud)
            else 0
        )
        meta = {
            "camera_model": "OPENCV",
            "frames": frames,
            "train_filenames": splits["train"],
            "val_filenames": splits["test"],
            "test_filenames": splits["test"],
            "neurodrive": {
                "log": log.name,
                "world_origin_m": origin_m.tolist(),
                "holdout_frames": held,
                "note": "transform_matrix: camera to (log world - world_origin_m), OpenGL camera axes",
            },
        }
        if points:
            meta["ply_file_path"] = "points3D.ply"
        atomic_write_json(stage / "transforms.json", meta)
    return NerfstudioExport(len(frames), len(splits["train"]), len(splits["test"]), held, points, masked)
