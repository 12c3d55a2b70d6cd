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
   MLP (``lidar/ray_drop.py``), from the sweeps.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import trimesh

from neurodrive.logs.model import ActorTrack, DrivingLog
from neurodrive.reconstruct.actors import fit_actor, gather_actor_returns
from neurodrive.reconstruct.appearance import (
    PixelSamples,
    fit_colours_and_exposure,
    fit_sky,
    train_decoder,
)
from neurodrive.reconstruct.background import carve_unsupported_extrusion, extrude_wall_tops, fit_background
from neurodrive.reconstruct.checkpoints import CheckpointStage, prepare_scene_folder
from neurodrive.reconstruct.config import (
    Progress,
    ReconConfig,
    holdout_frames,
    holdout_protocol,
    stage_step,
    training_frames,
)
from neurodrive.reconstruct.dynamic import auto_tracks
from neurodrive.reconstruct.lidar_fit import fit_lidar
from neurodrive.reconstruct.photo_set import training_photos
from neurodrive.reconstruct.texturing import (
    build_atlases,
    collect_pixel_samples,
    fill_unobserved,
    fit_local_skies,
    smooth_sparse_texels,
)
from neurodrive.scene.decoder import AppearanceDecoder
from neurodrive.scene.meta import SceneLogRef, SceneMeta
from neurodrive.scene.model import SceneModel
from neurodrive.scene.sky import SkyModel
from neurodrive.scene.surface import ActorAsset, SurfaceMesh
from neurodrive.scene.texels import TexelAtlas
from neurodrive.scene.tracks import auto_track_entries, log_with_tracks

__all__ = ["ReconConfig", "holdout_frames", "reconstruct", "training_frames"]


Meshes = list[tuple[np.ndarray, np.ndarray]]  # background first, then one per actor (vertices, triangles)


@dataclass
class Appearance:
    """What the appearance stage produces for every mesh (texels concatenated, mesh m from offsets[m])."""

    atlases: list[TexelAtlas]
    offsets: np.ndarray  # (M + 1,) first texel of each mesh
    features: np.ndarray  # (T, D) filled texel features
    count: np.ndarray  # (T,) training pixels per texel
    decoder: AppearanceDecoder
    sky: SkyModel
    stride: int  # pixel stride used when sampling training pixels
    losses: list[float]


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
    prepare_scene_folder(out, overwrite, restart, log.root)
    stage = CheckpointStage(out / "checkpoints", log, cfg)
    frames = training_frames(log.num_frames, cfg)
    if not frames:
        raise ValueError(f"log '{log.name}' has no training frames left after holding out every {cfg.holdout_every}th")
    sweeps = [f for f in frames if log.lidars_at(f)]  # geometry and the LiDAR model
    if not sweeps:
        raise ValueError(f"log '{log.name}' has no LiDAR sweep on its training frames: geometry is fitted to LiDAR")
    moving, moving_stats = auto_tracks(log, sweeps, cfg.dynamic, progress)
    log = log_with_tracks(log, moving)
    background = background_geometry(log, sweeps, cfg, stage, progress)
    actor_ids = [t.actor_id for t in log.tracks if t.valid[sweeps].any()]
    actor_meshes, actor_points = actor_geometry(log, sweeps, actor_ids, cfg, stage, progress)
    meshes: Meshes = [background, *actor_meshes]
    look = fit_appearance(log, frames, meshes, actor_ids, cfg, stage, progress)
    lidar_models, lidar_attrs = fit_lidar(log, sweeps, meshes, actor_ids, cfg, progress)

    def surface(m: int) -> SurfaceMesh:
        v, t = meshes[m]
        lo, hi = look.offsets[m], look.offsets[m + 1]
        reflectivity, drop_rates = lidar_attrs[m]
        return SurfaceMesh(
            v.astype(np.float32),
            t.astype(np.int32),
            look.atlases[m],
            look.features[lo:hi].astype(np.float32),
            reflectivity,
            drop_rates,
            np.minimum(look.count[lo:hi], 65535).astype(np.uint16),
        )

    actors = {
        aid: ActorAsset(
            aid, log.track(aid).category, log.track(aid).size_m.copy(), surface(k + 1), source=f"log:{log.name}"
        )
        for k, aid in enumerate(actor_ids)
    }
    meta = scene_metadata(log, frames, cfg, look, len(background[1]), actor_points, moving, moving_stats)
    model = SceneModel(surface(0), actors, look.decoder, look.sky, lidar_models, meta)
    sky = fit_local_skies(model, log, frames, cfg, progress)
    photos = training_photos(log, frames, look.decoder, actor_ids) if cfg.appearance.keep_photos else None
    model = SceneModel(model.background, model.actors, look.decoder, sky, lidar_models, meta, photos)
    with stage_step(progress, "baking colours, writing the scene"):
        model.save(out)
    shutil.rmtree(stage.folder, ignore_errors=True)
    return model


