"""Rendering cameras and LiDAR of a reconstructed scene: ``SceneRenderer`` reads a ``SceneModel``
(plain data) and owns what rendering builds from it (acceleration structures, exposed colours)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from neurodrive.geometry import check_pose
from neurodrive.lidar.pattern import to_image
from neurodrive.lidar.ray_drop import HitRays, barycentric
from neurodrive.lidar.sensor import LidarSpec
from neurodrive.logs.model import CameraSpec
from neurodrive.raycast import CasterBackend
from neurodrive.raycast.embree import shade_texels
from neurodrive.render.photo_blend import PhotoBlendConfig, blend_photos, photo_camera, select_photos
from neurodrive.render.placement import PlacedScene, single_threaded_blas
from neurodrive.render.results import NO_ACTOR, CameraRender, FrameRender, LidarRender, RealismConfidence
from neurodrive.scene.model import SceneModel
from neurodrive.scene.surface import SurfaceMesh

APPEARANCES = ("auto", "photos", "texels")


class SceneRenderer:
    """Cameras and LiDARs of ``scene`` with its actors placed anywhere.

    The renderer builds, once each, the background's acceleration structure per ray caster, the
    baked colours through each camera exposure and each training photo's depth map; placing actors
    builds nothing.
    """

    def __init__(
        self,
        scene: SceneModel,
        caster: str = "auto",
        appearance: str = "auto",
        photo_config: PhotoBlendConfig | None = None,
    ) -> None:
        """``caster``: the ray caster (``raycast.select_backend``: auto, embree or open3d).
        ``appearance``: ``photos`` blends the scene's training photos (``render/photo_blend.py``) and
        keeps texel colours where no photo sees a surface; ``texels`` the texel colours only; ``auto``
        photos when the scene carries any."""
        if appearance not in APPEARANCES:
            raise ValueError(f"appearance must be one of {', '.join(APPEARANCES)}, got {appearance!r}")
        has_photos = scene.photos is not None and len(scene.photos) > 0
        if appearance == "photos" and not has_photos:
            raise ValueError("appearance 'photos': this scene carries no training photos (reconstruct it again)")
        self.scene = scene
        self.caster = caster
        self.appearance = "photos" if appearance == "auto" and has_photos else appearance.replace("auto", "texels")
        self.photo_config = photo_config or PhotoBlendConfig()
        self._exposed: dict[tuple[int, bytes], np.ndarray] = {}
        self._background_handles: dict[str, Any] = {}
        self._photo_depth: dict[int, np.ndarray] = {}

    def photo_depth(self, k: int) -> np.ndarray:
        """(h, w) float32 z-depth (m, inf: nothing) of training photo ``k`` at the blend config's
        ``depth_scale``: the scene cast from where the photo was taken, the actors where they were then."""
        depth = self._photo_depth.get(k)
        if depth is None:
            photos = self.scene.photos
            assert photos is not None
            cam = photo_camera(photos, k, self.photo_config.depth_scale)
            placed = self.place({a: p for a, p in photos.frame_actor_poses(k).items() if a in self.scene.actors})
            T = photos.T_world_camera[k]
            rays = cam.ray_directions(1).reshape(-1, 3)
            dirs = (rays @ T[:3, :3].T).astype(np.float32)
            hits = placed.cast(T[:3, 3], dirs, normals=False, grid=(cam.height_px, cam.width_px))
            z = np.where(hits.hit, hits.t_m * rays[:, 2], np.inf)
            depth = self._photo_depth[k] = z.reshape(cam.height_px, cam.width_px).astype(np.float32)
        return depth

    def _blend_photos(
        self,
        scene: PlacedScene,
        origin: np.ndarray,
        dirs: np.ndarray,
        hits,
        T_camera: np.ndarray,
        exposure: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Colours (through ``exposure``) of every ray blended from the training photos, and which
        rays some photo saw. Hits are looked up at their surface point, misses ``far_depth_m`` along
        the ray."""
        photos = self.scene.photos
        assert photos is not None
        candidates = select_photos(photos, T_camera, self.photo_config)
        depth_maps = [self.photo_depth(int(k)) for k in candidates]
        poses = {g + 1: (a, p) for g, (a, p) in enumerate(zip(scene.actor_ids, scene.poses))}
        geometry = np.where(hits.hit, hits.geometry, -1)
        cfg = self.photo_config
        return blend_photos(photos, candidates, depth_maps, origin, dirs, hits.t_m, geometry, poses, cfg, exposure)

    def background_handle(self, backend: CasterBackend) -> Any:
        """The background mesh in ``backend`` (built once per renderer and backend)."""
        handle = self._background_handles.get(backend.name)
        if handle is None:
            background = self.scene.background
            handle = self._background_handles[backend.name] = backend.mesh(background.vertices, background.triangles)
        return handle

    def place(self, actor_poses: Mapping[str, np.ndarray]) -> PlacedScene:
        """The scene's actors at world-from-box poses, ready to render (no mesh BVH is rebuilt)."""
        return PlacedScene(self, actor_poses)

    def exposed_colours(self, mesh: SurfaceMesh, exposure: np.ndarray) -> np.ndarray:
        """(T,) uint32 per texel: the baked colour through one camera exposure (r, g, b bytes) and
        255 in the fourth byte if training saw the texel. Built once per mesh and exposure."""
        key = (id(mesh), exposure.tobytes())
        cached = self._exposed.get(key)
        if cached is None:
            packed = mesh.baked_rgb_seen.view(np.uint8).reshape(-1, 4).copy()
            colour = packed[:, :3] @ np.ascontiguousarray(exposure[:, :3].T / 255.0, np.float32) + exposure[
                :, 3
            ].astype(np.float32)
            packed[:, :3] = np.round(np.clip(colour, 0.0, 1.0) * 255)
            cached = self._exposed[key] = packed.view(np.uint32).reshape(-1)
        return cached

    def _shade(
        self,
        scene: PlacedScene,
        origin: np.ndarray,
        dirs: np.ndarray,
        exposure: np.ndarray,
        ego_xy_m: np.ndarray,
        view_dependent: bool = False,
        grid: tuple[int, int] | None = None,
        T_camera: np.ndarray | None = None,
    ):
        """Colours (n, 3) in [0, 1] of rays from ``origin``, their hits, and how many hit surfaces
        no training pixel saw. ``T_camera``: the camera's pose, for photo-based appearance."""
        hits = scene.cast(origin, dirs, normals=False, grid=grid)
        if self.appearance != "photos" or T_camera is None:
            rgb, unseen = self._shade_texels(scene, origin, dirs, hits, exposure, ego_xy_m, view_dependent)
            return rgb, hits, unseen
        colour, covered = self._blend_photos(scene, np.asarray(origin, float), dirs, hits, T_camera, exposure)
        # texels where no photo saw a surface; the far field and sky where no photo saw past the mesh
        rgb, unseen = self._shade_texels(scene, origin, dirs, hits, exposure, ego_xy_m, view_dependent, covered)
        np.copyto(rgb, colour, where=covered[:, None])
        if unseen and self._texels_native(scene, view_dependent):  # counted over every hit: keep those no photo saw
            rest = np.flatnonzero(hits.hit & ~covered)
            unseen = int(np.sum(~scene.shade(hits, rest, dirs, exposure)[1])) if len(rest) else 0
        return rgb, hits, unseen

    @staticmethod
    def _texels_native(scene: PlacedScene, view_dependent: bool) -> bool:
        return scene.backend.shades_texels and not view_dependent

    def _shade_texels(self, scene, origin, dirs, hits, exposure, ego_xy_m, view_dependent, skip=None):
        """Texel (or decoder) colours of hits, far field and sky of misses (except rays ``skip``); the
        count of hits on texels training did not see (natively: of every hit; else: of those not skipped)."""
        rgb = np.empty((len(dirs), 3), np.float32)
        miss = np.nonzero(~hits.hit if skip is None else ~hits.hit & ~skip)[0]
        if len(miss):
            sky = self.scene.sky.lookup(dirs[miss], ego_xy_m, origin)
            rgb[miss] = np.clip(sky @ exposure[:, :3].T.astype(np.float32) + exposure[:, 3].astype(np.float32), 0, 1)
        if self._texels_native(scene, view_dependent):  # baked texels read natively
            meshes = scene.meshes
            unseen = shade_texels(
                hits, [m.atlas.packed for m in meshes], [self.exposed_colours(m, exposure) for m in meshes], rgb
            )
            return rgb, unseen
        idx = np.nonzero(hits.hit if skip is None else hits.hit & ~skip)[0]
        unseen = 0
        if len(idx):
            rgb[idx], seen = scene.shade(hits, idx, dirs, exposure, view_dependent)
            unseen = int(np.sum(~seen))
        return rgb, unseen

    @single_threaded_blas
    def render_camera(
        self,
        scene: PlacedScene,
        camera: CameraSpec,
        T_world_ego: np.ndarray,
        exposure_camera: str | None = None,
        supersample: int = 1,
        view_dependent: bool = False,
    ) -> CameraRender:
        """Image, depth and actor masks of ``camera`` (any intrinsics / resolution) at an ego pose.

        ``supersample`` s > 1 averages s x s rays per pixel (anti-aliasing, s^2 times the work).
        ``view_dependent`` evaluates the appearance MLP per ray instead of the baked texel colours.
        """
        check_pose(T_world_ego, "T_world_ego")
        T = T_world_ego @ camera.T_ego_camera
        h, w = camera.height_px, camera.width_px
        exposure = self.scene.decoder.exposure(exposure_camera or camera.name)
        dirs_cam = camera.ray_directions(1).reshape(-1, 3)
        dirs = (dirs_cam @ np.ascontiguousarray(T[:3, :3].T)).astype(np.float32)
        rgb, hits, unseen = self._shade(  # photos blended at the finest sampling only
            scene, T[:3, 3], dirs, exposure, T_world_ego[:2, 3], view_dependent, (h, w), T if supersample == 1 else None
        )
        if supersample > 1:
            fine = camera.ray_directions(supersample).reshape(-1, 3) @ np.ascontiguousarray(T[:3, :3].T)
            rgb, _, unseen_fine = self._shade(
                scene,
                T[:3, 3],
                fine,
                exposure,
                T_world_ego[:2, 3],
                view_dependent,
                grid=(h * supersample, w * supersample),
                T_camera=T,
            )
            rgb = rgb.reshape(h, supersample, w, supersample, 3).mean(axis=(1, 3))
            if self.appearance == "photos":
                unseen = unseen_fine / supersample**2
        instance = np.where(hits.hit, hits.geometry - 1, NO_ACTOR).astype(np.int32)
        depth = np.where(hits.hit, hits.t_m * dirs_cam[:, 2], np.inf).reshape(h, w).astype(np.float32)
        img = np.round(rgb.reshape(h, w, 3) * 255).astype(np.uint8)
        return CameraRender(img, depth, instance.reshape(h, w), scene.actor_ids, unseen / (h * w))

    def render_frame(
        self,
        scene: PlacedScene,
        T_world_ego: np.ndarray,
        cameras: Sequence[CameraSpec] = (),
        lidars: Sequence[LidarSpec] = (),
        rng: np.random.Generator | None = None,
        supersample: int = 1,
    ) -> FrameRender:
        """Every camera and every LiDAR from one placement of the actors, with a realism confidence."""
        images = {c.name: self.render_camera(scene, c, T_world_ego, supersample=supersample) for c in cameras}
        sweeps = {lid.name: self.render_lidar(scene, lid, T_world_ego, rng) for lid in lidars}
        pixels = sum(c.width_px * c.height_px for c in cameras)
        unseen = sum(r.unseen_share * c.width_px * c.height_px for r, c in zip(images.values(), cameras)) / max(
            pixels, 1
        )
        return FrameRender(images, sweeps, RealismConfidence.assess(self.scene.meta, T_world_ego, unseen))

    @single_threaded_blas
    def render_lidar(
        self,
        scene: PlacedScene,
        lidar: LidarSpec,
        T_world_ego: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> LidarRender:
        """A sweep: ranges from the mesh, learned intensity, and learned ray drop (the model learned for
        this LiDAR, by name; a LiDAR the scene was not reconstructed with gets the primary one's).

        With ``rng`` drops are sampled; without it each ray returns when its return probability
        is at least 0.5 (the most likely sweep).
        """
        check_pose(T_world_ego, "T_world_ego")
        T = T_world_ego @ lidar.T_ego_lidar
        pattern = lidar.pattern
        dirs_l = pattern.directions()
        dirs = dirs_l @ np.ascontiguousarray(T[:3, :3].T)
        hits = scene.cast(T[:3, 3], dirs, grid=pattern.image_shape if pattern.is_full_grid else None)
        rays = HitRays.of_sweep(lidar, hits.hit, hits.t_m, hits.normals, dirs)
        idx = rays.index
        table = scene.gather(hits, idx, "lidar_table")  # corner drop rates, reflectivity
        reflectivity = table[:, -1]
        response = self.scene.lidar_model(lidar.name)
        p_return = np.zeros(len(dirs))
        p_return[idx] = 1.0 - response.drop_probability(barycentric(table[:, :-1], hits.uv[idx]), rays)
        keep = (rng.random(len(dirs)) < p_return) if rng is not None else (p_return >= 0.5)
        kept = keep[idx]
        cos_i, refl = rays.cos_incidence[kept], reflectivity[kept]
        idx = idx[kept]
        intensity = np.clip(refl * response.falloff(cos_i, hits.t_m[idx]), 0, 1)
        sweep = pattern.sweep_from_rays(idx, dirs_l[idx] * hits.t_m[idx, None], intensity)
        return LidarRender(
            sweep,
            (hits.geometry[idx] - 1).astype(np.int32),
            scene.actor_ids,
            to_image(pattern, p_return, 0.0),
        )
