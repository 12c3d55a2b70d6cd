"""A placement: the background plus actors at poses, ready for ray casting (no mesh BVH rebuilt)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import ThreadpoolController

from neurodrive.raycast import CasterBackend, RayCaster, select_backend
from neurodrive.raycast.base import RayHits

if TYPE_CHECKING:
    from neurodrive.render.rendering import SceneRenderer


_THREADPOOLS = ThreadpoolController()


def single_threaded_blas(render):
    """Run ``render`` with one BLAS thread: the renderer's matrix products are small, and idle
    OpenBLAS threads spin on the cores open3d's ray casting needs (measured 93 -> 76 ms a frame)."""

    @functools.wraps(render)
    def wrapper(*args, **kwargs):
        with _THREADPOOLS.limit(limits=1, user_api="blas"):
            return render(*args, **kwargs)

    return wrapper


class PlacedScene:
    """Background plus actors at given poses, ready for ray casting.

    Placing actors builds no mesh's acceleration structure: the background's is built once per
    renderer and each actor's once per asset, in its box frame. With the native caster
    (:mod:`neurodrive.raycast.embree`) a placement is a top-level BVH of instances and a ray meets
    background and actors in one traversal; with open3d a ray is cast against the background, and
    against every actor whose bounding sphere it passes, in that actor's frame. The nearest hit wins.
    """

    def __init__(
        self, renderer: SceneRenderer, actor_poses: Mapping[str, np.ndarray], backend: CasterBackend | None = None
    ) -> None:
        model = renderer.scene
        unknown = [a for a in actor_poses if a not in model.actors]
        if unknown:
            raise KeyError(f"unknown actor id(s) {unknown}; known: {sorted(model.actors)}")
        self.renderer = renderer
        self.model = model
        self.actor_ids = tuple(actor_poses)
        self.poses = [np.asarray(actor_poses[a], float) for a in self.actor_ids]
        bad = [a for a, p in zip(self.actor_ids, self.poses) if p.shape != (4, 4) or not np.all(np.isfinite(p))]
        if bad:
            raise ValueError(f"actor pose(s) of {bad}: expected finite (4, 4) world-from-box matrices")
        self.meshes = [model.background] + [model.actors[a].mesh for a in self.actor_ids]
        assets = [model.actors[a] for a in self.actor_ids]
        self.backend = backend or select_backend(renderer.caster)
        self.caster: RayCaster = self.backend.placement(
            [renderer.background_handle(self.backend)] + [a.mesh_handle(self.backend) for a in assets],
            [np.eye(4)] + self.poses,
            [0.0] + [a.bounding_radius_m for a in assets],
        )

    def cast(
        self, origins: np.ndarray, dirs: np.ndarray, normals: bool = True, grid: tuple[int, int] | None = None
    ) -> RayHits:
        """Nearest hits; ``grid`` (rows, cols): one origin's rays form that row-major grid (faster natively)."""
        return self.caster.cast(origins, dirs, normals, grid)

    @staticmethod
    def _groups(geom: np.ndarray):
        """(mesh index, positions) for each mesh hit, positions into ``geom``."""
        if len(geom) == 0:
            return
        background = geom == 0  # most rays: no sorting for them
        yield 0, np.flatnonzero(background)
        rest = np.flatnonzero(~background)
        if len(rest):
            order = rest[np.argsort(geom[rest], kind="stable")]
            cuts = np.flatnonzero(np.diff(geom[order])) + 1
            for part in np.split(order, cuts):
                yield int(geom[part[0]]), part

    def shade(
        self,
        hits: RayHits,
        idx: np.ndarray,
        dirs: np.ndarray,
        exposure: np.ndarray,
        view_dependent: bool = False,
        chunk: int = 8192,
    ):
        """Colours (len(idx), 3) of hit rays ``idx`` and whether training saw each hit texel.

        ``view_dependent`` runs the decoder MLP with each ray's direction; otherwise the colours
        baked per texel are read (measured 0.04 dB lower held-out PSNR on town-small, several
        times faster). Work runs chunk by chunk so each chunk stays in the CPU cache."""
        rgb = np.empty((len(idx), 3), np.float32)
        seen = np.empty(len(idx), bool)
        decoder = self.model.decoder
        for g, pos in self._groups(hits.geometry[idx]):
            mesh = self.meshes[g]
            for start in range(0, len(pos), chunk):
                part = pos[start : start + chunk]
                rays = idx[part]
                tex = mesh.atlas.lookup(hits.triangle[rays], hits.uv[rays])
                if view_dependent or mesh.baked_rgb is None:
                    rgb[part] = decoder.decode(np.take(mesh.texels, tex, axis=0), dirs[rays], exposure)
                    seen[part] = np.take(mesh.texel_observations, tex) > 0
                else:
                    packed = np.take(self.renderer.exposed_colours(mesh, exposure), tex).view(np.uint8).reshape(-1, 4)
                    rgb[part] = packed[:, :3] * np.float32(1 / 255)
                    seen[part] = packed[:, 3] > 0
        return rgb, seen

    def gather(self, hits: RayHits, idx: np.ndarray, name: str) -> np.ndarray:
        """Rows of the per-triangle array ``name`` of the meshes at hit rays ``idx``: one gather from
        the background for all of them (most rays), then the few actor hits overwritten."""
        tri, geom = hits.triangle[idx], hits.geometry[idx]
        out = np.take(getattr(self.meshes[0], name), np.where(geom == 0, tri, 0), axis=0)
        for g, pos in self._groups(geom):
            if g:
                out[pos] = np.take(getattr(self.meshes[g], name), tri[pos], axis=0)
        return out
