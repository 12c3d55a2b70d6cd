"""How reconstructed actors hold up when edited, measured against exact ground truth.

Generated logs carry their world (``ground_truth/``), so an edit can be rendered twice: by the
reconstruction and by the world's own renderer. Two measurements:

- removal: an actor is removed at a held-out frame; PSNR over the pixels it covered (what was behind
  it: the reconstructed background, against the true background);
- close-up: the ego is put ``close_m`` metres from an actor's rear, front and sides, looking at it;
  PSNR over the actor's true pixels, beside the PSNR a flat patch of the actor's mean true colour
  would score there (what an untextured box could at best reach).
"""

from __future__ import annotations

import numpy as np

from neurodrive.geometry import pose_xyz_yaw
from neurodrive.logs.model import DrivingLog
from neurodrive.reconstruct.evaluate import GroundTruth, ground_truth_of, psnr
from neurodrive.render.rendering import SceneRenderer

MIN_ACTOR_PIXELS = 300  # an actor covering fewer pixels of a view is not measured there


def actor_edit_quality(
    renderer: SceneRenderer,
    log: DrivingLog,
    frames: list[int],
    max_views: int = 6,
    close_m: float = 3.0,
    supersample: int = 2,
    gt: GroundTruth | None = None,
) -> dict:
    """Removal and close-up PSNR of the reconstructed actors (see the module docstring; ``gt``: the
    log's ground truth, loaded when not given).

    The ``max_views`` (actor, frame, camera) views where actors cover the most pixels are measured
    for removal; the actors of the ``max_views // 2`` largest of them are seen close up.
    """
    model = renderer.scene
    gt = gt or ground_truth_of(log)
    if gt is None:
        return {"actor_edit_note": "the log has no ground-truth world"}
    views = []  # (pixels, actor, frame, camera index, the actor's true pixels)
    for f in frames:
        poses = {a: p for a, p in log.actor_poses_at(f).items() if a in model.actors}
        gt_scene = gt.scene(poses)
        for ci, cam in enumerate(log.rig.cameras):
            truth = gt.render(gt_scene, cam, log.ego_poses[f], supersample)
            for k, aid in enumerate(gt_scene.actor_ids):
                mask = truth.instance == k
                if mask.sum() >= MIN_ACTOR_PIXELS:
                    views.append((int(mask.sum()), aid, f, ci, mask))
    views.sort(key=lambda v: -v[0])
    views = views[:max_views]
    removal, kept = [], []
    for _, aid, f, ci, mask in views:
        cam = log.rig.cameras[ci]
        poses = {a: p for a, p in log.actor_poses_at(f).items() if a in model.actors and a != aid}
        truth = gt.render(gt.scene(poses), cam, log.ego_poses[f], supersample).rgb
        pred = renderer.render_camera(renderer.place(poses), cam, log.ego_poses[f], supersample=supersample).rgb
        removal.append(psnr(pred[mask], truth[mask]))
        kept.append({"actor": aid, "frame": f, "camera": cam.name, "pixels": int(mask.sum())})
    close, flat = [], []
    seen_close: set[str] = set()
    for _, aid, f, _, _ in views:
        if aid in seen_close or len(seen_close) >= max(1, max_views // 2):
            continue
        seen_close.add(aid)
        for psnr_close, psnr_flat in _close_up(renderer, log, gt, aid, f, close_m, supersample):
            close.append(psnr_close)
            flat.append(psnr_flat)
    return {
        "actor_removal_psnr_db": float(np.mean(removal)) if removal else None,
        "actor_removal_views": kept,
        "actor_close_up_psnr_db": float(np.mean(close)) if close else None,
        "actor_close_up_flat_colour_psnr_db": float(np.mean(flat)) if flat else None,
        "actor_close_up_views": len(close),
        "actor_close_up_distance_m": close_m,
        "actor_edit_note": "removal: PSNR over the removed actor's true pixels against the true background; "
        "close-up: PSNR over the actor's true pixels from close_m in front of its rear, front and sides, "
        "beside a flat patch of its mean true colour",
    }


def _close_up(
    renderer: SceneRenderer, log: DrivingLog, gt: GroundTruth, aid: str, f: int, close_m: float, supersample: int
):
    """(PSNR, flat-colour PSNR) of the views of actor ``aid`` from ``close_m`` metres (rear, front, sides)."""
    poses = {a: p for a, p in log.actor_poses_at(f).items() if a in renderer.scene.actors}
    box = poses[aid]
    size = log.track(aid).size_m
    yaw = float(np.arctan2(box[1, 0], box[0, 0]))
    ego_z = float(log.ego_poses[f][2, 3])
    cam = log.rig.cameras[0]
    cam_forward_m = float(cam.T_ego_camera[0, 3])
    gt_scene, scene = gt.scene(poses), renderer.place(poses)
    k = gt_scene.actor_ids.index(aid)
    out = []
    for side in (0.0, np.pi / 2, np.pi, -np.pi / 2):  # the ego stands at the rear, right, front, left
        direction = yaw + np.pi + side
        extent = abs(np.cos(side)) * size[0] / 2 + abs(np.sin(side)) * size[1] / 2
        reach = extent + close_m + cam_forward_m
        xy = box[:2, 3] + reach * np.array([np.cos(direction), np.sin(direction)])
        ego = pose_xyz_yaw(float(xy[0]), float(xy[1]), ego_z, float(direction + np.pi))
        truth = gt.render(gt_scene, cam, ego, supersample)
        mask = truth.instance == k
        if mask.sum() < MIN_ACTOR_PIXELS:
            continue
        pred = renderer.render_camera(scene, cam, ego, supersample=supersample).rgb
        true_px = truth.rgb[mask]
        flat = np.broadcast_to(true_px.mean(axis=0).round(), true_px.shape)
        out.append((psnr(pred[mask], true_px), psnr(flat, true_px)))
    return out
