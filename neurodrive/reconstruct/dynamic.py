"""Moving objects that no track covers: found in the LiDAR, tracked, and turned into actors ("auto-" tracks).

Real logs often come without labels (KITTI raw) or with labels for some classes only. A static
reconstruction fuses their moving traffic into smeared walls. Here:

1. visibility: a return of sweep i lies in space that sweep j saw through when j's ray towards it
   (min range over a 3 x 3 cell neighbourhood of j's spherical grid) went farther by a margin; a
   return seen through by ``min_free_votes`` of the ``neighbour_sweeps`` nearest sweeps is dynamic;
2. clusters: returns between ``ground_clearance_m`` and ``max_object_height_m`` above the lowest
   return of their ground cell are joined into clusters connected in the bird's-eye view; a cluster
   with enough dynamic returns moves;
3. tracks: moving clusters of consecutive sweeps are linked (Hungarian assignment on how well their
   points overlap after the chain's last motion or a centroid shift); each chain gets one box (yaw
   along its points' long side, or its motion when only one face was seen; extent from all its
   returns) and smoothed centre positions; held-out frames between two of its sweeps get
   interpolated poses (their LiDAR is never read). Tracks that hold the ego, drift sideways, or
   duplicate a longer one are dropped.

The tracks join the log's own for the rest of the reconstruction (their returns leave the static
surface; each is reconstructed like a tracked actor, so it can be removed or moved) and are written
to scene.json (``auto_tracks``, ``scene/tracks.py``) so that evaluation and the simulator place them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from neurodrive.geometry import box_corners, invert_pose, pose_xyz_yaw, transform_points
from neurodrive.logs.model import ActorTrack, DrivingLog
from neurodrive.reconstruct.background import _outside_actors
from neurodrive.reconstruct.config import DynamicConfig, Progress
from neurodrive.scene.tracks import AUTO_PREFIX

EL_RANGE_DEG = (-45.0, 45.0)  # rows of the visibility grid


@dataclasses.dataclass
class SweepClusters:
    """One sweep's moving clusters: world points of each, and the share of the sweep's returns that moved."""

    frame: int
    clusters: list[np.ndarray]
    dynamic_share: float


def _sphere_cells(local: np.ndarray, cfg: DynamicConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """(row, col, range) of sensor-frame points on the visibility grid, and its shape."""
    r = np.linalg.norm(local, axis=1)
    az = np.degrees(np.arctan2(local[:, 1], local[:, 0])) % 360.0
    el = np.degrees(np.arcsin(np.clip(local[:, 2] / np.maximum(r, 1e-6), -1, 1)))
    cols = int(round(360.0 / cfg.grid_azimuth_deg))
    rows = int(round((EL_RANGE_DEG[1] - EL_RANGE_DEG[0]) / cfg.grid_elevation_deg))
    col = np.minimum((az / cfg.grid_azimuth_deg).astype(np.int64), cols - 1)
    row = np.clip(((el - EL_RANGE_DEG[0]) / cfg.grid_elevation_deg).astype(np.int64), 0, rows - 1)
    return row, col, r, (rows, cols)


def visibility_grid(local: np.ndarray, cfg: DynamicConfig) -> np.ndarray:
    """Min range per grid cell over its 3 x 3 neighbourhood (inf: no return there), azimuth wrapping."""
    row, col, r, shape = _sphere_cells(local, cfg)
    grid = np.full(shape, np.inf)
    np.minimum.at(grid, (row, col), r)
    return ndimage.minimum_filter(grid, size=3, mode=("nearest", "wrap"))


def seen_through_votes(points_world: list[np.ndarray], poses: list[np.ndarray], cfg: DynamicConfig) -> list[np.ndarray]:
    """Per sweep: how many of its nearest sweeps saw through each of its points."""
    grids = [visibility_grid(transform_points(invert_pose(T), p), cfg) for T, p in zip(poses, points_world)]
    votes = []
    n = len(points_world)
    for i in range(n):
        v = np.zeros(len(points_world[i]), np.int32)
        near = sorted((j for j in range(n) if j != i), key=lambda j: abs(j - i))[: cfg.neighbour_sweeps]
        for j in near:
            row, col, r, _ = _sphere_cells(transform_points(invert_pose(poses[j]), points_world[i]), cfg)
            seen = grids[j][row, col]
            v += (np.isfinite(seen) & (seen > r + cfg.free_margin_m + cfg.free_margin_per_m * r)).astype(np.int32)
        votes.append(v)
    return votes


def height_above_ground(points_world: list[np.ndarray], cfg: DynamicConfig) -> list[np.ndarray]:
    """Per sweep: each return's height (m) above the lowest return of its ground cell (all sweeps pooled)."""
    allp = np.concatenate(points_world)
    cells = np.floor(allp[:, :2] / cfg.ground_cell_m).astype(np.int64)
    keys, inverse = np.unique(cells, axis=0, return_inverse=True)
    low = np.full(len(keys), np.inf)
    np.minimum.at(low, inverse.reshape(-1), allp[:, 2])
    height = allp[:, 2] - low[inverse.reshape(-1)]
    return np.split(height, np.cumsum([len(p) for p in points_world])[:-1])


