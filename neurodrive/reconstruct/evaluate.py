"""``neurodrive evaluate-recon``: how well a reconstruction reproduces frames it never trained on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
from skimage.metrics import structural_similarity

from neurodrive.geometry import make_pose, transform_points
from neurodrive.logs.model import DrivingLog
from neurodrive.scene.model import SceneModel

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


def evaluate_reconstruction(
    model: SceneModel,
    log: DrivingLog,
    frames: list[int] | None = None,
    lane_shift: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    supersample: int = 2,
) -> dict:
    """Metrics on held-out frames (default: the scene's held-out frames).

    Images are rendered with ``supersample`` x ``supersample`` rays per pixel, as the
    (anti-aliased) camera images are.
    """
    frames = list(model.meta.get("holdout_frames", [])) if frames is None else frames
    if not frames:
        raise ValueError("no held-out frames to evaluate on")
    lidar = log.rig.lidar
    psnrs, ssims, depth_err, int_err, drop_acc, chamfers = [], [], [], [], [], []
    per_camera: dict[str, list[float]] = {c: [] for c in log.rig.camera_names}
    for k, f in enumerate(frames):
        poses = {a: p for a, p in log.actor_poses_at(f).items() if a in model.actors}
        scene = model.place(poses)
        for cam in log.rig.cameras:
            pred = model.render_camera(scene, cam, log.ego_poses[f], supersample=supersample, view_dependent=True).rgb
            real = log.image(cam.name, f)
            psnrs.append(psnr(pred, real))
            per_camera[cam.name].append(psnrs[-1])
            ssims.append(ssim(pred, real))
        pred_l = model.render_lidar(scene, lidar, log.ego_poses[f]).sweep
        real_l = log.lidar(f)
        pm, rm = pred_l.return_mask(lidar), real_l.return_mask(lidar)
        drop_acc.append(float(np.mean(pm == rm)))
        pr, rr = pred_l.range_image(lidar), real_l.range_image(lidar)
        both = pm & rm
        depth_err.append(np.abs(pr[both] - rr[both]))
        pi, ri = pred_l.ray_image(lidar, pred_l.intensity), real_l.ray_image(lidar, real_l.intensity)
        int_err.append(pi[both] - ri[both])
        T = log.T_world_lidar(f)
        chamfers.append(chamfer_m(transform_points(T, pred_l.xyz_m), transform_points(T, real_l.xyz_m)))
        if progress:
            progress("evaluating held-out frames", k + 1, len(frames))
    depth = np.concatenate(depth_err)
    inten = np.concatenate(int_err)
    result = {
        "frames": frames,
        "psnr_db": float(np.mean(psnrs)),
        "psnr_db_per_camera": {c: float(np.mean(v)) for c, v in per_camera.items()},
        "ssim": float(np.mean(ssims)),
        "render_supersample": supersample,
        "lpips": None,
        "lpips_note": "not computed: LPIPS needs pretrained network weights, which cannot be downloaded here",
        "lidar_median_depth_error_m": float(np.median(depth)) if len(depth) else float("nan"),
        "lidar_intensity_rmse": float(np.sqrt(np.mean(inten**2))) if len(inten) else float("nan"),
        "lidar_ray_drop_accuracy": float(np.mean(drop_acc)),
        "lidar_chamfer_m": float(np.nanmean(chamfers)),
    }
    if lane_shift:
        result |= lane_shift_psnr(model, log, frames, supersample=supersample)
    return result


def lane_shift_psnr(
    model: SceneModel, log: DrivingLog, frames: list[int], shift_m: float = LANE_SHIFT_M, supersample: int = 2
) -> dict:
    """PSNR against exact ground truth with the ego shifted sideways (generated logs only)."""
    gt_dir = Path(log.root) / "ground_truth"
    if not (gt_dir / "world.json").is_file():
        return {"lane_shift_psnr_db": None, "lane_shift_note": "the log has no ground-truth world"}
    from neurodrive.sources.synthetic.raycaster import WorldRenderer
    from neurodrive.sources.synthetic.world import World

    gt = WorldRenderer(World.load(gt_dir))
    gains = log.metadata.get("camera_gains", {})
    values = []
    for f in frames:
        shifted = log.ego_poses[f] @ make_pose([0.0, shift_m, 0.0])
        poses = log.actor_poses_at(f)
        gt_scene = gt.scene(poses)
        scene = model.place({a: p for a, p in poses.items() if a in model.actors})
        for cam in log.rig.cameras:
            truth = gt.render_camera(gt_scene, cam, shifted, supersample=2, gain=float(gains.get(cam.name, 1.0))).rgb
            values.append(
                psnr(model.render_camera(scene, cam, shifted, supersample=supersample, view_dependent=True).rgb, truth)
            )
    return {"lane_shift_m": shift_m, "lane_shift_psnr_db": float(np.mean(values))}
