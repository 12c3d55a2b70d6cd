"""The LiDAR model fitted from the sweeps: intensity fall-off, per-triangle reflectivity, ray drop."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from neurodrive.lidar.intensity import LidarIntensityModel
from neurodrive.lidar.ray_drop import DropSamples, HitRays, fit_ray_drop
from neurodrive.lidar.sensor import LidarSpec
from neurodrive.logs.model import DrivingLog
from neurodrive.reconstruct.config import Progress, ReconConfig, stage_step
from neurodrive.reconstruct.texturing import FrameCasters, fill_unobserved
from neurodrive.spatial import voxel_labels


@dataclass(frozen=True)
class LidarHits:
    """The training rays that hit the reconstruction (n of them, every LiDAR): where each hit, what the
    sensor measured, and the ray-drop cues (``HitRays``)."""

    mesh: np.ndarray  # (n,) mesh index (0: background, k: actor k - 1)
    triangle: np.ndarray  # (n,)
    uv: np.ndarray  # (n, 2) barycentric coordinates of the hit
    point: np.ndarray  # (n, 3) hit point (actors: in the box frame), m
    frame: np.ndarray  # (n,) position of the ray's frame among the training frames
    sensor: np.ndarray  # (n,) the ray's LiDAR, its index among the fitted ones
    returned: np.ndarray  # (n,) bool: the sensor measured a return on this ray
    intensity: np.ndarray  # (n,) measured intensity (0 where dropped)
    cos_incidence: np.ndarray  # (n,)
    range_m: np.ndarray  # (n,) distance to the mesh hit
    relative_range: np.ndarray  # (n,) range / the LiDAR's maximum range
    edge: np.ndarray  # (n,)
    missing: np.ndarray  # (n,)

    @staticmethod
    def concatenate(parts: list[LidarHits]) -> LidarHits:
        return LidarHits(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(LidarHits)))

    def drop_samples(self) -> DropSamples:
        """What ray-drop fitting reads of these rays."""
        return DropSamples(
            self.mesh,
            self.triangle,
            self.uv,
            self.point,
            self.frame,
            ~self.returned,
            self.cos_incidence,
            self.relative_range,
            self.edge,
            self.missing,
            self.sensor,
        )


def fit_lidar(
    log: DrivingLog,
    frames: list[int],
    meshes: list[tuple[np.ndarray, np.ndarray]],
    actor_ids: list[str],
    cfg: ReconConfig,
    progress: Progress | None = None,
) -> tuple[dict[str, LidarIntensityModel], list[tuple[np.ndarray, np.ndarray]]]:
    """Each LiDAR's model (intensity fall-off and gain, ray-drop MLP; by name, rig order) and, per mesh,
    the surface's reflectivity per triangle (pooled over ``cfg.lidar.lidar_smoothing_m`` voxels) and
    its per-vertex ray-drop rates, both fitted on the rays of every LiDAR (see ``lidar/ray_drop.py``)."""
    smoothing_m, seed = cfg.lidar.lidar_smoothing_m, cfg.seed
    lidars = [lid for lid in log.rig.lidars if any(log.has_lidar(f, lid.name) for f in frames)]
    casters = FrameCasters(meshes)  # one set of acceleration structures for every LiDAR
    hits = LidarHits.concatenate(
        [lidar_hit_records(log, lid, k, frames, casters, actor_ids, progress) for k, lid in enumerate(lidars)]
    )
    key = hits.mesh.astype(np.int64) << 40 | hits.triangle
    ret, sensor = hits.returned, hits.sensor
    # fall-off of each LiDAR: the (alpha, beta) that best explain its intensities with one reflectivity per triangle
    rng = np.random.default_rng(seed)
    falloffs = []
    with stage_step(progress, "fitting LiDAR intensity"):
        for k in range(len(lidars)):
            sub = np.nonzero(ret & (sensor == k))[0]
            sub = rng.choice(sub, size=min(len(sub), cfg.lidar.intensity_samples), replace=False) if len(sub) else sub
            falloffs.append(_fit_intensity_falloff(hits, key, sub)[1:])
    shape = np.empty(len(ret))
    for k, (alpha, beta) in enumerate(falloffs):
        sel = sensor == k
        shape[sel] = LidarIntensityModel(alpha, beta).falloff(hits.cos_incidence[sel], hits.range_m[sel])
    gains = np.ones(len(lidars))
    if len(lidars) > 1:  # each LiDAR's scale against the primary's (on the triangles returns hit)
        seen = _reflectivity(meshes, hits, shape, smoothing_m, fill=False)
        gains = _relative_gains(hits, shape, seen, len(lidars))
    reflectivity = _reflectivity(meshes, hits, shape * gains[sensor], smoothing_m)
    samples = hits.drop_samples()
    del hits
    with stage_step(progress, "fitting LiDAR ray drop"):
        rates, drop_models = fit_ray_drop(
            meshes,
            samples,
            cfg.lidar.ray_drop_folds,
            cfg.lidar.ray_drop_hidden_units,
            cfg.lidar.ray_drop_steps,
            cfg.lidar.ray_drop_batch_size,
            seed,
            num_sensors=len(lidars),
        )
    models = {
        lid.name: LidarIntensityModel(float(a), float(b), drop, float(g))
        for lid, (a, b), drop, g in zip(lidars, falloffs, drop_models, gains)
    }
    return models, list(zip(reflectivity, rates))


def _reflectivity(
    meshes: list[tuple[np.ndarray, np.ndarray]],
    hits: LidarHits,
    g: np.ndarray,
    pool_m: float,
    fill: bool = True,
) -> list[np.ndarray]:
    """Per mesh, each triangle's least-squares reflectivity sum(I g) / sum(g^2) over the returns that hit
    it (``g``: each return's fall-off), pooled over ``pool_m`` voxels; unseen triangles filled in from
    their neighbours (``fill``) or left 0."""
    reflectivity = []
    for m, (v, t) in enumerate(meshes):
        sel = (hits.mesh == m) & hits.returned
        tri = hits.triangle[sel]
        num = np.bincount(tri, hits.intensity[sel] * g[sel], minlength=len(t))
        den = np.bincount(tri, g[sel] ** 2, minlength=len(t))
        centroids = v[t].mean(axis=1) if len(t) else np.zeros((0, 3))
        # pool the sparse per-triangle evidence over small neighbourhoods (voxels)
        vox = voxel_labels(centroids, pool_m)
        pooled_num, pooled_den = (np.bincount(vox, x)[vox] for x in (num, den))
        refl = (num + pooled_num) / np.maximum(den + pooled_den, 1e-9)
        if fill:
            refl, _ = fill_unobserved(refl, pooled_den > 0, centroids)
        reflectivity.append(np.clip(refl, 0, 1.5).astype(np.float32))
    return reflectivity


def _relative_gains(hits: LidarHits, g: np.ndarray, reflectivity: list[np.ndarray], count: int) -> np.ndarray:
    """Each LiDAR's least-squares intensity scale given the surface's reflectivity, relative to the
    primary LiDAR's (1.0)."""
    rho = np.zeros(len(hits.returned))
    for m, refl in enumerate(reflectivity):
        sel = hits.mesh == m
        rho[sel] = refl[hits.triangle[sel]]
    pred = rho * g
    gains = np.ones(count)
    for k in range(count):
        sel = hits.returned & (hits.sensor == k)
        den = float(np.sum(pred[sel] ** 2))
        gains[k] = float(np.sum(hits.intensity[sel] * pred[sel]) / den) if den > 0 else 1.0
    return gains / gains[0] if gains[0] > 0 else np.ones(count)


def _fit_intensity_falloff(hits: LidarHits, key: np.ndarray, sub: np.ndarray) -> tuple[float, float, float]:
    """(error, alpha, beta) of the fall-off that best explains the intensities of the returns ``sub``
    with one reflectivity per triangle (``key``), by grid search."""
    best = (np.inf, 0.5, 0.0)
    if len(sub) == 0:
        return best
    inv = np.unique(key[sub], return_inverse=True)[1].reshape(-1)
    for alpha in np.linspace(0.0, 0.9, 10):
        for beta in np.linspace(0.0, 0.03, 13):
            g = (alpha + (1 - alpha) * hits.cos_incidence[sub]) * np.exp(-beta * hits.range_m[sub])
            # least-squares reflectivity per triangle: sum(I g) / sum(g^2)
            measured = hits.intensity[sub]
            rho = np.bincount(inv, measured * g) / np.maximum(np.bincount(inv, g * g), 1e-9)
            err = np.sum((measured - rho[inv] * g) ** 2)
            if err < best[0]:
                best = (err, alpha, beta)
    return best


def lidar_hit_records(
    log: DrivingLog,
    lidar: LidarSpec,
    sensor: int,
    frames: list[int],
    casters: FrameCasters,
    actor_ids: list[str],
    progress: Progress | None = None,
) -> LidarHits:
    """Every training ray of ``lidar`` (index ``sensor`` among the fitted LiDARs) that hits the
    reconstruction (``casters``: its meshes)."""
    pattern = lidar.pattern
    dirs_l = pattern.directions()
    parts = []
    for k, f in enumerate(frames):
        if not log.has_lidar(f, lidar.name):
            continue
        caster, geom_to_mesh = casters.at(log, f, actor_ids)
        T = log.T_world_lidar(f, lidar.name)
        dirs = dirs_l @ T[:3, :3].T
        hits = caster.cast(T[:3, 3], dirs)
        sweep = log.lidar(f, lidar.name)
        ray = pattern.rays_of(sweep)
        returned = np.zeros(len(dirs), bool)
        returned[ray] = True
        intensity = np.zeros(len(dirs))
        intensity[ray] = sweep.intensity
        rays = HitRays.of_sweep(lidar, hits.hit, hits.t_m, hits.normals, dirs)
        idx = rays.index
        geom = hits.geometry[idx]
        point = T[:3, 3] + dirs[idx] * hits.t_m[idx, None]
        for g in np.unique(geom[geom > 0]):  # actors: hit points in the box frame
            sel = geom == g
            pose = caster.poses[g - 1]
            point[sel] = (point[sel] - pose[:3, 3]) @ pose[:3, :3]
        parts.append(
            LidarHits(
                geom_to_mesh[geom],
                hits.triangle[idx],
                hits.uv[idx],
                point,
                np.full(len(idx), k, np.int32),
                np.full(len(idx), sensor, np.int64),
                returned[idx],
                intensity[idx],
                rays.cos_incidence,
                rays.range_m,
                rays.relative_range,
                rays.edge,
                rays.missing,
            )
        )
        if progress:
            progress(f"fitting the {lidar.name} LiDAR model", k + 1, len(frames))
    return LidarHits.concatenate(parts)
