"""Background geometry from LiDAR: a sparse TSDF of the returns outside actor boxes (with inpainted and
densified virtual returns), a ground underlay, walls extruded above the LiDAR's view and carved where
rays passed, marching cubes."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from neurodrive.geometry import invert_pose, transform_points
from neurodrive.lidar.pattern import from_image
from neurodrive.lidar.sensor import LidarSpec
from neurodrive.logs.model import ActorTrack, DrivingLog
from neurodrive.raycast.open3d_caster import MeshRaycaster
from neurodrive.reconstruct.config import Progress, ReconConfig, stage_step
from neurodrive.reconstruct.tsdf import SparseTsdf
from neurodrive.spatial import voxel_labels


def _box_local(track: ActorTrack, frame: int, points_world: np.ndarray) -> np.ndarray:
    return transform_points(invert_pose(track.poses[frame]), points_world)


def _in_box(local: np.ndarray, size: np.ndarray, margin: float, floor_m: float) -> np.ndarray:
    half = size / 2
    return (
        (np.abs(local[:, 0]) <= half[0] + margin)
        & (np.abs(local[:, 1]) <= half[1] + margin)
        & (local[:, 2] <= half[2] + margin)
        & (local[:, 2] >= -half[2] + floor_m)
    )


def _outside_actors(
    log: DrivingLog, frame: int, points_world: np.ndarray, margin_m: float, floor_m: float
) -> np.ndarray:
    """(N,) bool: the points outside every actor box valid at ``frame`` (see ``_in_box``)."""
    keep = np.ones(len(points_world), bool)
    for track in log.tracks:
        if track.valid[frame]:
            keep &= ~_in_box(_box_local(track, frame, points_world), track.size_m, margin_m, floor_m)
    return keep


def inpaint_dropped_rays(sweep, lidar, max_gap: int = 16, tolerance: float = 0.08) -> np.ndarray:
    """Virtual returns (K, 3) in the LiDAR frame for dropped rays inside a surface.

    Glass and dark paint drop most rays, which would leave window-shaped holes in the facades.
    A dropped run of at most ``max_gap`` azimuth bins whose two bounding returns lie at nearly
    the same range is filled by interpolating the range between them; runs next to the sky (no
    return on one side, or very different ranges) stay empty.
    """
    if not lidar.pattern.is_full_grid:  # a grid algorithm: sensors with a beam grid only
        return np.zeros((0, 3))
    rng_img = sweep.range_image(lidar)
    valid = rng_img > 0
    b, w = valid.shape
    cols = np.arange(w)
    left = np.where(valid, cols[None, :], -1)
    left = np.maximum.accumulate(left, axis=1)
    right = np.where(valid, cols[None, :], w)
    right = np.minimum.accumulate(right[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(b)[:, None]
    ok = ~valid & (left >= 0) & (right < w) & (right - left - 1 <= max_gap)
    r_left = rng_img[rows, np.clip(left, 0, w - 1)]
    r_right = rng_img[rows, np.clip(right, 0, w - 1)]
    ok &= np.abs(r_left - r_right) < tolerance * np.maximum(r_left, r_right) + 0.05
    if not ok.any():
        return np.zeros((0, 3))
    frac = (cols[None, :] - left) / np.maximum(right - left, 1)
    ranges = r_left + frac * (r_right - r_left)
    return lidar.pattern.directions().reshape(b, w, 3)[ok] * ranges[ok][:, None]


def densify_far_returns(
    sweep, lidar, min_range_m: float, spacing_m: float, tolerance: float = 0.05, max_split: int = 8
) -> np.ndarray:
    """Virtual returns (K, 3) in the LiDAR frame that fill the scan grid between far returns.

    Far away, neighbouring rays land tens of centimetres apart (0.7 m between beams at 65 m), so
    a distant facade is only a sparse lattice of returns and its reconstructed surface would be
    perforated. Each cell of four neighbouring returns (two beams x two azimuth bins) farther than
    ``min_range_m`` whose ranges agree within ``tolerance`` (relative: one surface, no depth edge)
    is filled with a bilinear grid of points about ``spacing_m`` apart.
    """
    if not lidar.pattern.is_full_grid:  # a grid algorithm: sensors with a beam grid only
        return np.zeros((0, 3))
    rng_img = sweep.range_image(lidar).astype(np.float64)
    el = np.asarray(lidar.beam_elevations_rad, np.float64)
    b, w = rng_img.shape
    if b < 2:
        return np.zeros((0, 3))
    quad = np.stack([rng_img[:-1], np.roll(rng_img, -1, axis=1)[:-1], rng_img[1:], np.roll(rng_img, -1, axis=1)[1:]])
    lo, hi = quad.min(axis=0), quad.max(axis=0)
    ok = (lo >= min_range_m) & (hi - lo < tolerance * hi)
    rows, cols = np.nonzero(ok)
    if len(rows) == 0:
        return np.zeros((0, 3))
    d_az = 2.0 * np.pi / w
    cell_m = hi[rows, cols] * np.maximum(np.abs(el[rows + 1] - el[rows]), d_az)
    split = np.clip(np.ceil(cell_m / spacing_m), 1, max_split).astype(int)
    out = []
    for s in np.unique(split):
        sel = split == s
        r_, c_ = rows[sel], cols[sel]
        f = (np.arange(s) + 0.5) / s
        fy, fx = (a.reshape(1, -1) for a in np.meshgrid(f, f, indexing="ij"))  # (1, s*s) each
        q = quad[:, r_, c_][..., None]  # (4, n, 1)
        ranges = (1 - fy) * ((1 - fx) * q[0] + fx * q[1]) + fy * ((1 - fx) * q[2] + fx * q[3])
        elev = el[r_, None] + fy * (el[r_ + 1, None] - el[r_, None])
        az = (c_[:, None] + fx) * d_az
        out.append(
            (
                np.stack([np.cos(elev) * np.cos(az), np.cos(elev) * np.sin(az), np.sin(elev)], -1) * ranges[..., None]
            ).reshape(-1, 3)
        )
    return np.concatenate(out)


def carve_unsupported_extrusion(
    vertices: np.ndarray,
    triangles: np.ndarray,
    first_extruded: int,
    log: DrivingLog,
    frames: list[int],
    pool_m: float = 1.5,
) -> np.ndarray:
    """Drop extruded wall triangles that LiDAR rays crossed without any return (the wall ended).

    Returns the triangles kept. Evidence is pooled over ``pool_m`` voxels, so glass (which drops
    most rays) inside a real wall does not cut it.
    """
    if first_extruded >= len(triangles):
        return triangles
    caster = MeshRaycaster([(vertices, triangles)])
    n_hit = np.zeros(len(triangles))
    n_ret = np.zeros(len(triangles))
    for f in frames:
        for lidar in log.lidars_at(f):
            T = log.T_world_lidar(f, lidar.name)
            hits = caster.cast(T[:3, 3], lidar.pattern.directions() @ T[:3, :3].T)
            real = from_image(lidar.pattern, log.lidar(f, lidar.name).range_image(lidar))
            sel = hits.hit & (hits.triangle >= first_extruded) & (hits.t_m <= lidar.max_range_m)
            occluded = (real > 0) & (real < hits.t_m - 0.5)  # something (an actor, a tree) was in front
            sel &= ~occluded
            np.add.at(n_hit, hits.triangle[sel], 1.0)
            np.add.at(n_ret, hits.triangle[sel & (real > 0)], 1.0)
    centroids = vertices[triangles].mean(axis=1)
    vox = voxel_labels(centroids, pool_m)
    pooled_hit = np.bincount(vox, n_hit)[vox]
    pooled_ret = np.bincount(vox, n_ret)[vox]
    extruded = np.arange(len(triangles)) >= first_extruded
    carve = extruded & (pooled_hit >= 3) & (pooled_ret <= 0.05 * pooled_hit)
    return triangles[~carve]


def fit_background(log: DrivingLog, frames: list[int], cfg: ReconConfig, progress: Progress | None = None):
    """Static mesh (vertices, triangles) from LiDAR returns outside every actor box."""
    tsdf = SparseTsdf(cfg.geometry.voxel_size_m, cfg.geometry.truncation_m)
    static_points = []
    coarse = SparseTsdf(
        cfg.geometry.voxel_size_m * cfg.geometry.coarse_voxel_ratio,
        cfg.geometry.truncation_m * cfg.geometry.coarse_voxel_ratio,
    )
    for k, f in enumerate(frames):
        for lidar in log.lidars_at(f):
            static_points.append(_integrate_sweep(log, f, lidar, cfg, tsdf, coarse))
        if progress:
            progress("background geometry", k + 1, len(frames))
    close_ground_under_parked_actors(log, frames, cfg, tsdf, coarse)
    with stage_step(progress, "meshing the background (marching cubes)"):
        v, t = tsdf.extract_mesh(min_weight=1.0, fallback=coarse)
        if cfg.geometry.ground_underlay_cell_m > 0:
            gv, gt = ground_underlay(
                np.concatenate(static_points),
                cfg.geometry.ground_underlay_cell_m,
                cfg.geometry.underlay_margin_m,
                cfg.geometry.underlay_depth_m,
            )
            v, t = np.concatenate([v, gv]), np.concatenate([t, gt + len(v)])
    return v, t


def ground_underlay(
    points: np.ndarray, cell_m: float, margin_m: float, depth_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """A coarse ground heightfield just below the measured ground.

    Far ground is hit by few, widely spaced LiDAR rings, so the TSDF mesh has holes there. This
    grid (lowest return per cell, median-filtered, empty cells from the nearest filled one) sits
    ``depth_m`` under the TSDF ground: wherever that exists it is hit first; through holes and
    beyond the rings the underlay is seen, and the images texture it.
    """
    if len(points) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    lo = points[:, :2].min(axis=0) - margin_m
    hi = points[:, :2].max(axis=0) + margin_m
    shape = np.ceil((hi - lo) / cell_m).astype(int) + 1
    ij = np.floor((points[:, :2] - lo) / cell_m).astype(int)
    flat = ij[:, 0] * shape[1] + ij[:, 1]
    lowest = np.full(shape[0] * shape[1], np.inf)
    np.minimum.at(lowest, flat, points[:, 2])
    grid = lowest.reshape(shape)
    empty = ~np.isfinite(grid)
    if empty.all():
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    _, (ri, rj) = ndimage.distance_transform_edt(empty, return_indices=True)
    grid = ndimage.median_filter(grid[ri, rj], size=3) - depth_m
    gx, gy = np.meshgrid(lo[0] + cell_m * np.arange(shape[0]), lo[1] + cell_m * np.arange(shape[1]), indexing="ij")
    vertices = np.stack([gx.ravel(), gy.ravel(), grid.ravel()], axis=1)
    idx = np.arange(shape[0] * shape[1]).reshape(shape)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    triangles = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return vertices, triangles


def extrude_wall_tops(
    vertices: np.ndarray,
    triangles: np.ndarray,
    min_height_m: float,
    extrude_m: float,
    step_m: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Continue walls upward above the LiDAR's field of view.

    A spinning LiDAR sees little of a facade above its top beam, so the TSDF mesh of a wall stops
    at an open upper border. Every open, level border edge on top of a near-vertical triangle
    higher than ``min_height_m`` is extruded upward by ``extrude_m`` in ``step_m`` strips; the
    camera images then decide the strips' appearance (facade, or sky where the wall really ended).
    """
    if len(triangles) == 0 or extrude_m <= 0:
        return vertices, triangles
    tri = vertices[triangles]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    opposite = np.concatenate([triangles[:, 2], triangles[:, 0], triangles[:, 1]])
    face = np.tile(np.arange(len(triangles)), 3)
    _, inv, counts = np.unique(np.sort(edges, axis=1), axis=0, return_inverse=True, return_counts=True)
    a, b = vertices[edges[:, 0]], vertices[edges[:, 1]]
    length = np.linalg.norm(b - a, axis=1)
    top = np.minimum(a[:, 2], b[:, 2])
    cand = (
        (counts[inv.reshape(-1)] == 1)
        & (np.abs(normals[face, 2]) < 0.25)
        & (np.abs(a[:, 2] - b[:, 2]) < 0.3 * np.maximum(length, 1e-9))
        & (vertices[opposite, 2] < top - 0.01)
        & (top > min_height_m)
    )
    if not cand.any():
        return vertices, triangles
    a, b = a[cand], b[cand]
    # keep edges on long straight walls: many candidate edges nearby running the same way
    mid = (a + b) / 2
    direction = (b - a)[:, :2] / np.maximum(np.linalg.norm((b - a)[:, :2], axis=1, keepdims=True), 1e-9)
    neighbours = cKDTree(mid).query_ball_point(mid, r=2.0, workers=-1)
    support = np.array([np.sum(np.abs(direction[nb] @ direction[i]) > 0.9) for i, nb in enumerate(neighbours)])
    straight = support >= 12
    if not straight.any():
        return vertices, triangles
    a, b = a[straight], b[straight]
    steps = max(1, int(round(extrude_m / step_m)))
    lift = np.arange(steps + 1)[:, None, None] * np.array([0.0, 0.0, extrude_m / steps])
    col_a = (a[None] + lift).reshape(-1, 3)  # (steps+1) * n, level-major
    col_b = (b[None] + lift).reshape(-1, 3)
    n = len(a)
    base = len(vertices)
    ia = base + np.arange((steps + 1) * n).reshape(steps + 1, n)
    ib = ia + (steps + 1) * n
    new_tris = np.concatenate(
        [
            np.stack([ia[:-1], ib[:-1], ib[1:]], -1).reshape(-1, 3),
            np.stack([ia[:-1], ib[1:], ia[1:]], -1).reshape(-1, 3),
        ]
    )
    return np.concatenate([vertices, col_a, col_b]), np.concatenate([triangles, new_tris])


