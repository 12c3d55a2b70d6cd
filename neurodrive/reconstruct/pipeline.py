"""``neurodrive reconstruct``: build a SceneModel from a driving log alone.

Stages (each resumable; finished stages are kept in ``OUT/checkpoints`` until the scene is written):

1. background geometry: sparse TSDF fitted to the LiDAR returns outside actor boxes (+ ground
   patches under parked actors), marching cubes -> mesh;
2. actors: one TSDF per track in its box frame from all its returns, mirrored left-right
   (symmetry prior); a box-shaped fallback when too few returns;
3. appearance: training pixels cast onto the meshes, texel atlases sized by the closest view,
   closed-form colours + exposures, then joint gradient descent of features, MLP and exposures;
   the sky from pixels that hit nothing; unobserved texels filled (actors: from the mirrored side
   first), then from the nearest observed texel;
4. LiDAR: intensity fall-off and per-triangle reflectivity; per-vertex ray-drop rates and a ray-drop
   MLP (``render/ray_drop.py``), from the sweeps.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import trimesh
from scipy import ndimage
from scipy.spatial import cKDTree

from neurodrive.errors import DataError
from neurodrive.geometry import invert_pose, transform_points
from neurodrive.io_utils import atomic_write_json, atomic_write_npz
from neurodrive.raycast.base import bounding_radius_m
from neurodrive.raycast.open3d_caster import CompositeCaster, MeshRaycaster
from neurodrive.reconstruct.appearance import (
    PixelSamples,
    SkySamples,
    apply_inverse_exposure,
    fit_colours_and_exposure,
    fit_sky,
    sky_cells,
    train_decoder,
)
from neurodrive.lidar.ray_drop import DropSamples, fit_ray_drop, range_image_edges
from neurodrive.scene.model import ActorAsset, LidarIntensityModel, SceneModel, SkyModel, SurfaceMesh
from neurodrive.scene.texels import TexelAtlas
from neurodrive.reconstruct.tsdf import SparseTsdf
from neurodrive.logs.model import ActorTrack, DrivingLog
from neurodrive.logs.io import read_npz

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ReconConfig:
    voxel_size_m: float = 0.1  # background TSDF voxel
    truncation_m: float = 0.3  # band around near returns
    truncation_per_m: float = 0.03  # the band widens with range ...
    max_truncation_m: float = 1.2  # ... up to this
    coarse_voxel_ratio: int = 3  # a coarser field fills gaps between sparse far returns
    coarse_min_range_m: float = 0.0  # returns farther than this feed the coarse field
    densify_min_range_m: float = 15.0  # the coarse field also gets the scan grid filled between returns this far (0: off)
    densify_spacing_m: float = 0.15  # ... with virtual returns this far apart
    densify_tolerance: float = 0.05  # ... between returns whose ranges differ by less than this share
    ground_underlay_cell_m: float = 2.0  # heightfield under the TSDF ground that closes far holes (0: off)
    wall_extrusion_m: float = 12.0  # walls continue this far above the LiDAR's view (0: off)
    wall_min_height_m: float = 3.0  # only open wall tops above this height are extruded
    max_triangle_edge_m: float = 1.0  # larger background triangles are split (per-vertex LiDAR drop rates stay local)
    actor_voxel_size_m: float = 0.05
    actor_margin_m: float = 0.3  # returns this close around a box are not background
    ground_clearance_m: float = 0.12  # returns this low inside a box are ground, not actor
    holdout_every: int = 5  # frames with index % holdout_every == holdout_phase are held out
    holdout_phase: int = 2
    num_features: int = 5  # per texel: 3 colour + extra channels for the MLP
    hidden_units: int = 16
    residual_scale: float = 0.25
    min_texel_m: float = 0.02
    texel_smoothing_k: int = 6  # texels seen fewer than 3 times are blended with this many neighbours
    texel_pixel_ratio: float = 1.5  # texel width in pixel footprints at the closest training view
    max_texel_resolution: int = 24
    exposure_rounds: int = 3
    lidar_smoothing_m: float = 0.25  # LiDAR reflectivity evidence is pooled over voxels this big
    train_steps: int = 400
    batch_size: int = 16384
    learning_rate: float = 0.005
    max_pixel_samples: int = 16_000_000  # bounds memory on long logs (pixels are strided beyond it)
    checkpoint_every: int = 50
    seed: int = 0


def holdout_frames(num_frames: int, cfg: ReconConfig) -> list[int]:
    return [f for f in range(num_frames) if f % cfg.holdout_every == cfg.holdout_phase]


def training_frames(num_frames: int, cfg: ReconConfig) -> list[int]:
    held = set(holdout_frames(num_frames, cfg))
    return [f for f in range(num_frames) if f not in held]


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


def _outside_actors(log: DrivingLog, frame: int, points_world: np.ndarray, margin_m: float, floor_m: float) -> np.ndarray:
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
    return lidar.ray_directions()[ok] * ranges[ok][:, None]


def densify_far_returns(sweep, lidar, min_range_m: float, spacing_m: float, tolerance: float = 0.05, max_split: int = 8) -> np.ndarray:
    """Virtual returns (K, 3) in the LiDAR frame that fill the scan grid between far returns.

    Far away, neighbouring rays land tens of centimetres apart (0.7 m between beams at 65 m), so
    a distant facade is only a sparse lattice of returns and its reconstructed surface would be
    perforated. Each cell of four neighbouring returns (two beams x two azimuth bins) farther than
    ``min_range_m`` whose ranges agree within ``tolerance`` (relative: one surface, no depth edge)
    is filled with a bilinear grid of points about ``spacing_m`` apart.
    """
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
        out.append((np.stack([np.cos(elev) * np.cos(az), np.cos(elev) * np.sin(az), np.sin(elev)], -1) * ranges[..., None]).reshape(-1, 3))
    return np.concatenate(out)


def carve_unsupported_extrusion(
    vertices: np.ndarray, triangles: np.ndarray, first_extruded: int, log: DrivingLog, frames: list[int], pool_m: float = 1.5
) -> np.ndarray:
    """Drop extruded wall triangles that LiDAR rays crossed without any return (the wall ended).

    Returns the triangles kept. Evidence is pooled over ``pool_m`` voxels, so glass (which drops
    most rays) inside a real wall does not cut it.
    """
    if first_extruded >= len(triangles):
        return triangles
    lidar = log.rig.lidar
    caster = MeshRaycaster([(vertices, triangles)])
    dirs_l = lidar.ray_directions().reshape(-1, 3)
    n_hit = np.zeros(len(triangles))
    n_ret = np.zeros(len(triangles))
    for f in frames:
        T = log.T_world_lidar(f)
        hits = caster.cast(T[:3, 3], dirs_l @ T[:3, :3].T)
        sweep = log.lidar(f)
        real = sweep.range_image(lidar).reshape(-1)
        sel = hits.hit & (hits.triangle >= first_extruded) & (hits.t_m <= lidar.max_range_m)
        occluded = (real > 0) & (real < hits.t_m - 0.5)  # something (an actor, a tree) was in front
        sel &= ~occluded
        np.add.at(n_hit, hits.triangle[sel], 1.0)
        np.add.at(n_ret, hits.triangle[sel & (real > 0)], 1.0)
    centroids = vertices[triangles].mean(axis=1)
    vox = np.unique(np.floor(centroids / pool_m).astype(np.int64), axis=0, return_inverse=True)[1].reshape(-1)
    pooled_hit = np.bincount(vox, n_hit)[vox]
    pooled_ret = np.bincount(vox, n_ret)[vox]
    extruded = np.arange(len(triangles)) >= first_extruded
    carve = extruded & (pooled_hit >= 3) & (pooled_ret <= 0.05 * pooled_hit)
    return triangles[~carve]


def fit_background(log: DrivingLog, frames: list[int], cfg: ReconConfig, progress: Progress | None = None):
    """Static mesh (vertices, triangles) from LiDAR returns outside every actor box."""
    tsdf = SparseTsdf(cfg.voxel_size_m, cfg.truncation_m)
    static_points = []
    coarse = SparseTsdf(cfg.voxel_size_m * cfg.coarse_voxel_ratio, cfg.truncation_m * cfg.coarse_voxel_ratio)
    for k, f in enumerate(frames):
        sweep = log.lidar(f)
        T = log.T_world_lidar(f)
        pts = transform_points(T, sweep.xyz_m.astype(np.float64))
        keep = _outside_actors(log, f, pts, cfg.actor_margin_m, cfg.ground_clearance_m)
        tsdf.integrate(T[:3, 3], pts[keep], truncation_per_m=cfg.truncation_per_m, max_truncation_m=cfg.max_truncation_m)
        virtual = transform_points(T, inpaint_dropped_rays(sweep, log.rig.lidar))
        if len(virtual):
            virtual = virtual[_outside_actors(log, f, virtual, cfg.actor_margin_m, 0.0)]
            tsdf.integrate(T[:3, 3], virtual, weights=np.full(len(virtual), 0.5))
        far = np.linalg.norm(pts - T[:3, 3], axis=1) > cfg.coarse_min_range_m
        static_points.append(pts[keep][::4])
        coarse.integrate(T[:3, 3], pts[keep & far])
        if cfg.densify_min_range_m > 0:
            dense = transform_points(T, densify_far_returns(
                sweep, log.rig.lidar, cfg.densify_min_range_m, cfg.densify_spacing_m, cfg.densify_tolerance
            ))
            coarse.integrate(T[:3, 3], dense[_outside_actors(log, f, dense, cfg.actor_margin_m, cfg.ground_clearance_m)])
        if progress:
            progress("background geometry", k + 1, len(frames))
    # The ground under parked actors is never seen: close it with a patch at the surrounding
    # ground height (its texels are later filled from the nearest observed ground).
    for track in log.tracks:
        if not track.is_static() or not track.valid[frames].any():
            continue
        f = frames[int(np.argmax(track.valid[frames]))]
        pose = track.poses[f]
        half = track.size_m[:2] / 2 + cfg.actor_margin_m + 0.3
        gx, gy = np.meshgrid(
            np.arange(-half[0], half[0], cfg.voxel_size_m / 2), np.arange(-half[1], half[1], cfg.voxel_size_m / 2)
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
    with stage_step(progress, "meshing the background (marching cubes)"):
        v, t = tsdf.extract_mesh(min_weight=1.0, fallback=coarse)
        if cfg.ground_underlay_cell_m > 0:
            gv, gt = ground_underlay(np.concatenate(static_points), cfg.ground_underlay_cell_m, 30.0, 0.04)
            v, t = np.concatenate([v, gv]), np.concatenate([t, gt + len(v)])
    return v, t


def ground_underlay(points: np.ndarray, cell_m: float, margin_m: float, depth_m: float) -> tuple[np.ndarray, np.ndarray]:
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
        [np.stack([ia[:-1], ib[:-1], ib[1:]], -1).reshape(-1, 3), np.stack([ia[:-1], ib[1:], ia[1:]], -1).reshape(-1, 3)]
    )
    return np.concatenate([vertices, col_a, col_b]), np.concatenate([triangles, new_tris])


def gather_actor_returns(
    log: DrivingLog, tracks: list[ActorTrack], frames: list[int], cfg: ReconConfig
) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per actor and frame: (sensor origin (3,), returns inside its box (M, 3)), both in its box
    frame. Every sweep is read once for all actors."""
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {t.actor_id: [] for t in tracks}
    for f in frames:
        present = [t for t in tracks if t.valid[f]]
        if not present:
            continue
        T = log.T_world_lidar(f)
        pts = transform_points(T, log.lidar(f).xyz_m.astype(np.float64))
        for track in present:
            local = _box_local(track, f, pts)
            inside = _in_box(local, track.size_m, 0.05, cfg.ground_clearance_m * 0.7)
            if inside.any():
                out[track.actor_id].append((_box_local(track, f, T[:3, 3][None])[0], local[inside]))
    return out


