"""``neurodrive evaluate-recon``: how well a reconstruction reproduces frames it never trained on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError, cKDTree
from skimage.draw import polygon
from skimage.metrics import structural_similarity

from neurodrive.geometry import BOX_EDGES, box_corners, invert_pose, make_pose, transform_points
from neurodrive.io_utils import atomic_write_bytes
from neurodrive.lidar.sensor import LidarSpec
from neurodrive.logs.model import CameraSpec, DrivingLog
from neurodrive.logs.writer import encode_png
from neurodrive.render.rendering import SceneRenderer
from neurodrive.scene.meta import SceneMeta
from neurodrive.scene.model import SceneModel
from neurodrive.scene.tracks import log_with_scene_tracks

LANE_SHIFT_M = 2.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) / 255.0**2
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def chamfer_m(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric mean nearest-neighbour distance between point sets (N, 3) and (M, 3)."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    da, _ = cKDTree(b).query(a, k=1, workers=-1)
    db, _ = cKDTree(a).query(b, k=1, workers=-1)
    return float(0.5 * (da.mean() + db.mean()))


MOVING_TOLERANCE_M = 0.3  # a track whose box moves more than this over the log is a moving object


def sensor_ego_pose(T_world_sensor: np.ndarray, T_ego_sensor: np.ndarray) -> np.ndarray:
    """The ego pose that puts a sensor at its own recorded pose (its time may differ from the frame's)."""
    return T_world_sensor @ invert_pose(T_ego_sensor)


def moving_object_mask(
    log: DrivingLog, cam: CameraSpec, frame: int, T_world_camera: np.ndarray, moving_only: bool = True
) -> np.ndarray:
    """(H, W) bool: pixels inside the projected boxes of the actors that move over the log (all
    actors with ``moving_only=False``)."""
    mask = np.zeros((cam.height_px, cam.width_px), bool)
    T_cam_world = invert_pose(T_world_camera)
    for track in log.tracks:
        if not track.valid[frame] or (moving_only and track.is_static(MOVING_TOLERANCE_M)):
            continue
        corners = transform_points(T_cam_world, box_corners(track.poses[frame], track.size_m * 1.1))
        corners = clip_to_near_plane(corners)
        if len(corners) < 3:
            continue
        uv, _ = cam.project(corners)
        try:
            hull = uv[ConvexHull(uv).vertices]
        except QhullError:  # degenerate (edge-on) outline
            continue
        rr, cc = polygon(hull[:, 1], hull[:, 0], shape=mask.shape)
        mask[rr, cc] = True
    return mask


def clip_to_near_plane(corners: np.ndarray, near_m: float = 0.1) -> np.ndarray:
    """Box corners (8, 3) in the camera frame in front of ``near_m``, plus where its edges cross it."""
    z = corners[:, 2]
    points = [corners[z >= near_m]]
    for a, b in BOX_EDGES:
        if (z[a] >= near_m) != (z[b] >= near_m):
            t = (near_m - z[a]) / (z[b] - z[a])
            points.append((corners[a] + t * (corners[b] - corners[a]))[None])
    return np.concatenate(points)


def error_figure(truth: np.ndarray, render: np.ndarray, moving: np.ndarray | None = None) -> np.ndarray:
    """ground truth | render | error (absolute difference x 3; moving objects outlined in red) side by side."""
    err = np.clip(np.abs(truth.astype(np.int16) - render.astype(np.int16)).mean(axis=2) * 3, 0, 255).astype(np.uint8)
    err_rgb = np.repeat(err[..., None], 3, axis=2)
    if moving is not None and moving.any():
        edge = moving & ~ndimage.binary_erosion(moving, iterations=2)
        err_rgb[edge] = (255, 0, 0)
    return np.concatenate([truth, render, err_rgb], axis=1)


def evaluate_reconstruction(
    model: SceneModel,
    log: DrivingLog,
    frames: list[int] | None = None,
    lane_shift: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    supersample: int = 2,
    figures: str | Path | None = None,
    actor_edits: bool = True,
    appearance: str = "auto",
    lidar: bool = True,
) -> dict:
    """Metrics on held-out frames (default: the scene's held-out frames; a log too short to hold
    any out is evaluated on its training frames, and the result says so).

    Each camera is rendered at its own recorded pose (camera and LiDAR times may differ), with
    ``supersample`` x ``supersample`` rays per pixel, as the (anti-aliased) camera images are. PSNR
    and SSIM are also given outside moving objects (boxes of the tracks that move) and on actors.
    Frames or cameras without data are skipped. ``figures``: a folder for ground truth | render |
    error PNGs. On logs with a ground-truth world, ``actor_edits`` adds actor removal and close-up
    PSNR (``actor_quality``). ``appearance``: the renderer's (``SceneRenderer``: auto, photos, texels).
    ``lidar``: also score the LiDAR sweeps.
    """
    note = None
    if frames is None:
        frames = list(model.meta.holdout_frames)
        if not frames:
            frames = list(model.meta.training_frames)
            note = "the log is too short to hold frames out: metrics are on training frames"
    if not frames:
        raise ValueError("no frames to evaluate on")
    log = log_with_scene_tracks(log, model.meta)
    renderer = SceneRenderer(model, appearance=appearance)
    m: dict[str, list] = {k: [] for k in METRIC_SERIES}
    per_camera: dict[str, list[tuple[float, float]]] = {c: [] for c in log.rig.camera_names}  # (PSNR, SSIM)
    per_lidar: dict[str, dict[str, list]] = {}
    for k, f in enumerate(frames):
        scene = renderer.place({a: p for a, p in log.actor_poses_at(f).items() if a in model.actors})
        for cam in log.rig.cameras:
            if log.has_image(cam.name, f):
                _camera_metrics(renderer, log, scene, cam, f, supersample, figures, m)
                per_camera[cam.name].append((m["psnr"][-1], m["ssim"][-1]))
        for lidar_spec in log.lidars_at(f) if lidar else ():
            sweep_metrics = _lidar_metrics(renderer, log, scene, f, lidar_spec)
            for series in (m, per_lidar.setdefault(lidar_spec.name, _lidar_series())):  # pooled, and per LiDAR
                for key, value in sweep_metrics.items():
                    series[key].append(value)
        if progress:
            progress("evaluating held-out frames", k + 1, len(frames))
    result = {"frames": frames, "appearance": renderer.appearance, **_summary(m, per_camera, supersample)}
    if len(log.rig.lidars) > 1:
        result["lidar_per_sensor"] = {
            name: {k: v for k, v in _lidar_summary(series).items() if not k.endswith("_note")}
            for name, series in per_lidar.items()
        }
    result |= _protocol(model.meta, log, per_camera, held_out=note is None)
    if note:
        result["frames_note"] = note
    gt = ground_truth_of(log) if lane_shift or actor_edits else None  # loaded once for both
    if lane_shift:
        result |= lane_shift_psnr(renderer, log, frames, supersample=supersample, gt=gt)
    if actor_edits:
        from neurodrive.reconstruct.actor_quality import actor_edit_quality  # it builds on this module

        result |= actor_edit_quality(renderer, log, frames, supersample=supersample, gt=gt)
    return result


APPEARANCE_KEYS = ("psnr_db", "ssim", "psnr_db_static", "ssim_static", "psnr_db_actors", "psnr_db_front", "ssim_front")


def evaluate_appearances(model: SceneModel, log: DrivingLog, appearance: str = "both", **kwargs) -> dict:
    """``evaluate_reconstruction`` in one appearance mode, or (``both``) photo-based with the texels'
    camera metrics beside it under ``texels`` (on a scene without photos: texels alone)."""
    if appearance != "both":
        return evaluate_reconstruction(model, log, appearance=appearance, **kwargs)
    result = evaluate_reconstruction(model, log, appearance="auto", **kwargs)
    if result["appearance"] == "photos":
        kwargs |= {"lane_shift": False, "actor_edits": False, "figures": None, "progress": None}
        texels = evaluate_reconstruction(model, log, appearance="texels", lidar=False, **kwargs)
        result["texels"] = {k: texels[k] for k in APPEARANCE_KEYS}
    return result


CAMERA_SERIES = ("psnr", "ssim", "static_psnr", "static_ssim", "actor_psnr")
LIDAR_SERIES = ("depth", "cell_depth", "int", "drop", "chamfer")
METRIC_SERIES = (*CAMERA_SERIES, *LIDAR_SERIES)


def _lidar_series() -> dict[str, list]:
    return {k: [] for k in LIDAR_SERIES}


def front_camera(log: DrivingLog) -> str | None:
    """The camera looking most nearly straight ahead (largest forward component of its optical axis)."""
    if not log.rig.cameras:
        return None
    return max(log.rig.cameras, key=lambda c: float(c.T_ego_camera[0, 2])).name


def _protocol(
    meta: SceneMeta, log: DrivingLog, per_camera: dict[str, list[tuple[float, float]]], held_out: bool
) -> dict:
    """Which frames and cameras the numbers are over, and the front camera's own (NeuRAD's "FC")."""
    from neurodrive.reconstruct.config import ReconConfig, holdout_protocol

    cfg = meta.config
    default = ReconConfig()
    holdout = meta.holdout_protocol or holdout_protocol(
        ReconConfig(
            holdout_every=int(cfg.get("holdout_every", default.holdout_every)),
            holdout_phase=int(cfg.get("holdout_phase", default.holdout_phase)),
        )
    )
    front = front_camera(log)
    scores = per_camera.get(front, []) if front else []
    return {
        "protocol": {
            "holdout": holdout if held_out else "none (training frames)",
            "all_cameras": "psnr_db / ssim: every camera of every evaluated frame (NeuRAD's '360')",
            "front_camera": front,
            "front": "psnr_db_front / ssim_front: the front camera alone (NeuRAD's 'FC')",
        },
        "psnr_db_front": float(np.mean([p for p, _ in scores])) if scores else None,
        "ssim_front": float(np.mean([q for _, q in scores])) if scores else None,
    }


def _summary(m: dict[str, list], per_camera: dict[str, list[tuple[float, float]]], supersample: int) -> dict:
    """The per-image / per-sweep series ``m`` summed up (means, medians)."""

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    return {
        "psnr_db": mean(m["psnr"]),
        "psnr_db_per_camera": {c: float(np.mean([p for p, _ in v])) for c, v in per_camera.items() if v},
        "ssim_per_camera": {c: float(np.mean([q for _, q in v])) for c, v in per_camera.items() if v},
        "ssim": mean(m["ssim"]),
        "psnr_db_static": mean(m["static_psnr"]),
        "ssim_static": mean(m["static_ssim"]),
        "psnr_db_actors": mean(m["actor_psnr"]),
        "actors_note": "inside the boxes of all actors (re-inserted at their logged poses)",
        "static_note": f"outside the boxes of tracks that move more than {MOVING_TOLERANCE_M} m (auto tracks included)",
        "render_supersample": supersample,
        "lpips": None,
        "lpips_note": "not computed: LPIPS needs pretrained network weights, which cannot be downloaded here",
        **_lidar_summary(m),
    }


def _lidar_summary(m: dict[str, list]) -> dict:
    """The LiDAR series of ``m`` (every sweep of every LiDAR in it) summed up."""

    def pooled(key: str) -> np.ndarray:
        return np.concatenate(m[key]) if m[key] else np.zeros(0)

    depth, cell_depth, inten = pooled("depth"), pooled("cell_depth"), pooled("int")
    return {
        "lidar_median_depth_error_m": float(np.median(depth)) if len(depth) else None,
        "lidar_depth_note": "along each recorded return's own ray; the _pattern value compares the rendered "
        "sweep (the sensor's pattern rays) with the recorded one cell by cell",
        "lidar_median_depth_error_pattern_m": float(np.median(cell_depth)) if len(cell_depth) else None,
        "lidar_intensity_rmse": float(np.sqrt(np.mean(inten**2))) if len(inten) else None,
        "lidar_ray_drop_accuracy": float(np.mean(m["drop"])) if m["drop"] else None,
        "lidar_chamfer_m": float(np.nanmean(m["chamfer"])) if m["chamfer"] else None,
    }


def _camera_metrics(
    renderer: SceneRenderer, log: DrivingLog, scene, cam: CameraSpec, f: int, supersample: int, figures, m: dict
) -> None:
    """PSNR / SSIM of one held-out image (whole and outside moving objects), its figure."""
    T_cam = log.T_world_camera(cam.name, f)
    ego = sensor_ego_pose(T_cam, cam.T_ego_camera)
    exposure = renderer.scene.decoder.exposure_key_at(cam.name, f)  # held out: the nearest training image's
    pred = renderer.render_camera(
        scene, cam, ego, exposure_camera=exposure, supersample=supersample, view_dependent=True
    )
    pred = pred.rgb
    real = log.image(cam.name, f)
    m["psnr"].append(psnr(pred, real))
    ssim_map = structural_similarity(pred, real, channel_axis=2, data_range=255, full=True)[1].mean(axis=2)
    m["ssim"].append(float(ssim_map.mean()))
    moving = moving_object_mask(log, cam, f, T_cam)
    if (~moving).any():
        m["static_psnr"].append(psnr(pred[~moving], real[~moving]))
        m["static_ssim"].append(float(ssim_map[~moving].mean()))
    actors = moving_object_mask(log, cam, f, T_cam, moving_only=False)
    if actors.any():
        m["actor_psnr"].append(psnr(pred[actors], real[actors]))
    if figures is not None:
        write_figure(Path(figures) / f"frame{f:04d}_{cam.name}.png", error_figure(real, pred, moving))


def _lidar_metrics(renderer: SceneRenderer, log: DrivingLog, scene, f: int, lidar: LidarSpec) -> dict:
    """One sweep's ray-drop accuracy, depth and intensity errors on rays both sweeps return, and
    Chamfer distance (one entry per ``LIDAR_SERIES`` name)."""
    T = log.T_world_lidar(f, lidar.name)
    ego = sensor_ego_pose(T, lidar.T_ego_lidar)
    pred_l = renderer.render_lidar(scene, lidar, ego).sweep
    real_l = log.lidar(f, lidar.name)
    pm, rm = pred_l.return_mask(lidar), real_l.return_mask(lidar)
    pr, rr = pred_l.range_image(lidar), real_l.range_image(lidar)
    both = pm & rm
    pi, ri = pred_l.ray_image(lidar, pred_l.intensity), real_l.ray_image(lidar, real_l.intensity)
    return {
        "drop": float(np.mean(pm == rm)),
        "cell_depth": np.abs(pr[both] - rr[both]),
        "depth": ray_depth_errors(scene, T, real_l.xyz_m, lidar.max_range_m),
        "int": pi[both] - ri[both],
        "chamfer": chamfer_m(transform_points(T, pred_l.xyz_m), transform_points(T, real_l.xyz_m)),
    }


def ray_depth_errors(scene, T_world_lidar: np.ndarray, xyz_lidar: np.ndarray, max_range_m: float) -> np.ndarray:
    """|rendered - recorded| range (m) along each recorded return's own ray (the NeuRAD convention:
    the sensor's true ray directions, as pixels are for cameras); returns whose ray hits nothing
    within ``max_range_m`` are left out."""
    xyz = xyz_lidar.astype(np.float64)
    rng = np.linalg.norm(xyz, axis=1)
    ok = rng > 1e-6
    dirs = (xyz[ok] / rng[ok, None]) @ T_world_lidar[:3, :3].T
    hits = scene.cast(T_world_lidar[:3, 3], np.ascontiguousarray(dirs, np.float32), normals=False)
    hit = hits.hit & (hits.t_m <= max_range_m)
    return np.abs(hits.t_m[hit] - rng[ok][hit])


def write_figure(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, encode_png(image))


@dataclass(frozen=True)
class GroundTruth:
    """The exact renderer of a generated log's world (``ground_truth/``) and its camera gains."""

    renderer: Any  # sources.synthetic.raycaster.WorldRenderer (imported lazily: generator code)
    gains: dict

    def scene(self, actor_poses: dict) -> Any:
        """The world with its actors at these poses (``FrameScene``; its ``instance`` ids follow
        ``actor_ids``)."""
        return self.renderer.scene(actor_poses)

    def render(self, scene: Any, cam: CameraSpec, T_world_ego: np.ndarray, supersample: int = 2) -> Any:
        gain = float(self.gains.get(cam.name, 1.0))
        return self.renderer.render_camera(scene, cam, T_world_ego, supersample=supersample, gain=gain)


def ground_truth_of(log: DrivingLog) -> GroundTruth | None:
    """The ground truth of a generated log, or None when the log has no ground-truth world."""
    gt_dir = Path(log.root) / "ground_truth"
    if not (gt_dir / "world.json").is_file():
        return None
    from neurodrive.sources.synthetic.raycaster import WorldRenderer
    from neurodrive.sources.synthetic.world import World

    return GroundTruth(WorldRenderer(World.load(gt_dir)), dict(log.metadata.get("camera_gains", {})))


def lane_shift_psnr(
    renderer: SceneRenderer,
    log: DrivingLog,
    frames: list[int],
    shift_m: float = LANE_SHIFT_M,
    supersample: int = 2,
    gt: GroundTruth | None = None,
) -> dict:
    """PSNR against exact ground truth with the ego shifted sideways (generated logs only; ``gt``:
    their ground truth, loaded when not given)."""
    model = renderer.scene
    gt = gt or ground_truth_of(log)
    if gt is None:
        return {"lane_shift_psnr_db": None, "lane_shift_note": "the log has no ground-truth world"}
    values = []
    for f in frames:
        shifted = log.ego_poses[f] @ make_pose([0.0, shift_m, 0.0])
        poses = log.actor_poses_at(f)
        gt_scene = gt.scene(poses)
        scene = renderer.place({a: p for a, p in poses.items() if a in model.actors})
        for cam in log.rig.cameras:
            truth = gt.render(gt_scene, cam, shifted).rgb
            values.append(
                psnr(
                    renderer.render_camera(scene, cam, shifted, supersample=supersample, view_dependent=True).rgb, truth
                )
            )
    return {"lane_shift_m": shift_m, "lane_shift_psnr_db": float(np.mean(values))}