def moving_clusters(points: np.ndarray, dynamic: np.ndarray, cfg: DynamicConfig) -> list[np.ndarray]:
    """Index arrays of the clusters of ``points`` (above ground, world) that hold enough dynamic returns.
    Clusters are connected in the bird's-eye view (a truck's roof joins its sides)."""
    if len(points) == 0 or dynamic.sum() < cfg.min_dynamic_points:
        return []
    vox, inverse = np.unique(
        np.floor(points[:, :2] / cfg.cluster_voxel_m).astype(np.int64), axis=0, return_inverse=True
    )
    inverse = inverse.reshape(-1)
    centres = (vox + 0.5) * cfg.cluster_voxel_m
    pairs = cKDTree(centres).query_pairs(cfg.cluster_link_m, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(vox), len(vox)))
    label = connected_components(graph, directed=False)[1][inverse]
    n_dyn = np.bincount(label, dynamic.astype(float))
    n_all = np.bincount(label)
    out = []
    for c in np.flatnonzero((n_dyn >= cfg.min_dynamic_points) & (n_dyn >= cfg.min_dynamic_share * n_all)):
        idx = np.flatnonzero(label == c)
        if np.ptp(points[idx, :2], axis=0).max() <= cfg.max_cluster_extent_m:
            out.append(idx)
    return out


def find_moving_clusters(
    log: DrivingLog, sweeps: list[int], cfg: DynamicConfig, progress: Progress | None = None
) -> list[SweepClusters]:
    """Moving clusters (world points) of each sweep, outside every box the log already tracks."""
    poses = [log.T_world_lidar(f) for f in sweeps]
    pts = [transform_points(T, log.lidar(f).xyz_m.astype(np.float64)) for T, f in zip(poses, sweeps)]
    if progress:
        progress("finding moving returns", 0, 3)
    votes = seen_through_votes(pts, poses, cfg)
    if progress:
        progress("finding moving returns", 1, 3)
    heights = height_above_ground(pts, cfg)
    out = []
    for f, p, v, h in zip(sweeps, pts, votes, heights):
        keep = (h > cfg.ground_clearance_m) & (h < cfg.max_object_height_m) & _outside_actors(log, f, p, 0.2, 0.1)
        sub = p[keep]
        dyn = v[keep] >= cfg.min_free_votes
        clusters = [sub[idx] for idx in moving_clusters(sub, dyn, cfg)]
        out.append(SweepClusters(f, clusters, float(sum(len(c) for c in clusters) / max(len(p), 1))))
    if progress:
        progress("finding moving returns", 3, 3)
    return out


