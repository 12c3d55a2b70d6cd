"""The LiDAR model fitted from the sweeps: intensity fall-off, per-triangle reflectivity, ray drop."""

from __future__ import annotations

import numpy as np

from neurodrive.lidar.intensity import LidarIntensityModel
from neurodrive.lidar.ray_drop import DropSamples, fit_ray_drop, ray_edges
from neurodrive.logs.model import DrivingLog
from neurodrive.reconstruct.config import Progress, ReconConfig, stage_step
from neurodrive.reconstruct.texturing import FrameCasters, fill_unobserved


def fit_lidar(
    log: DrivingLog,
    frames: list[int],
    meshes: list[tuple[np.ndarray, np.ndarray]],
    actor_ids: list[str],
    cfg: ReconConfig,
    progress: Progress | None = None,
):
    """The global intensity fall-off, per-triangle reflectivity (pooled over ``cfg.lidar.lidar_smoothing_m``
    voxels), per-vertex ray-drop rates and the ray-drop MLP (see ``lidar/ray_drop.py``)."""
    smoothing_m, seed = cfg.lidar.lidar_smoothing_m, cfg.seed
    lidar = log.rig.lidar
    d = lidar_hit_records(log, frames, meshes, actor_ids, progress)
    key = d["mesh"].astype(np.int64) << 40 | d["tri"]
    ret = d["ret"]
    # fall-off: choose (alpha, beta) that best explains intensities with one reflectivity per triangle
    rng = np.random.default_rng(seed)
    sub = np.nonzero(ret)[0]
    sub = rng.choice(sub, size=min(len(sub), cfg.lidar.intensity_samples), replace=False) if len(sub) else sub
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
    samples = DropSamples(
        d["mesh"],
        d["tri"],
        d["uv"],
        d["point"],
        d["frame"],
        ~ret,
        d["cos"],
        d["r"] / lidar.max_range_m,
        d["edge"],
        d["missing"],
    )
    del d
    with stage_step(progress, "fitting LiDAR ray drop"):
        rates, drop_model = fit_ray_drop(
            meshes,
            samples,
            cfg.lidar.ray_drop_folds,
            cfg.lidar.ray_drop_hidden_units,
            cfg.lidar.ray_drop_steps,
            cfg.lidar.ray_drop_batch_size,
            seed,
        )
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


def lidar_hit_records(
    log: DrivingLog,
    frames: list[int],
    meshes: list[tuple[np.ndarray, np.ndarray]],
    actor_ids: list[str],
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Every training ray that hits the reconstruction: mesh, triangle, barycentrics, hit point (actors:
    in the box frame), frame, whether the sensor returned it, its intensity, incidence, range, and
    range-image edge cues."""
    lidar = log.rig.lidar
    pattern = lidar.pattern
    dirs_l = pattern.directions()
    rec: dict[str, list[np.ndarray]] = {
        k: [] for k in ("mesh", "tri", "uv", "point", "frame", "ret", "I", "cos", "r", "edge", "missing")
    }
    casters = FrameCasters(meshes)
    for k, f in enumerate(frames):
        caster, geom_to_mesh = casters.at(log, f, actor_ids)
        T = log.T_world_lidar(f)
        dirs = dirs_l @ T[:3, :3].T
        hits = caster.cast(T[:3, 3], dirs)
        sweep = log.lidar(f)
        ray = pattern.rays_of(sweep)
        returned = np.zeros(len(dirs), bool)
        returned[ray] = True
        intensity = np.zeros(len(dirs))
        intensity[ray] = sweep.intensity
        pred = hits.hit & (hits.t_m >= lidar.min_range_m) & (hits.t_m <= lidar.max_range_m)
        edge, missing = ray_edges(pattern, np.where(pred, hits.t_m, np.inf))
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
        rec["edge"].append(edge[idx])
        rec["missing"].append(missing[idx])
        if progress:
            progress("fitting LiDAR model", k + 1, len(frames))
    return {k: np.concatenate(v) for k, v in rec.items()}
