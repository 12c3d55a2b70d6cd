"""Pixels cast onto the meshes, texel atlases, filling unseen texels, and the per-frame sky maps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
from PIL import Image
from scipy.spatial import cKDTree

from neurodrive.logs.model import CameraSpec, DrivingLog
from neurodrive.raycast.base import bounding_radius_m
from neurodrive.raycast.open3d_caster import CompositeCaster, MeshRaycaster
from neurodrive.reconstruct.appearance import (
    SkySamples,
    apply_inverse_exposure,
    sky_cells,
)
from neurodrive.reconstruct.config import Progress, ReconConfig
from neurodrive.render.rendering import SceneRenderer
from neurodrive.scene.far_field import FarField
from neurodrive.scene.model import SceneModel
from neurodrive.scene.sky import SkyModel
from neurodrive.scene.texels import TexelAtlas
from neurodrive.spatial import near_reference, one_per_cell


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


def behind_actor_boxes(
    log: DrivingLog, frame: int, origin: np.ndarray, dirs: np.ndarray, t_background: np.ndarray, margin_m: float
) -> np.ndarray:
    """(n,) bool: rays whose background hit (distance ``t_background``, inf: none; 0: not background)
    lies behind an actor box (grown by ``margin_m``) valid at ``frame``. Their pixels show the actor
    (its mesh is never exact), so they would paint it onto the ground and walls behind it: the ghost
    a removed actor would leave."""
    out = np.zeros(len(dirs), bool)
    for track in log.tracks:
        if not track.valid[frame]:
            continue
        T = track.poses[frame]
        o = (origin - T[:3, 3]) @ T[:3, :3]
        half = track.size_m / 2 + margin_m
        if np.all(np.abs(o) <= half):  # the camera inside a box (a bad track): it would hide everything
            continue
        rays = _rays_towards(origin, dirs, T[:3, 3], 1.001 * float(np.linalg.norm(half)))
        if len(rays) == 0:
            continue
        d = dirs[rays] @ T[:3, :3]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d
            t0, t1 = (-half - o) * inv, (half - o) * inv
        t_near = np.nanmax(np.minimum(t0, t1), axis=1)
        t_far = np.nanmin(np.maximum(t0, t1), axis=1)
        t_bg = t_background[rays]
        enters = (t_near <= t_far) & (t_far > 0) & (np.maximum(t_near, 0) < t_bg)
        out[rays] |= enters & (t_bg > 0)
    return out


def _rays_towards(origin: np.ndarray, dirs: np.ndarray, centre: np.ndarray, radius_m: float) -> np.ndarray:
    """Indices of the unit rays ``dirs`` from ``origin`` that can meet the sphere (``centre``,
    ``radius_m``): those within the cone it subtends (all of them from inside it). Lets each actor box
    be tested against the few rays that point its way, not every pixel of every camera."""
    offset = centre - origin
    distance = float(np.linalg.norm(offset))
    if distance <= radius_m:
        return np.arange(len(dirs))
    cos_cone = np.sqrt(1.0 - (radius_m / distance) ** 2)
    return np.flatnonzero(dirs @ (offset / distance) >= cos_cone)


@dataclass(frozen=True)
class PixelHits:
    """The training pixels whose rays hit the reconstruction (n of them)."""

    mesh: np.ndarray  # (n,) int16 mesh index (0: background, k: actor k - 1)
    triangle: np.ndarray  # (n,) int32
    uv: np.ndarray  # (n, 2) float32 barycentric coordinates of the hit
    t_m: np.ndarray  # (n,) float32 distance to the hit
    dirs: np.ndarray  # (n, 3) float32 ray directions (world)
    camera: np.ndarray  # (n,) int32 exposure group
    rgb: np.ndarray  # (n, 3) uint8
    edge: np.ndarray  # (n,) bool: on an actor's outline or grazing (``actor_edge_or_grazing``)

    @staticmethod
    def concatenate(parts: list[PixelHits]) -> PixelHits:
        return PixelHits(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(PixelHits)))

    @staticmethod
    def empty() -> PixelHits:
        return PixelHits(
            np.zeros(0, np.int16),
            np.zeros(0, np.int32),
            np.zeros((0, 2), np.float32),
            np.zeros(0, np.float32),
            np.zeros((0, 3), np.float32),
            np.zeros(0, np.int32),
            np.zeros((0, 3), np.uint8),
            np.zeros(0, bool),
        )


def collect_pixel_samples(
    log: DrivingLog,
    frames: list[int],
    meshes: list[tuple[np.ndarray, np.ndarray]],
    actor_ids: list[str],
    cfg: ReconConfig,
    progress: Progress | None = None,
) -> tuple[PixelHits, SkySamples, int]:
    """Cast every (strided) training pixel onto the meshes: the pixels that hit, those that miss (sky
    samples), and the pixel stride."""
    cams = log.rig.cameras
    total = sum(c.width_px * c.height_px for f in frames for c in cams if log.has_image(c.name, f))
    stride = max(1, int(np.ceil(np.sqrt(total / cfg.appearance.max_pixel_samples))))
    out: list[PixelHits] = []
    sky: dict[str, list[np.ndarray]] = {k: [] for k in ("dirs", "cam", "rgb")}
    casters = FrameCasters(meshes)
    for k, f in enumerate(frames):
        caster, geom_to_mesh = casters.at(log, f, actor_ids)
        for ci, cam in enumerate(cams):
            if not log.has_image(cam.name, f):
                continue
            T = log.T_world_camera(cam.name, f)
            dirs_cam = cam.ray_directions(1)[::stride, ::stride].reshape(-1, 3)
            rgb = log.image(cam.name, f)[::stride, ::stride].reshape(-1, 3)
            dirs = (dirs_cam @ T[:3, :3].T).astype(np.float64)
            hits = caster.cast(T[:3, 3], dirs)
            background = np.where(hits.hit & (hits.geometry == 0), hits.t_m, np.where(hits.hit, 0.0, np.inf))
            margin = cfg.appearance.behind_actor_margin_m
            keep = ~behind_actor_boxes(log, f, T[:3, 3], dirs, background, margin) if margin >= 0 else True
            h = hits.hit & keep
            grid = (len(range(0, cam.height_px, stride)), len(range(0, cam.width_px, stride)))
            group = ci * len(frames) + k if cfg.appearance.per_image_exposure else ci
            out.append(
                PixelHits(
                    geom_to_mesh[hits.geometry[h]].astype(np.int16),
                    hits.triangle[h].astype(np.int32),
                    hits.uv[h].astype(np.float32),
                    hits.t_m[h].astype(np.float32),
                    dirs[h].astype(np.float32),
                    np.full(h.sum(), group, np.int32),
                    rgb[h],
                    actor_edge_or_grazing(hits, dirs, grid)[h],
                )
            )
            m = ~hits.hit & keep
            sky["dirs"].append(dirs[m].astype(np.float32))
            sky["cam"].append(np.full(int(m.sum()), group, np.int32))
            sky["rgb"].append(rgb[m])
        if progress:
            progress("casting training pixels", k + 1, len(frames))
    if not out:  # no camera image on any training frame (a LiDAR-only log)
        return PixelHits.empty(), SkySamples(np.zeros((0, 3)), np.zeros(0, int), np.zeros((0, 3))), stride
    return PixelHits.concatenate(out), SkySamples(*(np.concatenate(sky[k]) for k in ("dirs", "cam", "rgb"))), stride


def actor_edge_or_grazing(hits, dirs: np.ndarray, grid: tuple[int, int], min_cos: float = 0.25) -> np.ndarray:
    """(n,) bool: actor hits on the actor's image outline (a grid neighbour sees something else) or
    at grazing incidence. An actor's mesh and box are never exact, so these pixels often show what
    lies behind it (a tree, the road) and would paint it onto the actor's edges."""
    geometry = hits.geometry.reshape(grid)
    padded = np.pad(geometry, 1, mode="edge")
    h, w = grid
    edge = np.zeros(grid, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= padded[dy : dy + h, dx : dx + w] != geometry
    cos = np.abs(np.einsum("ij,ij->i", hits.normals.astype(np.float64), dirs))
    return (hits.geometry > 0) & (edge.reshape(-1) | (cos < min_cos))


def build_atlases(meshes, samples: PixelHits, pixel_angle_rad: float, cfg: ReconConfig) -> list[TexelAtlas]:
    """Texel width per triangle = footprint of one pixel at the closest training view."""
    atlases = []
    for m, (v, t) in enumerate(meshes):
        sel = samples.mesh == m
        closest = np.full(len(t), np.inf)
        np.minimum.at(closest, samples.triangle[sel], samples.t_m[sel])
        size = np.where(np.isfinite(closest), np.maximum(cfg.appearance.min_texel_m, closest * pixel_angle_rad), 1e3)
        atlases.append(TexelAtlas.build(v, t, size, cfg.appearance.max_texel_resolution))
    return atlases


FAR_FILL_CELL_M = 1.0  # an unobserved entry with no observed one in its cell or the 26 around it is "far"


def fill_unobserved(
    values: np.ndarray,
    observed: np.ndarray,
    centres: np.ndarray,
    mirror: bool = False,
    max_distance_m: float = np.inf,
    report: Callable[[int, int], None] | None = None,
    chunk: int = 500_000,
    k: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Copy each unobserved entry from the nearest observed one within ``max_distance_m``; with
    ``mirror`` the nearest to its mirror image in y (left-right symmetry). ``k`` > 1: the
    inverse-square-distance weighted mean of the ``k`` nearest (a smooth fill, not Voronoi blocks).

    Without a distance limit, entries far from every observed one (none in their ``FAR_FILL_CELL_M``
    cell or the 26 around it) take the nearest of one observed entry per such cell: the same colours
    at that distance, without a k-d tree query's slow search through a large empty region.

    Returns (values, mask of entries now holding observed values). ``report(done, total)`` is told
    the progress of the queries (made in chunks of ``chunk``).
    """
    values, filled = values.copy(), observed.copy()
    if observed.all() or not observed.any():
        return values, filled
    obs_idx = np.nonzero(observed)[0]
    missing = np.nonzero(~observed)[0]
    query = centres[missing] * (np.array([1.0, -1.0, 1.0]) if mirror else 1.0)
    near = np.ones(len(missing), bool)
    if not np.isfinite(max_distance_m):
        near = near_reference(query, centres[obs_idx], FAR_FILL_CELL_M)
    sources = [(obs_idx, near), (obs_idx[one_per_cell(centres[obs_idx], FAR_FILL_CELL_M)], ~near)]
    step, done = max(1, chunk // k), 0
    for source, wanted in sources:
        rows = np.flatnonzero(wanted)
        if len(rows) == 0:
            continue
        tree = cKDTree(centres[source])
        for start in range(0, len(rows), step):
            part = rows[start : start + step]
            dist, nn = tree.query(query[part], k=k, workers=-1, distance_upper_bound=max_distance_m)
            ok = _blend_nearest(values, missing[part], source, dist, nn, k)
            filled[missing[part][ok]] = True
            done += len(part)
            if report:
                report(done, len(missing))
    return values, filled


def _blend_nearest(values: np.ndarray, targets: np.ndarray, source: np.ndarray, dist, nn, k: int) -> np.ndarray:
    """Writes into ``values[targets]`` the nearest source entry (k = 1) or the inverse-square-distance
    weighted mean of the ``k`` nearest (``dist``, ``nn`` from a k-d tree over ``source``); returns
    which targets had one."""
    if k == 1:
        ok = np.isfinite(dist)
        values[targets[ok]] = values[source[nn[ok]]]
        return ok
    found = np.isfinite(dist)
    ok = found[:, 0]
    w = np.where(found, 1.0 / np.maximum(dist, 1e-3) ** 2, 0.0)[ok].astype(np.float32)
    w /= w.sum(axis=1, keepdims=True)
    neighbours = values[source[np.where(found, nn, 0)[ok]]]  # (n, k, C)
    values[targets[ok]] = np.einsum("nk,nkc->nc", w, neighbours.reshape(len(w), k, -1)).reshape((-1, *values.shape[1:]))
    return ok


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
    model: SceneModel, log: DrivingLog, frames: list[int], cfg: ReconConfig, progress: Progress | None = None
) -> SkyModel:
    """One environment map per training frame: the mean exposure-corrected colour of that frame's
    pixels whose rays miss the reconstruction, per direction bin of the global map; bins the frame
    did not see keep the global map's colour. With ``cfg.appearance.far_field_depth_m`` > 0 those
    pixels are also kept as photos (``scene/far_field.py``)."""
    sky = model.sky
    frames = [f for f in frames if any(log.has_image(c, f) for c in log.rig.camera_names)]
    if not frames:
        return sky
    h, w, _ = sky.image.shape
    maps = np.empty((len(frames), h, w, 3), np.float32)
    total_px = sum(c.width_px * c.height_px for f in frames for c in log.rig.cameras if log.has_image(c.name, f))
    photos = FarFieldPhotos(min(1.0, float(np.sqrt(cfg.appearance.far_field_pixels / max(total_px, 1)))))
    # photos kept at a fraction of their resolution need rays only at that density: every stride-th pixel
    stride = max(1, int(1.0 / photos.scale))
    renderer = SceneRenderer(model)
    for k, f in enumerate(frames):
        placed = renderer.place({a: p for a, p in log.actor_poses_at(f).items() if a in model.actors})
        total, count = np.zeros((h * w, 3)), np.zeros(h * w)
        for cam in log.rig.cameras:
            if not log.has_image(cam.name, f):
                continue
            T = log.T_world_camera(cam.name, f)
            grid = cam.ray_directions(1)[::stride, ::stride]
            dirs = grid.reshape(-1, 3) @ T[:3, :3].T
            miss = ~placed.cast(T[:3, 3], dirs, normals=False).hit
            if not miss.any():
                continue
            image = log.image(cam.name, f)
            exposure = model.decoder.exposure_at(cam.name, f)[None]
            rgb = apply_inverse_exposure(
                image[::stride, ::stride].reshape(-1, 3) / 255.0, np.zeros(len(miss), int), exposure
            )
            if cfg.appearance.far_field_depth_m > 0 and stride == 1:
                photos.add(cam, T, rgb.reshape(cam.height_px, cam.width_px, 3), miss.reshape(cam.height_px, -1))
            elif cfg.appearance.far_field_depth_m > 0:
                photos.add_strided(cam, T, image, miss.reshape(grid.shape[:2]), stride, exposure)
            rgb = rgb[miss]
            cell = sky_cells(dirs[miss], w, h, sky.min_elevation_rad, sky.max_elevation_rad)
            count += np.bincount(cell, minlength=h * w)
            for c in range(3):
                total[:, c] += np.bincount(cell, rgb[:, c], minlength=h * w)
        seen = count > 0
        local = sky.image.reshape(-1, 3).astype(np.float64).copy()
        local[seen] = total[seen] / count[seen, None]
        maps[k] = np.clip(local, 0, 1).reshape(h, w, 3)
        if progress:
            progress("fitting local sky maps and far-field photos", k + 1, len(frames))
    xy = log.ego_poses[frames][:, :2, 3].astype(np.float32)
    far = photos.far_field(cfg.appearance.far_field_depth_m) if photos.images else None
    return SkyModel(sky.image, sky.min_elevation_rad, sky.max_elevation_rad, maps, xy, far)


class FarFieldPhotos:
    """Collects the training photos' missing pixels at ``scale`` of their resolution (one size: the
    largest camera's, smaller cameras padded with invalid pixels)."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.images: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []
        self.intrinsics: list[np.ndarray] = []
        self.distortion: list[np.ndarray] = []
        self.poses: list[np.ndarray] = []

    def add(self, cam: CameraSpec, T_world_camera: np.ndarray, rgb: np.ndarray, miss: np.ndarray) -> None:
        w, h = max(1, round(cam.width_px * self.scale)), max(1, round(cam.height_px * self.scale))
        image = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
        valid = miss
        if (w, h) != (cam.width_px, cam.height_px):
            image = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BOX))
            coverage = np.asarray(Image.fromarray(miss.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BOX))
            valid = coverage >= 250  # only cells whose pixels all missed
        self._append(cam, T_world_camera, image, valid)

    def add_strided(
        self,
        cam: CameraSpec,
        T_world_camera: np.ndarray,
        image: np.ndarray,
        miss: np.ndarray,
        stride: int,
        exposure: np.ndarray,
    ) -> None:
        """As :meth:`add`, from the recorded image (uint8) and the miss mask of every ``stride``-th
        pixel: the image is scaled down first and its exposure undone after (both are linear), the
        mask is widened back to full size for the coverage test."""
        w, h = max(1, round(cam.width_px * self.scale)), max(1, round(cam.height_px * self.scale))
        small = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BOX)).reshape(-1, 3) / 255.0
        rgb = apply_inverse_exposure(small, np.zeros(len(small), int), exposure).reshape(h, w, 3)
        full = np.repeat(np.repeat(miss, stride, axis=0), stride, axis=1)[: cam.height_px, : cam.width_px]
        coverage = np.asarray(Image.fromarray(full.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BOX))
        valid = coverage >= 250  # only cells whose pixels all missed
        self._append(cam, T_world_camera, np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), valid)

    def _append(self, cam: CameraSpec, T_world_camera: np.ndarray, image: np.ndarray, valid: np.ndarray) -> None:
        """One photo at this scale (uint8 image, cells that only saw what the mesh misses)."""
        h, w = valid.shape
        K = cam.intrinsics.astype(np.float64).copy()
        K[0] *= w / cam.width_px
        K[1] *= h / cam.height_px
        self.images.append(np.where(valid[..., None], image, 0).astype(np.uint8))
        self.valid.append(valid)
        self.intrinsics.append(K)
        self.distortion.append(np.zeros(5) if cam.distortion is None else np.asarray(cam.distortion, float))
        self.poses.append(T_world_camera)

    def far_field(self, depth_m: float) -> FarField:
        h = max(i.shape[0] for i in self.images)
        w = max(i.shape[1] for i in self.images)
        images = np.zeros((len(self.images), h, w, 3), np.uint8)
        valid = np.zeros((len(self.images), h, w), bool)
        for k, (im, v) in enumerate(zip(self.images, self.valid)):
            images[k, : im.shape[0], : im.shape[1]] = im
            valid[k, : v.shape[0], : v.shape[1]] = v
        return FarField(
            images, valid, np.array(self.intrinsics), np.array(self.distortion), np.array(self.poses), depth_m
        )