def fit_actor(track: ActorTrack, returns: list[tuple[np.ndarray, np.ndarray]], cfg: ReconConfig):
    """Mesh of one actor in its box frame from its returns (see gather_actor_returns); mirrored
    returns give the unseen side."""
    vs = cfg.actor_voxel_size_m
    tsdf = SparseTsdf(vs, 3 * vs)
    mirror = np.array([1.0, -1.0, 1.0])
    n_points = 0
    for origin, points in returns:
        tsdf.integrate(origin, points)
        tsdf.integrate(origin * mirror, points * mirror)
        n_points += len(points)
    v, t = tsdf.extract_mesh(min_weight=0.5) if n_points > 30 else (np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    half = track.size_m / 2 + 0.02
    if len(v) >= 20:
        # Shape prior: the convex hull of the (mirrored) surface. It closes what the LiDAR cannot
        # see (glass, the far side, the underside); the images then paint it. A vehicle seen only
        # in part keeps the full length of its tracked box in its lower body.
        pts = np.clip(v, -half, half)
        vehicle = track.category not in ("pedestrian", "cyclist")
        l2, w2, h2 = track.size_m / 2
        if vehicle and np.ptp(pts[:, 0]) < 0.85 * track.size_m[0]:
            z0, z1 = -h2 + cfg.ground_clearance_m * 1.5, -h2 + 0.5 * track.size_m[2]
            body = np.array([[x, y, z] for x in (-l2, l2) for y in (-w2 + 0.05, w2 - 0.05) for z in (z0, z1)])
            pts = np.concatenate([pts, body])
        if vehicle and pts[:, 2].max() < h2 - 0.1:
            # the roof is rarely seen (glass and grazing rays): a cabin top at the box height
            cabin = np.array([[x, y, h2] for x in (-0.45 * l2, 0.25 * l2) for y in (-w2 + 0.25, w2 - 0.25)])
            pts = np.concatenate([pts, cabin])
        try:
            hull = trimesh.convex.convex_hull(pts)
            if hull.volume > 0.2 * np.prod(track.size_m):
                v, t = trimesh.remesh.subdivide_to_size(hull.vertices, hull.faces, max_edge=cfg.actor_voxel_size_m * 2)
            else:
                t = np.zeros((0, 3), np.int64)
        except Exception:  # a degenerate (flat) point set: fall back to the box below
            t = np.zeros((0, 3), np.int64)
    if len(t) < 50:  # too little evidence: a box of the tracked size stands in
        box = trimesh.creation.box(extents=track.size_m * np.array([1.0, 1.0, 1.0 - cfg.ground_clearance_m / track.size_m[2]]))
        box.apply_translation([0, 0, cfg.ground_clearance_m / 2])
        v, t = trimesh.remesh.subdivide_to_size(box.vertices, box.faces, max_edge=cfg.actor_voxel_size_m * 2)
    return np.clip(v, -half, half), np.asarray(t), n_points


SCENE_FILES = ("scene.json", "background.npz", "appearance.safetensors", "actors")  # scene.json first: it marks completeness


def prepare_scene_folder(out: Path, overwrite: bool, restart: bool) -> None:
    """Checks that ``out`` may receive a scene and clears what must go before anything is written."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, expected a folder for the reconstructed scene")
    if (out / "scene.json").exists():
        if not overwrite:
            raise FileExistsError(f"{out} already holds a reconstructed scene (pass --overwrite to replace it)")
        for name in SCENE_FILES:  # invalidate first: scene.json goes before any array is touched
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    elif out.is_dir() and any(out.iterdir()) and not (out / "checkpoints").is_dir() and not overwrite:
        raise FileExistsError(f"{out} is not empty and holds no scene or unfinished reconstruction "
                              "(choose another --out, or pass --overwrite)")
    if restart:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)


class _Stage:
    """Checkpoint files of one reconstruction run."""

    def __init__(self, folder: Path, log: DrivingLog, cfg: ReconConfig) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        signature = {"log": log.name, "num_frames": log.num_frames, "config": asdict(cfg)}
        sig_path = folder / "run.json"
        if sig_path.is_file():
            try:
                previous = json.loads(sig_path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise DataError(sig_path, None, f"{self.corrupt_hint} ({e})") from e
            if previous != signature:
                shutil.rmtree(folder)  # a different log or config: start over
                folder.mkdir(parents=True)
        atomic_write_json(sig_path, signature)

    @property
    def corrupt_hint(self) -> str:
        return f"corrupt checkpoint: delete {self.folder} (or run `neurodrive reconstruct --restart`) to start over"

    def load_mesh(self, name: str):
        path = self.folder / f"{name}.npz"
        if not path.is_file():
            return None
        try:
            a = read_npz(path, {"vertices": (None, 3), "triangles": (None, 3)})
        except DataError as e:
            raise DataError(path, e.field, f"{self.corrupt_hint} ({e.problem})") from e
        return a["vertices"], a["triangles"], a

    def save_mesh(self, name: str, vertices: np.ndarray, triangles: np.ndarray, **extra: np.ndarray) -> None:
        atomic_write_npz(self.folder / f"{name}.npz", vertices=vertices, triangles=triangles, **extra)


class FrameCasters:
    """Ray casters of the background and of each actor mesh, built once for the whole log."""

    def __init__(self, meshes: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.background = MeshRaycaster([meshes[0]])
        self.actors = [MeshRaycaster([m]) for m in meshes[1:]]
        self.radii = [bounding_radius_m(m[0]) for m in meshes[1:]]

    def at(self, log: DrivingLog, frame: int, actor_ids: list[str]) -> tuple[CompositeCaster, np.ndarray]:
        """The actors valid at ``frame`` at their poses, and the mesh index (actor k: mesh k + 1)
        of each geometry index of the returned caster."""
        present = [k for k, a in enumerate(actor_ids) if log.track(a).valid[frame]]
        caster = CompositeCaster(
            self.background,
            [self.actors[k] for k in present],
            [self.radii[k] for k in present],
            [log.track(actor_ids[k]).poses[frame] for k in present],
        )
        return caster, np.array([0] + [k + 1 for k in present])


def collect_pixel_samples(
    log: DrivingLog,
    frames: list[int],
    meshes: list[tuple[np.ndarray, np.ndarray]],
    actor_ids: list[str],
    cfg: ReconConfig,
    progress: Progress | None = None,
):
    """Cast every (strided) training pixel onto the meshes.

    Returns per-sample (mesh index, triangle, uv, distance, direction, camera, rgb) and sky samples.
    """
    cams = log.rig.cameras
    total = len(frames) * sum(c.width_px * c.height_px for c in cams)
    stride = max(1, int(np.ceil(np.sqrt(total / cfg.max_pixel_samples))))
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("mesh", "tri", "uv", "t", "dirs", "cam", "rgb")}
    sky: dict[str, list[np.ndarray]] = {k: [] for k in ("dirs", "cam", "rgb")}
    casters = FrameCasters(meshes)
    for k, f in enumerate(frames):
        caster, geom_to_mesh = casters.at(log, f, actor_ids)
        for ci, cam in enumerate(cams):
            T = log.T_world_camera(cam.name, f)
            dirs_cam = cam.ray_directions(1)[::stride, ::stride].reshape(-1, 3)
            rgb = log.image(cam.name, f)[::stride, ::stride].reshape(-1, 3)
            dirs = (dirs_cam @ T[:3, :3].T).astype(np.float64)
            hits = caster.cast(T[:3, 3], dirs)
            h = hits.hit
            out["mesh"].append(geom_to_mesh[hits.geometry[h]].astype(np.int16))
            out["tri"].append(hits.triangle[h].astype(np.int32))
            out["uv"].append(hits.uv[h].astype(np.float32))
            out["t"].append(hits.t_m[h].astype(np.float32))
            out["dirs"].append(dirs[h].astype(np.float32))
            out["cam"].append(np.full(h.sum(), ci, np.int8))
            out["rgb"].append(rgb[h])
            sky["dirs"].append(dirs[~h].astype(np.float32))
            sky["cam"].append(np.full((~h).sum(), ci, np.int8))
            sky["rgb"].append(rgb[~h])
        if progress:
            progress("casting training pixels", k + 1, len(frames))
    cat = {k: np.concatenate(v) for k, v in out.items()}
    return cat, SkySamples(*(np.concatenate(sky[k]) for k in ("dirs", "cam", "rgb"))), stride


def build_atlases(meshes, samples: dict, pixel_angle_rad: float, cfg: ReconConfig) -> list[TexelAtlas]:
    """Texel width per triangle = footprint of one pixel at the closest training view."""
    atlases = []
    for m, (v, t) in enumerate(meshes):
        sel = samples["mesh"] == m
        closest = np.full(len(t), np.inf)
        np.minimum.at(closest, samples["tri"][sel], samples["t"][sel])
        size = np.where(np.isfinite(closest), np.maximum(cfg.min_texel_m, closest * pixel_angle_rad), 1e3)
        atlases.append(TexelAtlas.build(v, t, size, cfg.max_texel_resolution))
    return atlases


def fill_unobserved(
    values: np.ndarray, observed: np.ndarray, centres: np.ndarray, mirror: bool = False, max_distance_m: float = np.inf,
    report: Callable[[int, int], None] | None = None, chunk: int = 500_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Copy each unobserved entry from the nearest observed one within ``max_distance_m``; with
    ``mirror`` the nearest to its mirror image in y (left-right symmetry).

    Returns (values, mask of entries now holding observed values). ``report(done, total)`` is told
    the progress of the queries (made in chunks of ``chunk``).
    """
    values, filled = values.copy(), observed.copy()
    if observed.all() or not observed.any():
        return values, filled
    obs_idx = np.nonzero(observed)[0]
    missing = np.nonzero(~observed)[0]
    tree = cKDTree(centres[observed])
    for start in range(0, len(missing), chunk):
        sel = missing[start:start + chunk]
        query = centres[sel] * (np.array([1.0, -1.0, 1.0]) if mirror else 1.0)
        dist, nn = tree.query(query, k=1, workers=-1, distance_upper_bound=max_distance_m)
        ok = np.isfinite(dist)
        values[sel[ok]] = values[obs_idx[nn[ok]]]
        filled[sel[ok]] = True
        if report:
            report(start + len(sel), len(missing))
    return values, filled


def smooth_sparse_texels(
    features: np.ndarray, count: np.ndarray, centres: np.ndarray, k: int, chunk: int = 200_000,
    report: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Blend texels seen by few pixels with their neighbours: one or two samples are noisy
    (sensor noise, transient shadows, pixels straddling an edge)."""
    weak = np.nonzero(count < 3)[0]
    if k <= 1 or len(weak) == 0 or len(features) <= k:
        return features
    tree = cKDTree(centres)
    out = features.copy()
    for start in range(0, len(weak), chunk):  # in chunks: bounded memory
        sel = weak[start:start + chunk]
        _, nn = tree.query(centres[sel], k=k, workers=-1)
        w_nb = np.maximum(count[nn[:, 1:]], 0.5).astype(np.float32)  # neighbours weighted by evidence
        own = (count[sel] + 0.5).astype(np.float32)
        total = np.einsum("nk,nkd->nd", w_nb, features[nn[:, 1:]]) + features[sel] * own[:, None]
        out[sel] = total / (own + w_nb.sum(axis=1))[:, None]
        if report:
            report(start + len(sel), len(weak))
    return out


def fit_lidar(
    log: DrivingLog,
    frames: list[int],
    meshes: list[tuple[np.ndarray, np.ndarray]],
    actor_ids: list[str],
    progress: Progress | None = None,
    smoothing_m: float = 0.25,
    seed: int = 0,
):
    """The global intensity fall-off, per-triangle reflectivity (pooled over ``smoothing_m``
    voxels), per-vertex ray-drop rates and the ray-drop MLP (see ``render/ray_drop.py``)."""
    lidar = log.rig.lidar
    dirs_l = lidar.ray_directions().reshape(-1, 3)
    rec: dict[str, list[np.ndarray]] = {k: [] for k in ("mesh", "tri", "uv", "point", "frame", "ret", "I", "cos", "r", "edge", "missing")}
    casters = FrameCasters(meshes)
    for k, f in enumerate(frames):
        caster, geom_to_mesh = casters.at(log, f, actor_ids)
        T = log.T_world_lidar(f)
        dirs = dirs_l @ T[:3, :3].T
        hits = caster.cast(T[:3, 3], dirs)
        sweep = log.lidar(f)
        ray = sweep.beam.astype(np.int64) * lidar.azimuth_bins + sweep.azimuth_index
        returned = np.zeros(len(dirs), bool)
        returned[ray] = True
        intensity = np.zeros(len(dirs))
        intensity[ray] = sweep.intensity
        pred = hits.hit & (hits.t_m >= lidar.min_range_m) & (hits.t_m <= lidar.max_range_m)
        edge, missing = range_image_edges(np.where(pred, hits.t_m, np.inf).reshape(lidar.num_beams, lidar.azimuth_bins))
        idx = np.flatnonzero(pred)
        geom = hits.geometry[idx]
        point = T[:3, 3] + dirs[idx] * hits.t_m[idx, None]
        for g in np.unique(geom[geom > 0]):  # actors: hit points in the box frame
            sel = geom == g
            pose = caster.poses[g - 1]
            point[sel] = (point[sel] - pose[:3, 3]) @ pose[:3, :3]
        rec["mesh"].append(geom_to_mesh[geom])
        rec["tri"].append(hits.triangle[idx])
        rec["uv"].append(hits.uv[idx])
        rec["point"].append(point)
        rec["frame"].append(np.full(len(idx), k, np.int32))
        rec["ret"].append(returned[idx])
        rec["I"].append(intensity[idx])
        rec["cos"].append(np.abs(np.sum(hits.normals[idx] * dirs[idx], axis=1)))
        rec["r"].append(hits.t_m[idx])
        rec["edge"].append(edge.reshape(-1)[idx])
        rec["missing"].append(missing.reshape(-1)[idx])
        if progress:
            progress("fitting LiDAR model", k + 1, len(frames))
    d = {k: np.concatenate(v) for k, v in rec.items()}
    key = d["mesh"].astype(np.int64) << 40 | d["tri"]
    ret = d["ret"]
    # fall-off: choose (alpha, beta) that best explains intensities with one reflectivity per triangle
    rng = np.random.default_rng(seed)
    sub = np.nonzero(ret)[0]
    sub = rng.choice(sub, size=min(len(sub), 300_000), replace=False) if len(sub) else sub
    with stage_step(progress, "fitting LiDAR intensity"):
        best = _fit_intensity_falloff(d, key, sub)
    falloff = LidarIntensityModel(float(best[1]), float(best[2])).falloff(d["cos"], d["r"])
    reflectivity = []
    for m, (v, t) in enumerate(meshes):
        sel = (d["mesh"] == m) & ret
        tri = d["tri"][sel]
        num = np.bincount(tri, d["I"][sel] * falloff[sel], minlength=len(t))
        den = np.bincount(tri, falloff[sel] ** 2, minlength=len(t))
        centroids = v[t].mean(axis=1) if len(t) else np.zeros((0, 3))
        # pool the sparse per-triangle evidence over small neighbourhoods (voxels)
        vox = np.unique(np.floor(centroids / smoothing_m).astype(np.int64), axis=0, return_inverse=True)[1].reshape(-1)
        pooled_num, pooled_den = (np.bincount(vox, x)[vox] for x in (num, den))
        refl, _ = fill_unobserved((num + pooled_num) / np.maximum(den + pooled_den, 1e-9), pooled_den > 0, centroids)
        reflectivity.append(np.clip(refl, 0, 1.5).astype(np.float32))
    samples = DropSamples(d["mesh"], d["tri"], d["uv"], d["point"], d["frame"], ~ret, d["cos"], d["r"] / lidar.max_range_m,
                          d["edge"], d["missing"])
    del d
    with stage_step(progress, "fitting LiDAR ray drop"):
        rates, drop_model = fit_ray_drop(meshes, samples, seed=seed)
    model = LidarIntensityModel(float(best[1]), float(best[2]), drop_model)
    return model, list(zip(reflectivity, rates))


def _fit_intensity_falloff(d: dict[str, np.ndarray], key: np.ndarray, sub: np.ndarray) -> tuple[float, float, float]:
    """(error, alpha, beta) of the fall-off that best explains the intensities of the returns ``sub``
    with one reflectivity per triangle (``key``), by grid search."""
    best = (np.inf, 0.5, 0.0)
    if len(sub) == 0:
        return best
    inv = np.unique(key[sub], return_inverse=True)[1].reshape(-1)
    for alpha in np.linspace(0.0, 0.9, 10):
        for beta in np.linspace(0.0, 0.03, 13):
            g = (alpha + (1 - alpha) * d["cos"][sub]) * np.exp(-beta * d["r"][sub])
            # least-squares reflectivity per triangle: sum(I g) / sum(g^2)
            rho = np.bincount(inv, d["I"][sub] * g) / np.maximum(np.bincount(inv, g * g), 1e-9)
            err = np.sum((d["I"][sub] - rho[inv] * g) ** 2)
            if err < best[0]:
                best = (err, alpha, beta)
    return best


@contextmanager
def stage_step(progress: Progress | None, name: str) -> Iterator[None]:
    """Reports a stage without inner steps as 0/1 on entry and 1/1 when done, so a long step is
    never silent (the command line shows it as its own bar with the time elapsed)."""
    if progress:
        progress(name, 0, 1)
    yield
    if progress:
        progress(name, 1, 1)


def fit_local_skies(model: SceneModel, log: DrivingLog, frames: list[int], progress: Progress | None = None) -> SkyModel:
    """One environment map per training frame: the mean exposure-corrected colour of that frame's
    pixels whose rays miss the reconstruction, per direction bin of the global map; bins the frame
    did not see keep the global map's colour."""
    sky = model.sky
    h, w, _ = sky.image.shape
    maps = np.empty((len(frames), h, w, 3), np.float32)
    for k, f in enumerate(frames):
        placed = model.place({a: p for a, p in log.actor_poses_at(f).items() if a in model.actors})
        total, count = np.zeros((h * w, 3)), np.zeros(h * w)
        for cam in log.rig.cameras:
            T = log.T_world_camera(cam.name, f)
            dirs = cam.ray_directions(1).reshape(-1, 3) @ T[:3, :3].T
            miss = ~placed.cast(T[:3, 3], dirs, normals=False).hit
            if not miss.any():
                continue
            rgb = apply_inverse_exposure(log.image(cam.name, f).reshape(-1, 3)[miss] / 255.0, np.zeros(int(miss.sum()), int),
                                         model.decoder.exposure(cam.name)[None])
            cell = sky_cells(dirs[miss], w, h, sky.min_elevation_rad, sky.max_elevation_rad)
            count += np.bincount(cell, minlength=h * w)
            for c in range(3):
                total[:, c] += np.bincount(cell, rgb[:, c], minlength=h * w)
        seen = count > 0
        local = sky.image.reshape(-1, 3).astype(np.float64).copy()
        local[seen] = total[seen] / count[seen, None]
        maps[k] = np.clip(local, 0, 1).reshape(h, w, 3)
        if progress:
            progress("fitting local sky maps", k + 1, len(frames))
    xy = log.ego_poses[frames][:, :2, 3].astype(np.float32)
    return SkyModel(sky.image, sky.min_elevation_rad, sky.max_elevation_rad, maps, xy)


def reconstruct(
    log: DrivingLog,
    out: str | Path,
    cfg: ReconConfig = ReconConfig(),
    progress: Progress | None = None,
    overwrite: bool = False,
    restart: bool = False,
) -> SceneModel:
    """Reconstruct ``log`` into ``out``; rerunning after an interruption resumes from checkpoints.

    A finished scene in ``out`` is kept unless ``overwrite``; then it is invalidated (its
    ``scene.json`` removed) before any of its files is replaced, so an interrupted rerun never
    leaves a loadable mix of old and new files. ``restart`` discards the checkpoints first.
    """
    out = Path(out)
    prepare_scene_folder(out, overwrite, restart)
    stage = _Stage(out / "checkpoints", log, cfg)
    frames = training_frames(log.num_frames, cfg)
    if not frames:
        raise ValueError(f"log '{log.name}' has no training frames left after holding out every {cfg.holdout_every}th")

    # 1. background geometry
    cached = stage.load_mesh("background_geometry")
    if cached is None:
        bg_v, bg_t = fit_background(log, frames, cfg, progress)
        n_measured = len(bg_t)
        with stage_step(progress, "extruding wall tops, carving them by LiDAR"):
            bg_v, bg_t = extrude_wall_tops(bg_v, bg_t, cfg.wall_min_height_m, cfg.wall_extrusion_m)
            bg_t = carve_unsupported_extrusion(bg_v, bg_t, n_measured, log, frames)
        if cfg.max_triangle_edge_m > 0:  # large priors (ground underlay, extruded walls) in finer triangles
            with stage_step(progress, "splitting large background triangles"):
                bg_v, bg_t = trimesh.remesh.subdivide_to_size(bg_v, bg_t, max_edge=cfg.max_triangle_edge_m)
        stage.save_mesh("background_geometry", bg_v, bg_t)
    else:
        bg_v, bg_t, _ = cached

    # 2. actors
    actor_ids = [t.actor_id for t in log.tracks if t.valid[frames].any()]
    meshes: list[tuple[np.ndarray, np.ndarray]] = [(bg_v, bg_t)]
    actor_points: dict[str, int] = {}
    cached_actors = [stage.load_mesh(f"actor_geometry_{k:04d}") for k in range(len(actor_ids))]
    to_fit = [log.track(a) for a, c in zip(actor_ids, cached_actors) if c is None]
    with stage_step(progress, "gathering actor LiDAR returns"):
        returns = gather_actor_returns(log, to_fit, frames, cfg) if to_fit else {}
    for k, aid in enumerate(actor_ids):
        cached = cached_actors[k]
        if cached is None:
            v, t, npts = fit_actor(log.track(aid), returns.pop(aid), cfg)
            stage.save_mesh(f"actor_geometry_{k:04d}", v, t, num_points=np.array(npts))
        else:
            v, t, arrays = cached
            npts = int(arrays.get("num_points", 0))
        meshes.append((v, t))
        actor_points[aid] = npts
        if progress:
            progress("actor geometry", k + 1, len(actor_ids))

    # 3. appearance
    samples, sky_samples, stride = collect_pixel_samples(log, frames, meshes, actor_ids, cfg, progress)
    fx = float(np.mean([c.intrinsics[0, 0] for c in log.rig.cameras]))
    with stage_step(progress, "building texel atlases"):
        atlases = build_atlases(meshes, samples, cfg.texel_pixel_ratio * stride / fx, cfg)
    texel_offsets = np.concatenate([[0], np.cumsum([a.num_texels for a in atlases])])
    texel = np.empty(len(samples["mesh"]), np.int64)
    for m, atlas in enumerate(atlases):
        sel = samples["mesh"] == m
        texel[sel] = texel_offsets[m] + atlas.lookup(samples["tri"][sel], samples["uv"][sel])
    pixels = PixelSamples(texel, samples["dirs"], samples["cam"], samples["rgb"])
    del samples
    num_texels = int(texel_offsets[-1])
    cam_names = list(log.rig.camera_names)
    rng = np.random.default_rng(cfg.seed)
    with stage_step(progress, "fitting texel colours and exposures"):
        colours, count, exposures = fit_colours_and_exposure(pixels, num_texels, len(cam_names), cfg.exposure_rounds, rng)
    features, decoder, losses = train_decoder(
        pixels, colours, exposures, cam_names, cfg.num_features, cfg.hidden_units, cfg.residual_scale,
        cfg.train_steps, cfg.batch_size, cfg.learning_rate, cfg.seed, stage.folder, cfg.checkpoint_every,
        (lambda d, n: progress("training appearance", d, n)) if progress else None,
    )
    exposures = np.stack([decoder.exposures[c] for c in cam_names])
    with stage_step(progress, "fitting the sky map"):
        sky = fit_sky(sky_samples, exposures)
    observed = count > 0
    filled_features = np.empty_like(features)
    for m, (atlas, (v, t)) in enumerate(zip(atlases, meshes)):
        lo, hi = texel_offsets[m], texel_offsets[m + 1]
        if progress and m == 0:
            progress("filling unseen background texels", 0, 200)
        centres = atlas.texel_centres(v, t)
        feats, obs = features[lo:hi], observed[lo:hi]
        if m > 0:  # actors: the mirrored side first (left-right symmetry prior)
            feats, obs = fill_unobserved(feats, obs, centres, mirror=True, max_distance_m=0.15)
        fill_report = smooth_report = None
        if progress and m == 0:  # the background holds most texels: its own bar, two phases of 100 steps
            def fill_report(d: int, n: int) -> None:
                progress("filling unseen background texels", int(100 * d / max(n, 1)), 200)

            def smooth_report(d: int, n: int) -> None:
                progress("filling unseen background texels", 100 + int(100 * d / max(n, 1)), 200)

        feats, _ = fill_unobserved(feats, obs, centres, report=fill_report)
        filled_features[lo:hi] = smooth_sparse_texels(feats, count[lo:hi], centres, cfg.texel_smoothing_k, report=smooth_report)
        if progress:
            progress("filling unseen texels", m + 1, len(meshes))

    # 4. LiDAR
    intensity_model, lidar_attrs = fit_lidar(log, frames, meshes, actor_ids, progress, cfg.lidar_smoothing_m, cfg.seed)

    def surface(m: int) -> SurfaceMesh:
        v, t = meshes[m]
        return SurfaceMesh(
            v.astype(np.float32), t.astype(np.int32), atlases[m],
            filled_features[texel_offsets[m]:texel_offsets[m + 1]].astype(np.float32), *lidar_attrs[m],
            np.minimum(count[texel_offsets[m]:texel_offsets[m + 1]], 65535).astype(np.uint16),
        )

    actors = {
        aid: ActorAsset(aid, log.track(aid).category, log.track(aid).size_m.copy(), surface(k + 1), source=f"log:{log.name}")
        for k, aid in enumerate(actor_ids)
    }
    meta = {
        "log": {"name": log.name, "path": str(Path(log.root).resolve()), "num_frames": log.num_frames},
        "holdout_frames": holdout_frames(log.num_frames, cfg),
        "training_frames": frames,
        "training_ego_xy_yaw": [
            [float(p[0, 3]), float(p[1, 3]), float(np.arctan2(p[1, 0], p[0, 0]))] for p in log.ego_poses[frames]
        ],
        "config": asdict(cfg),
        "stats": {
            "background_triangles": int(len(bg_t)),
            "texels": num_texels,
            "observed_texel_share": float(observed.mean()) if num_texels else 0.0,
            "pixel_stride": stride,
            "training_loss_first": losses[0] if losses else None,
            "training_loss_last": losses[-1] if losses else None,
            "actor_lidar_points": actor_points,
        },
    }
    model = SceneModel(surface(0), actors, decoder, sky, intensity_model, meta)
    sky = fit_local_skies(model, log, frames, progress)
    model = SceneModel(model.background, model.actors, decoder, sky, intensity_model, meta)
    with stage_step(progress, "baking colours, writing the scene"):
        model.save(out)
    shutil.rmtree(stage.folder, ignore_errors=True)
    return model