def close_ground_under_parked_actors(
    log: DrivingLog, frames: list[int], cfg: ReconConfig, tsdf: SparseTsdf, coarse: SparseTsdf
) -> None:
    """The ground under parked actors is never seen: close it with a patch at the surrounding ground
    height (its texels are later filled from the nearest observed ground)."""
    for track in log.tracks:
        if not track.is_static() or not track.valid[frames].any():
            continue
        f = frames[int(np.argmax(track.valid[frames]))]
        pose = track.poses[f]
        half = track.size_m[:2] / 2 + cfg.actors.actor_margin_m + 0.3
        gx, gy = np.meshgrid(
            np.arange(-half[0], half[0], cfg.geometry.voxel_size_m / 2),
            np.arange(-half[1], half[1], cfg.geometry.voxel_size_m / 2),
        )
        ring = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1)
        ground_z = pose[2, 3] - track.size_m[2] / 2
        probe = transform_points(pose, ring)
        probe[:, 2] = ground_z
        sdf, seen = tsdf.query(probe)
        if seen.sum() > 10:  # refine the height from nearby observed ground voxels
            ground_z -= float(np.median(sdf[seen]))
        probe[:, 2] = ground_z
        tsdf.integrate(probe + np.array([0.0, 0.0, 1.5]), probe, weights=np.full(len(probe), 0.5))
        coarse.integrate(probe + np.array([0.0, 0.0, 1.5]), probe, weights=np.full(len(probe), 0.5))