def _overlap_cost(previous: np.ndarray, shift: np.ndarray, current: np.ndarray, samples: int = 300) -> float:
    """How far (m) two clusters lie apart in the bird's-eye view after moving the previous one by
    ``shift``: the median distance of one's points to the other's, the smaller of both ways (a
    partly seen truck lies within the whole one)."""
    prev_xy, cur_xy = previous[:, :2] + shift, current[:, :2]
    costs = []
    for a, b in ((cur_xy, prev_xy), (prev_xy, cur_xy)):
        d, _ = cKDTree(b).query(a[:: max(1, len(a) // samples)], k=1)
        costs.append(float(np.median(d)))
    return min(costs)


def _link_cost(chain: list[tuple[int, np.ndarray]], frame: int, cluster: np.ndarray, cfg: DynamicConfig) -> float:
    """Overlap cost of ``cluster`` (on ``frame``) with the chain's last cluster, moved by the chain's
    last motion or, when the centroids lie within ``max_speed_mps`` of each other, onto its centroid."""
    last_frame, last = chain[-1]
    gap_frames = frame - last_frame
    centroid_shift = cluster.mean(axis=0)[:2] - last.mean(axis=0)[:2]
    if np.linalg.norm(centroid_shift) > cfg.max_speed_mps * cfg.sweep_period_s * gap_frames:
        return 1e3
    shifts = [centroid_shift]
    if len(chain) > 1:
        prev_frame, prev = chain[-2]
        velocity = (last.mean(axis=0)[:2] - prev.mean(axis=0)[:2]) / max(last_frame - prev_frame, 1)
        shifts.append(velocity * gap_frames)
    return min(_overlap_cost(last, shift, cluster) for shift in shifts)


def link_clusters(per_sweep: list[SweepClusters], cfg: DynamicConfig) -> list[list[tuple[int, np.ndarray]]]:
    """Chains of (frame, points) of the same object in consecutive sweeps: clusters are linked by
    how well their points overlap those of the chain's last cluster (see ``_link_cost``)."""
    chains: list[list[tuple[int, np.ndarray]]] = []
    open_chains: list[int] = []
    for s in per_sweep:
        linked: dict[int, int] = {}
        if open_chains and s.clusters:
            cost = np.full((len(open_chains), len(s.clusters)), 1e3)
            for a, k in enumerate(open_chains):
                cost[a] = [_link_cost(chains[k], s.frame, cluster, cfg) for cluster in s.clusters]
            for a, b in zip(*linear_sum_assignment(cost)):
                if cost[a, b] <= cfg.track_gate_m:
                    linked[int(b)] = open_chains[a]
        next_open = []
        for b, cluster in enumerate(s.clusters):
            if b in linked:
                chains[linked[b]].append((s.frame, cluster))
                next_open.append(linked[b])
            else:
                chains.append([(s.frame, cluster)])
                next_open.append(len(chains) - 1)
        open_chains = next_open
    return [c for c in chains if len(c) >= cfg.min_track_sweeps]


CAR_TEMPLATE_M = np.array([4.5, 1.85])  # length, width of a car (category size prior)


def chain_to_track(
    chain: list[tuple[int, np.ndarray]], actor_id: str, num_frames: int, sensor_xy: dict[int, np.ndarray] | None = None
) -> ActorTrack:
    """One box over the chain's returns; centre positions smoothed; frames between sweeps interpolated.

    A car seen from one face only (its rear: as wide as a car but short; or its side: as long as a
    car but thin) gets the car template's length or width, grown away from the sensor
    (``sensor_xy``: LiDAR position per frame)."""
    frames = np.array([f for f, _ in chain])
    centroids = np.array([p.mean(axis=0) for _, p in chain])
    motion = centroids[-1, :2] - centroids[0, :2]
    xy = np.concatenate([p[:, :2] - c[:2] for (_, p), c in zip(chain, centroids)])
    spread, axes = np.linalg.eigh(np.cov(xy.T))
    long_side_m = float(np.ptp(xy @ axes[:, -1]))
    elongated = spread[1] >= 4.0 * spread[0] and long_side_m >= 3.0
    if elongated or np.linalg.norm(motion) <= 1.0:  # the long side (centroids of partly seen trucks drift)
        yaw = float(np.arctan2(axes[1, -1], axes[0, -1]))
    else:  # only one face seen (a car ahead or behind): heading from its motion
        yaw = float(np.arctan2(motion[1], motion[0]))
    if len(frames) >= 3:  # smoothed centre path: a quadratic in time
        coef = np.polyfit(frames - frames[0], centroids, deg=min(2, len(frames) - 2))
        centres = np.stack([np.polyval(coef[:, k], frames - frames[0]) for k in range(3)], axis=1)
    else:
        centres = centroids
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.concatenate(
        [(p - ctr) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) for (_, p), ctr in zip(chain, centres)]
    )
    lo, hi = np.percentile(local, 1, axis=0), np.percentile(local, 99, axis=0)
    lo[2] -= 0.3  # down to the ground: the clusters leave out the lowest ``ground_clearance_m``
    offset = (lo + hi) / 2
    size = np.maximum(hi - lo + np.array([0.2, 0.2, 0.1]), [0.4, 0.4, 0.5])
    if sensor_xy:
        away = np.mean([(ctr[:2] - sensor_xy[f]) for f, ctr in zip(frames, centres) if f in sensor_xy], axis=0)
        away_local = np.array([c * away[0] + s * away[1], -s * away[0] + c * away[1]])
        grow_length = size[1] >= 1.4 and size[0] < 0.8 * CAR_TEMPLATE_M[0]  # a rear or front face
        grow_width = 3.0 <= size[0] <= 6.5 and size[1] < 0.8 * CAR_TEMPLATE_M[1]  # a side
        for axis, grow in ((0, grow_length), (1, grow_width)):
            if grow:
                extra = CAR_TEMPLATE_M[axis] - size[axis]
                offset[axis] += np.sign(away_local[axis]) * extra / 2
                size[axis] = CAR_TEMPLATE_M[axis]
    poses = np.tile(np.eye(4), (num_frames, 1, 1))
    valid = np.zeros(num_frames, bool)
    all_frames = np.arange(frames[0], frames[-1] + 1)
    interp = np.stack([np.interp(all_frames, frames, centres[:, k]) for k in range(3)], axis=1)
    world_offset = np.array([c * offset[0] - s * offset[1], s * offset[0] + c * offset[1], offset[2]])
    for f, ctr in zip(all_frames, interp):
        x, y, z = ctr + world_offset
        poses[f] = pose_xyz_yaw(float(x), float(y), float(z), yaw)
        valid[f] = True
    length = float(size[0])
    category = "truck" if length > 6.5 else ("pedestrian" if length < 1.2 and size[1] < 1.2 else "car")
    return ActorTrack(actor_id, category, size, poses, valid, dataset_category="auto (moving LiDAR cluster)")


def holds_the_ego(log: DrivingLog, track: ActorTrack, margin_m: float = 0.5) -> bool:
    """Whether the box comes within ``margin_m`` of the ego origin or a sensor on a frame it is
    valid on (a box fitted to a wrong side of a passing truck; such a track is dropped)."""
    for f in np.flatnonzero(track.valid):
        sensors = [log.ego_poses[f][:3, 3]] + [(log.ego_poses[f] @ c.T_ego_camera)[:3, 3] for c in log.rig.cameras]
        sensors += [(log.ego_poses[f] @ lid.T_ego_lidar)[:3, 3] for lid in log.rig.lidars]
        local = transform_points(invert_pose(track.poses[f]), np.array(sensors))
        if np.any(np.all(np.abs(local) <= track.size_m / 2 + margin_m, axis=1)):
            return True
    return False


def moves_like_traffic(track: ActorTrack, max_lateral_m: float = 1.5) -> bool:
    """Whether the box moves along its heading: sideways drift beyond ``max_lateral_m`` and half the
    forward travel means clusters of different objects were linked."""
    frames = np.flatnonzero(track.valid)
    travel = track.poses[frames[-1], :2, 3] - track.poses[frames[0], :2, 3]
    heading = track.poses[frames[0], :2, 0]
    forward = abs(float(travel @ heading))
    lateral = abs(float(travel[0] * heading[1] - travel[1] * heading[0]))
    return lateral <= max(max_lateral_m, 0.5 * forward)


BOTTOM_RING = (0, 2, 6, 4)  # box_corners of the bottom face, in order around it


def footprint_overlap(a: ActorTrack, b: ActorTrack, frame: int) -> float:
    """Area shared by the two boxes' footprints (bird's-eye view) on ``frame``, as a share of the
    smaller footprint."""
    import shapely

    def footprint(t: ActorTrack) -> shapely.Polygon:
        return shapely.Polygon(box_corners(t.poses[frame], t.size_m)[list(BOTTOM_RING), :2])

    fa, fb = footprint(a), footprint(b)
    smaller = min(fa.area, fb.area)
    return float(fa.intersection(fb).area / smaller) if smaller > 0 else 0.0


def drop_duplicates(tracks: list[ActorTrack], min_overlap: float = 0.3) -> list[ActorTrack]:
    """Of two tracks whose footprints overlap by ``min_overlap`` of the smaller one on a shared
    frame (two vehicles never do), keep the one seen on more frames: the other was fitted to part of
    it. Overlap, not centre distance: a car just ahead of a long truck beside the ego has its centre
    within half the truck's length but is another object."""
    order = sorted(tracks, key=lambda t: -int(t.valid.sum()))
    kept: list[ActorTrack] = []
    for t in order:
        duplicate = False
        for k in kept:
            shared = np.flatnonzero(t.valid & k.valid)
            if len(shared) == 0:
                continue
            if max(footprint_overlap(t, k, int(f)) for f in shared) >= min_overlap:
                duplicate = True
                break
        if not duplicate:
            kept.append(t)
    return sorted(kept, key=lambda t: t.actor_id)


def auto_tracks(
    log: DrivingLog, sweeps: list[int], cfg: DynamicConfig, progress: Progress | None = None
) -> tuple[list[ActorTrack], dict]:
    """Actors for the moving objects no track covers, and what was found (for scene.json). Moving
    returns are found in the primary LiDAR's sweeps (its ray pattern gives the free-space votes)."""
    sweeps = [f for f in sweeps if log.has_lidar(f)]
    if not cfg.enabled or len(sweeps) < 2:
        return [], {"enabled": cfg.enabled, "tracks": 0, "note": "needs at least 2 sweeps" if cfg.enabled else ""}
    per_sweep = find_moving_clusters(log, sweeps, cfg, progress)
    chains = link_clusters(per_sweep, cfg)
    sensor_xy = {f: log.T_world_lidar(f)[:2, 3] for f in sweeps}
    tracks = [chain_to_track(ch, f"{AUTO_PREFIX}{k:03d}", log.num_frames, sensor_xy) for k, ch in enumerate(chains)]
    tracks = drop_duplicates([t for t in tracks if not holds_the_ego(log, t) and moves_like_traffic(t)])
    stats = {
        "enabled": True,
        "tracks": len(tracks),
        "moving_return_share": float(np.mean([s.dynamic_share for s in per_sweep])),
        "clusters_per_sweep": float(np.mean([len(s.clusters) for s in per_sweep])),
    }
    return tracks, stats
