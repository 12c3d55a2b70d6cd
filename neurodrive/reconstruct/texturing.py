"""Pixels cast onto the meshes, texel atlases, filling unseen texels, and the per-frame sky maps."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.spatial import cKDTree

from neurodrive.logs.model import DrivingLog
from neurodrive.raycast.base import bounding_radius_m
from neurodrive.raycast.open3d_caster import CompositeCaster, MeshRaycaster
from neurodrive.reconstruct.appearance import (
    SkySamples,
    apply_inverse_exposure,
    sky_cells,
)
from neurodrive.reconstruct.config import Progress, ReconConfig
from neurodrive.scene.model import SceneModel
from neurodrive.scene.sky import SkyModel
from neurodrive.scene.texels import TexelAtlas


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
    stride = max(1, int(np.ceil(np.sqrt(total / cfg.appearance.max_pixel_samples))))
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
        size = np.where(np.isfinite(closest), np.maximum(cfg.appearance.min_texel_m, closest * pixel_angle_rad), 1e3)
        atlases.append(TexelAtlas.build(v, t, size, cfg.appearance.max_texel_resolution))
    return atlases


def fill_unobserved(
    values: np.ndarray,
    observed: np.ndarray,
    centres: np.ndarray,
    mirror: bool = False,
    max_distance_m: float = np.inf,
    report: Callable[[int, int], None] | None = None,
    chunk: int = 500_000,
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
        sel = missing[start : start + chunk]
        query = centres[sel] * (np.array([1.0, -1.0, 1.0]) if mirror else 1.0)
        dist, nn = tree.query(query, k=1, workers=-1, distance_upper_bound=max_distance_m)
        ok = np.isfinite(dist)
        values[sel[ok]] = values[obs_idx[nn[ok]]]
        filled[sel[ok]] = True
        if report:
            report(start + len(sel), len(missing))
    return values, filled


def smooth_sparse_texels(
    features: np.ndarray,
    count: np.ndarray,
    centres: np.ndarray,
    k: int,
    chunk: int = 200_000,
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
        sel = weak[start : start + chunk]
        _, nn = tree.query(centres[sel], k=k, workers=-1)
        w_nb = np.maximum(count[nn[:, 1:]], 0.5).astype(np.float32)  # neighbours weighted by evidence
        own = (count[sel] + 0.5).astype(np.float32)
        total = np.einsum("nk,nkd->nd", w_nb, features[nn[:, 1:]]) + features[sel] * own[:, None]
        out[sel] = total / (own + w_nb.sum(axis=1))[:, None]
        if report:
            report(start + len(sel), len(weak))
    return out


def fit_local_skies(
    model: SceneModel, log: DrivingLog, frames: list[int], progress: Progress | None = None
) -> SkyModel:
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
            rgb = apply_inverse_exposure(
                log.image(cam.name, f).reshape(-1, 3)[miss] / 255.0,
                np.zeros(int(miss.sum()), int),
                model.decoder.exposure(cam.name)[None],
            )
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
