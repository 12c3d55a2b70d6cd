"""Ground-truth renderer of a synthetic world: open3d (Embree) ray casting + procedural shading."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from neurodrive.lidar.sensor import LidarSpec, LidarSweep
from neurodrive.logs.model import CameraSpec
from neurodrive.raycast.open3d_caster import MeshRaycaster
from neurodrive.sources.synthetic.shading import MaterialTable, shade_hits, sky_radiance
from neurodrive.sources.synthetic.world import World

NO_ACTOR = -1  # instance id of background pixels / points


@dataclass(frozen=True)
class Hits:
    t_m: np.ndarray  # (n,) ray distance, inf on a miss
    normals: np.ndarray  # (n, 3) unit, facing the ray origin
    material: np.ndarray  # (n,) material id, -1 on a miss
    instance: np.ndarray  # (n,) actor index into FrameScene.actor_ids, NO_ACTOR otherwise

    @property
    def hit(self) -> np.ndarray:
        return np.isfinite(self.t_m)


class FrameScene:
    """The world with its actors placed at one frame's poses, ready for ray casting."""

    def __init__(self, world: World, actor_poses: Mapping[str, np.ndarray]) -> None:
        self.actor_ids = [aid for aid in actor_poses if aid in world.actor_meshes]
        parts = [world.static] + [world.actor_meshes[a].transformed(actor_poses[a]) for a in self.actor_ids]
        self.raycaster = MeshRaycaster([(p.vertices, p.triangles) for p in parts])
        self.instance_of_geometry = np.array([NO_ACTOR] + list(range(len(self.actor_ids))), dtype=np.int32)
        self.triangle_offset = np.cumsum([0] + [len(p.triangles) for p in parts[:-1]]).astype(np.int64)
        self.triangle_material = np.concatenate([p.material_ids for p in parts]).astype(np.int32)

    def cast(self, origins: np.ndarray, dirs: np.ndarray) -> Hits:
        rh = self.raycaster.cast(origins, dirs)
        hit = rh.hit
        material = np.full(len(rh.t_m), -1, np.int32)
        instance = np.full(len(rh.t_m), NO_ACTOR, np.int32)
        material[hit] = self.triangle_material[self.triangle_offset[rh.geometry[hit]] + rh.triangle[hit]]
        instance[hit] = self.instance_of_geometry[rh.geometry[hit]]
        return Hits(np.where(hit, rh.t_m, np.inf), rh.normals, material, instance)

    def occluded(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        return self.raycaster.occluded(origins, dirs)


@dataclass(frozen=True)
class CameraFrame:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth_m: np.ndarray  # (H, W) float32 z-depth along the optical axis, inf where nothing is hit
    instance: np.ndarray  # (H, W) int32 actor index into FrameScene.actor_ids, NO_ACTOR elsewhere


@dataclass(frozen=True)
class LidarFrame:
    sweep: LidarSweep
    instance: np.ndarray  # (M,) int32 actor index of each return, NO_ACTOR for background


class WorldRenderer:
    """Renders cameras and LiDAR of a :class:`World` (exact ground truth, no learning)."""

    def __init__(self, world: World, exposure: float = 0.55) -> None:
        self.world = world
        self.table = MaterialTable(world)
        self.exposure = exposure

    def scene(self, actor_poses: Mapping[str, np.ndarray]) -> FrameScene:
        return FrameScene(self.world, actor_poses)

    def radiance(self, scene: FrameScene, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, Hits]:
        """Linear radiance (n, 3) along rays and the primary hits."""
        hits = scene.cast(origins, dirs)
        out = sky_radiance(dirs, self.world.lighting)
        idx = np.nonzero(hits.hit)[0]
        if len(idx):
            p = origins[idx] + dirs[idx] * hits.t_m[idx, None]
            nrm = hits.normals[idx]
            resp = self.table.shade(p, nrm, hits.material[idx])
            sun = np.asarray(self.world.lighting.sun_direction)
            facing = nrm @ sun > 0
            visible = np.zeros(len(idx))
            if np.any(facing):
                f = np.nonzero(facing)[0]
                origin = p[f] + nrm[f] * 0.02
                visible[f] = ~scene.occluded(origin, np.broadcast_to(sun, origin.shape).copy())
            out[idx] = shade_hits(self.table, resp, nrm, dirs[idx], visible)
        return out, hits

    def render_camera(
        self,
        scene: FrameScene,
        camera: CameraSpec,
        T_world_ego: np.ndarray,
        supersample: int = 2,
        gain: float = 1.0,
        noise_std: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> CameraFrame:
        T = T_world_ego @ camera.T_ego_camera
        h, w, s = camera.height_px, camera.width_px, supersample
        dirs_cam = camera.ray_directions(s).reshape(-1, 3)
        dirs = dirs_cam @ T[:3, :3].T
        origins = np.broadcast_to(T[:3, 3], dirs.shape).copy()
        radiance, _ = self.radiance(scene, origins, dirs)
        radiance = radiance.reshape(h, s, w, s, 3).mean(axis=(1, 3))
        linear = np.clip(radiance * self.exposure * gain, 0.0, 1.0)
        srgb = linear ** (1 / 2.2)
        if noise_std > 0 and rng is not None:
            srgb = srgb + rng.normal(0.0, noise_std, srgb.shape)
        rgb = np.clip(np.round(srgb * 255.0), 0, 255).astype(np.uint8)
        # depth and instance ids through the pixel centres
        centre_cam = camera.ray_directions(1).reshape(-1, 3)
        centre = scene.cast(np.broadcast_to(T[:3, 3], centre_cam.shape).copy(), centre_cam @ T[:3, :3].T)
        depth = (centre.t_m * centre_cam[:, 2]).reshape(h, w).astype(np.float32)
        return CameraFrame(rgb, depth, centre.instance.reshape(h, w))

    def render_lidar(
        self,
        scene: FrameScene,
        lidar: LidarSpec,
        T_world_ego: np.ndarray,
        rng: np.random.Generator,
        range_noise_std_m: float = 0.0,
        intensity_noise_std: float = 0.0,
        drop_rays: bool = True,
    ) -> LidarFrame:
        """One sweep with range noise, material/incidence-dependent intensity and ray drop."""
        T = T_world_ego @ lidar.T_ego_lidar
        dirs_l = lidar.pattern.directions()
        dirs = dirs_l @ T[:3, :3].T
        hits = scene.cast(np.broadcast_to(T[:3, 3], dirs.shape).copy(), dirs)
        t = hits.t_m
        ok = hits.hit & (t >= lidar.min_range_m) & (t <= lidar.max_range_m)
        idx = np.nonzero(ok)[0]
        p = T[:3, 3] + dirs[idx] * t[idx, None]
        resp = self.table.shade(p, hits.normals[idx], hits.material[idx])
        cos_i = np.abs(np.sum(hits.normals[idx] * dirs[idx], axis=1))
        rel_range = t[idx] / lidar.max_range_m
        intensity = resp.lidar_reflectivity * (0.3 + 0.7 * cos_i) * np.exp(-1.2 * rel_range)
        intensity = np.clip(intensity + rng.normal(0.0, intensity_noise_std, len(idx)), 0.0, 1.0)
        # drop: per material (glass mostly passes the beam), near-grazing incidence, and the
        # weak echoes close to the maximum range
        p_drop = (
            resp.lidar_drop + np.clip((0.08 - cos_i) / 0.05, 0.0, 1.0) + np.clip((rel_range - 0.85) / 0.12, 0.0, 1.0)
        )
        keep = rng.random(len(idx)) >= p_drop if drop_rays else np.ones(len(idx), bool)
        idx, intensity = idx[keep], intensity[keep]
        rng_m = t[idx] + rng.normal(0.0, range_noise_std_m, len(idx))
        xyz = dirs_l[idx] * rng_m[:, None]
        sweep = lidar.pattern.sweep_from_rays(idx, xyz, intensity)
        return LidarFrame(sweep, hits.instance[idx])
