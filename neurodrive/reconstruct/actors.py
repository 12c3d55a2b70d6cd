"""One mesh per tracked actor in its box frame from all its returns (mirrored: symmetry prior); a
vehicle seen by too few returns gets its category template (``vehicle_template``)."""

from __future__ import annotations

import numpy as np
import trimesh

from neurodrive.geometry import transform_points
from neurodrive.logs.model import ActorTrack, DrivingLog
from neurodrive.reconstruct.background import _box_local, _in_box
from neurodrive.reconstruct.config import ReconConfig
from neurodrive.reconstruct.tsdf import SparseTsdf


def gather_actor_returns(
    log: DrivingLog, tracks: list[ActorTrack], frames: list[int], cfg: ReconConfig
) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per actor, frame and LiDAR: (sensor origin (3,), returns inside its box (M, 3)), both in its box
    frame. Every sweep is read once for all actors."""
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {t.actor_id: [] for t in tracks}
    for f in frames:
        present = [t for t in tracks if t.valid[f]]
        if not present:
            continue
        for lidar in log.lidars_at(f):
            T = log.T_world_lidar(f, lidar.name)
            pts = transform_points(T, log.lidar(f, lidar.name).xyz_m.astype(np.float64))
            for track in present:
                local = _box_local(track, f, pts)
                inside = _in_box(local, track.size_m, 0.05, cfg.actors.ground_clearance_m * 0.7)
                if inside.any():
                    out[track.actor_id].append((_box_local(track, f, T[:3, 3][None])[0], local[inside]))
    return out


def fit_actor(track: ActorTrack, returns: list[tuple[np.ndarray, np.ndarray]], cfg: ReconConfig):
    """Mesh of one actor in its box frame from its returns (see gather_actor_returns); mirrored
    returns give the unseen side."""
    vs = cfg.actors.actor_voxel_size_m
    tsdf = SparseTsdf(vs, 3 * vs)
    mirror = np.array([1.0, -1.0, 1.0])
    n_points = 0
    for origin, points in returns:
        tsdf.integrate(origin, points)
        tsdf.integrate(origin * mirror, points * mirror)
        n_points += len(points)
    v, t = tsdf.extract_mesh(min_weight=0.5) if n_points > 30 else (np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    half = track.size_m / 2 + 0.02
    vehicle = track.category not in ("pedestrian", "cyclist", "other")
    if len(v) >= 20:
        # Shape prior: the convex hull of the (mirrored) surface. It closes what the LiDAR cannot
        # see (glass, the far side, the underside); the images then paint it. A vehicle seen only
        # in part keeps the full length of its tracked box in its lower body.
        pts = np.clip(v, -half, half)
        body, cabin = vehicle_template(track.size_m, cfg.actors.ground_clearance_m)
        if vehicle and np.ptp(pts[:, 0]) < 0.85 * track.size_m[0]:
            pts = np.concatenate([pts, body])
        if vehicle and pts[:, 2].max() < track.size_m[2] / 2 - 0.1:
            # the roof is rarely seen (glass and grazing rays): a cabin top at the box height
            pts = np.concatenate([pts, cabin])
        try:
            hull = trimesh.convex.convex_hull(pts)
            if hull.volume > 0.2 * np.prod(track.size_m):
                v, t = trimesh.remesh.subdivide_to_size(
                    hull.vertices, hull.faces, max_edge=cfg.actors.actor_voxel_size_m * 2
                )
            else:
                t = np.zeros((0, 3), np.int64)
        except Exception:  # a degenerate (flat) point set: fall back to the box below
            t = np.zeros((0, 3), np.int64)
    if len(t) < 50 and vehicle:  # too little evidence: the category template (a body and a cabin)
        hull = trimesh.convex.convex_hull(np.concatenate(vehicle_template(track.size_m, cfg.actors.ground_clearance_m)))
        v, t = trimesh.remesh.subdivide_to_size(hull.vertices, hull.faces, max_edge=cfg.actors.actor_voxel_size_m * 2)
    if len(t) < 50:  # a pedestrian, cyclist or object with too little evidence: a box of the tracked size
        box = trimesh.creation.box(
            extents=track.size_m * np.array([1.0, 1.0, 1.0 - cfg.actors.ground_clearance_m / track.size_m[2]])
        )
        box.apply_translation([0, 0, cfg.actors.ground_clearance_m / 2])
        v, t = trimesh.remesh.subdivide_to_size(box.vertices, box.faces, max_edge=cfg.actors.actor_voxel_size_m * 2)
    return np.clip(v, -half, half), np.asarray(t), n_points


def vehicle_template(size_m: np.ndarray, clearance_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Corner points (box frame) of a vehicle's category template: a lower body over the box's
    length and width up to half its height, and a cabin top at the box height, set back from the
    front. Their convex hull reads as a car; the images then paint it."""
    l2, w2, h2 = np.asarray(size_m, float) / 2
    z0, z1 = -h2 + clearance_m * 1.5, -h2 + 0.5 * size_m[2]
    body = np.array([[x, y, z] for x in (-l2, l2) for y in (-w2 + 0.05, w2 - 0.05) for z in (z0, z1)])
    cabin = np.array([[x, y, h2] for x in (-0.45 * l2, 0.25 * l2) for y in (-w2 + 0.25, w2 - 0.25)])
    return body, cabin