def background_geometry(
    log: DrivingLog, frames: list[int], cfg: ReconConfig, stage: CheckpointStage, progress: Progress | None
) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1: the static background mesh (from its checkpoint when there is one)."""
    cached = stage.load_mesh("background_geometry")
    if cached is not None:
        return cached[0], cached[1]
    bg_v, bg_t = fit_background(log, frames, cfg, progress)
    n_measured = len(bg_t)
    with stage_step(progress, "extruding wall tops, carving them by LiDAR"):
        bg_v, bg_t = extrude_wall_tops(bg_v, bg_t, cfg.geometry.wall_min_height_m, cfg.geometry.wall_extrusion_m)
        bg_t = carve_unsupported_extrusion(bg_v, bg_t, n_measured, log, frames, cfg.geometry.carve_pool_m)
    if cfg.geometry.max_triangle_edge_m > 0:  # large priors (ground underlay, extruded walls) in finer triangles
        with stage_step(progress, "splitting large background triangles"):
            bg_v, bg_t = trimesh.remesh.subdivide_to_size(bg_v, bg_t, max_edge=cfg.geometry.max_triangle_edge_m)
    stage.save_mesh("background_geometry", bg_v, bg_t)
    return bg_v, bg_t


def actor_geometry(
    log: DrivingLog,
    frames: list[int],
    actor_ids: list[str],
    cfg: ReconConfig,
    stage: CheckpointStage,
    progress: Progress | None,
) -> tuple[Meshes, dict[str, int]]:
    """Stage 2: one mesh per actor seen in training frames, and how many LiDAR returns built it."""
    meshes: Meshes = []
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
    return meshes, actor_points


def fit_appearance(
    log: DrivingLog,
    frames: list[int],
    meshes: Meshes,
    actor_ids: list[str],
    cfg: ReconConfig,
    stage: CheckpointStage,
    progress: Progress | None,
) -> Appearance:
    """Stage 3: texel atlases, colours and exposures, the decoder MLP, the sky, unseen texels filled.

    A log without camera images (LiDAR only) gets grey surfaces under a grey sky (reported as its own step)."""
    samples, sky_samples, stride = collect_pixel_samples(log, frames, meshes, actor_ids, cfg, progress)
    if len(samples.mesh) == 0:
        return grey_appearance(log, meshes, cfg, progress)
    fx = float(np.mean([c.intrinsics[0, 0] for c in log.rig.cameras]))
    with stage_step(progress, "building texel atlases"):
        atlases = build_atlases(meshes, samples, cfg.appearance.texel_pixel_ratio * stride / fx, cfg)
    offsets = np.concatenate([[0], np.cumsum([a.num_texels for a in atlases])])
    texel = np.empty(len(samples.mesh), np.int64)
    for m, atlas in enumerate(atlases):
        sel = samples.mesh == m
        texel[sel] = offsets[m] + atlas.lookup(samples.triangle[sel], samples.uv[sel])
    use = usable_samples(texel, samples.edge, cfg)
    pixels = PixelSamples(texel[use], samples.dirs[use], samples.camera[use], samples.rgb[use])
    del samples
    cam_names = exposure_groups(log, frames, cfg)
    with stage_step(progress, "fitting texel colours and exposures"):
        colours, count, exposures = fit_colours_and_exposure(
            pixels, int(offsets[-1]), len(cam_names), cfg.appearance.exposure_rounds, np.random.default_rng(cfg.seed)
        )
    group_samples = np.bincount(pixels.camera, minlength=len(cam_names))
    features, decoder, losses = train_decoder(
        pixels,
        colours,
        exposures,
        cam_names,
        cfg.appearance,
        cfg.seed,
        stage.folder,
        (lambda d, n: progress("training appearance", d, n)) if progress else None,
    )
    with stage_step(progress, "fitting the sky map"):
        sky = fit_sky(
            sky_samples,
            np.stack([decoder.exposures[c] for c in cam_names]),
            cfg.appearance.sky_bins_az,
            cfg.appearance.sky_bins_el,
        )
    if cfg.appearance.per_image_exposure:  # novel views: each camera's mean over its images
        for ci, cam in enumerate(log.rig.camera_names):
            own = [g for g in range(ci * len(frames), (ci + 1) * len(frames)) if group_samples[g] >= 100]
            if own:
                decoder.exposures[cam] = np.mean([decoder.exposures[cam_names[g]] for g in own], axis=0)
    filled = fill_unseen_texels(meshes, atlases, offsets, features, count, cfg, progress)
    return Appearance(atlases, offsets, filled, count, decoder, sky, stride, losses)


def usable_samples(texel: np.ndarray, edge: np.ndarray, cfg: ReconConfig) -> np.ndarray:
    """(n,) bool: the samples that colour texels. Samples on an actor's outline (or grazing) often
    show what lies behind it; they are left out where the texel has other samples, and kept where
    they are all it has (a small, distant actor)."""
    if cfg.appearance.actor_edge_samples or not edge.any():
        return np.ones(len(texel), bool)
    interior = np.zeros(int(texel.max()) + 1, bool)
    interior[texel[~edge]] = True
    return ~edge | ~interior[texel]


def exposure_groups(log: DrivingLog, frames: list[int], cfg: ReconConfig) -> list[str]:
    """Names of the exposure groups of the training pixels: "camera@frame" per image, or the cameras."""
    if cfg.appearance.per_image_exposure:
        return [f"{cam}@{f}" for cam in log.rig.camera_names for f in frames]
    return list(log.rig.camera_names)


def grey_appearance(log: DrivingLog, meshes: Meshes, cfg: ReconConfig, progress: Progress | None) -> Appearance:
    """What a log without camera images gets: one grey texel per triangle, a decoder that adds
    nothing, identity exposures, a uniform sky."""
    with stage_step(progress, "no camera images on the training frames: appearance skipped (grey)"):
        atlases = [TexelAtlas.build(v, t, np.full(len(t), 1e3)) for v, t in meshes]
        offsets = np.concatenate([[0], np.cumsum([a.num_texels for a in atlases])])
        d, h = cfg.appearance.num_features, cfg.appearance.hidden_units
        features = np.zeros((int(offsets[-1]), d), np.float32)
        features[:, :3] = 0.5
        decoder = AppearanceDecoder(
            np.zeros((d + 3, h), np.float32),
            np.zeros(h, np.float32),
            np.zeros((h, 3), np.float32),
            np.zeros(3, np.float32),
            cfg.appearance.residual_scale,
            {c: np.eye(3, 4) for c in log.rig.camera_names},
        )
        sky = SkyModel(
            np.full((cfg.appearance.sky_bins_el, cfg.appearance.sky_bins_az, 3), 0.6, np.float32),
            float(np.deg2rad(-10.0)),
            float(np.deg2rad(90.0)),
        )
    return Appearance(atlases, offsets, features, np.zeros(int(offsets[-1])), decoder, sky, 1, [])


def fill_unseen_texels(
    meshes: Meshes,
    atlases: list[TexelAtlas],
    offsets: np.ndarray,
    features: np.ndarray,
    count: np.ndarray,
    cfg: ReconConfig,
    progress: Progress | None,
) -> np.ndarray:
    """Texels no training pixel saw take the nearest seen texel's features (actors: the mirrored side
    first); texels seen by few pixels are smoothed with their neighbours."""
    observed = count > 0
    filled = np.empty_like(features)
    stage = "filling unseen background texels"
    for m, (atlas, (v, t)) in enumerate(zip(atlases, meshes)):
        lo, hi = offsets[m], offsets[m + 1]
        background = m == 0 and progress is not None  # most texels: its own bar, two phases of 100 steps
        if background:
            progress(stage, 0, 200)
        centres = atlas.texel_centres(v, t)
        feats, obs = features[lo:hi], observed[lo:hi]
        if m > 0:  # actors: the mirrored side first (left-right symmetry prior)
            feats, obs = fill_unobserved(feats, obs, centres, mirror=True, max_distance_m=0.15)
        fill_report = (lambda d, n: progress(stage, int(100 * d / max(n, 1)), 200)) if background else None
        smooth_report = (lambda d, n: progress(stage, 100 + int(100 * d / max(n, 1)), 200)) if background else None
        feats, _ = fill_unobserved(feats, obs, centres, report=fill_report, k=cfg.appearance.unseen_fill_k)
        filled[lo:hi] = smooth_sparse_texels(
            feats, count[lo:hi], centres, cfg.appearance.texel_smoothing_k, report=smooth_report
        )
        if progress:
            progress("filling unseen texels", m + 1, len(meshes))
    return filled


def scene_metadata(
    log: DrivingLog,
    frames: list[int],
    cfg: ReconConfig,
    look: Appearance,
    background_triangles: int,
    actor_points: dict[str, int],
    moving: list[ActorTrack],
    moving_stats: dict,
) -> SceneMeta:
    """scene.json's content besides what the scene's parts add when it is saved: source log, frames,
    full config, statistics, the tracks found in the LiDAR."""
    num_texels = int(look.offsets[-1])
    return SceneMeta(
        log=SceneLogRef(name=log.name, path=str(Path(log.root).resolve()), num_frames=log.num_frames),
        holdout_frames=holdout_frames(log.num_frames, cfg),
        holdout_protocol=holdout_protocol(cfg),
        training_frames=frames,
        training_ego_xy_yaw=[
            [float(p[0, 3]), float(p[1, 3]), float(np.arctan2(p[1, 0], p[0, 0]))] for p in log.ego_poses[frames]
        ],
        config=asdict(cfg),
        auto_tracks=auto_track_entries(moving),
        stats={
            "background_triangles": background_triangles,
            "texels": num_texels,
            "observed_texel_share": float((look.count > 0).mean()) if num_texels else 0.0,
            "pixel_stride": look.stride,
            "training_loss_first": look.losses[0] if look.losses else None,
            "training_loss_last": look.losses[-1] if look.losses else None,
            "actor_lidar_points": actor_points,
            "moving_objects": moving_stats,
        },
    )