def _integrate_sweep(
    log: DrivingLog, f: int, lidar: LidarSpec, cfg: ReconConfig, tsdf: SparseTsdf, coarse: SparseTsdf
) -> np.ndarray:
    """One sweep's static returns into the fine and coarse TSDFs (with the rays it dropped inpainted
    and its far returns densified); returns a quarter of its static points for the ground underlay."""
    sweep = log.lidar(f, lidar.name)
    T = log.T_world_lidar(f, lidar.name)
    pts = transform_points(T, sweep.xyz_m.astype(np.float64))
    keep = _outside_actors(log, f, pts, cfg.actors.actor_margin_m, cfg.actors.ground_clearance_m)
    tsdf.integrate(
        T[:3, 3],
        pts[keep],
        truncation_per_m=cfg.geometry.truncation_per_m,
        max_truncation_m=cfg.geometry.max_truncation_m,
    )
    virtual = transform_points(
        T, inpaint_dropped_rays(sweep, lidar, cfg.geometry.inpaint_max_gap_bins, cfg.geometry.inpaint_tolerance)
    )
    if len(virtual):
        virtual = virtual[_outside_actors(log, f, virtual, cfg.actors.actor_margin_m, 0.0)]
        tsdf.integrate(T[:3, 3], virtual, weights=np.full(len(virtual), 0.5))
    far = np.linalg.norm(pts - T[:3, 3], axis=1) > cfg.geometry.coarse_min_range_m
    coarse.integrate(T[:3, 3], pts[keep & far])
    if cfg.geometry.densify_min_range_m > 0:
        dense = transform_points(
            T,
            densify_far_returns(
                sweep,
                lidar,
                cfg.geometry.densify_min_range_m,
                cfg.geometry.densify_spacing_m,
                cfg.geometry.densify_tolerance,
            ),
        )
        coarse.integrate(
            T[:3, 3], dense[_outside_actors(log, f, dense, cfg.actors.actor_margin_m, cfg.actors.ground_clearance_m)]
        )
    return pts[keep][::4]
