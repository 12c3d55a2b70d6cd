"""The open3d ray caster: triangle meshes in open3d's RaycastingScene (Embree inside), actors as
separate scenes cast in their own frames (``CompositeCaster``). The fallback when the native caster
(``raycast/embree.py``) is not built; also used by reconstruction and the synthetic generator."""

from __future__ import annotations

import numpy as np
import open3d as o3d

from neurodrive.raycast.base import RayHits, check_rays


class MeshRaycaster:
    """A fixed set of triangle meshes (each (V, 3) vertices, (F, 3) triangles) to cast rays at."""

    def __init__(self, meshes: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.scene = o3d.t.geometry.RaycastingScene()
        self.num_meshes = len(meshes)
        for vertices, triangles in meshes:
            if len(triangles) == 0:  # keep geometry ids aligned with an unreachable triangle
                vertices = np.array([[1e7, 1e7, 1e7], [1e7 + 1, 1e7, 1e7], [1e7, 1e7 + 1, 1e7]])
                triangles = np.array([[0, 1, 2]])
            mesh = o3d.t.geometry.TriangleMesh()
            mesh.vertex.positions = o3d.core.Tensor(np.ascontiguousarray(vertices, np.float32))  # type: ignore[call-overload]
            mesh.triangle.indices = o3d.core.Tensor(np.ascontiguousarray(triangles, np.int32))  # type: ignore[call-overload]
            self.scene.add_triangles(mesh)

    @staticmethod
    def _rays(origins: np.ndarray, dirs: np.ndarray) -> o3d.core.Tensor:
        rays = np.empty((len(dirs), 6), np.float32)
        rays[:, :3] = origins
        rays[:, 3:] = dirs
        return o3d.core.Tensor.from_numpy(rays)  # shares the buffer: no second copy

    def cast(
        self, origins: np.ndarray, dirs: np.ndarray, normals: bool = True, grid: tuple[int, int] | None = None
    ) -> RayHits:
        """Nearest hits of rays; ``normals=False`` skips the normals (left as zeros) for speed.

        Arrays keep open3d's float32 / 32-bit types (no copies); its invalid id reads as -1.
        """
        check_rays(origins, dirs)
        ans = self.scene.cast_rays(self._rays(origins, dirs))
        t = ans["t_hit"].numpy()
        geom = ans["geometry_ids"].numpy().view(np.int32)  # RaycastingScene.INVALID_ID (2^32 - 1) -> -1
        prim = ans["primitive_ids"].numpy().view(np.int32)
        if normals:
            n = ans["primitive_normals"].numpy()  # unit length already (open3d normalises them)
            n[np.einsum("ij,ij->i", n, dirs.astype(np.float32, copy=False)) > 0] *= -1
        else:
            n = np.broadcast_to(np.zeros(3, np.float32), (len(t), 3))  # read-only zeros, no allocation
        return RayHits(t, geom, prim, ans["primitive_uvs"].numpy(), n)

    def occluded(self, origins: np.ndarray, dirs: np.ndarray, t_far: float = np.inf) -> np.ndarray:
        return self.scene.test_occlusions(self._rays(origins, dirs), tfar=t_far).numpy().astype(bool)


class CompositeCaster:
    """A static background plus rigid parts (actors) placed by poses, cast without rebuilding.

    Each part keeps its own ray caster in its local frame; a ray is tested against a part only
    when it passes the part's bounding sphere, in the part's frame, and the nearest hit wins.
    Geometry index 0 is the background, k + 1 the k-th placed part.
    """

    def __init__(
        self, background: MeshRaycaster, parts: list[MeshRaycaster], radii_m: list[float], poses: list[np.ndarray]
    ) -> None:
        self.background = background
        self.parts = parts
        self.radius = np.asarray(radii_m, float)
        self.poses = [np.asarray(p, float) for p in poses]
        self.centres = np.array([p[:3, 3] for p in self.poses]).reshape(-1, 3)

    def cast(
        self, origins: np.ndarray, dirs: np.ndarray, normals: bool = True, grid: tuple[int, int] | None = None
    ) -> RayHits:
        """Nearest hits (``grid`` is accepted for the RayCaster protocol and not needed here)."""
        hits = self.background.cast(origins, dirs, normals)
        if not self.parts:
            return hits
        t, geom, tri, uv, nrm = (
            hits.t_m,
            hits.geometry,
            hits.triangle,
            hits.uv,
            hits.normals,
        )  # fresh arrays: updated in place
        origins = np.broadcast_to(origins, dirs.shape)
        for k, sel in enumerate(self._candidates(origins, dirs, t)):
            if len(sel) == 0:
                continue
            rot, trans = self.poses[k][:3, :3], self.poses[k][:3, 3]
            local = self.parts[k].cast((origins[sel] - trans) @ rot, dirs[sel] @ rot, normals)
            closer = local.hit & (local.t_m < t[sel])
            if not closer.any():
                continue
            s = sel[closer]
            t[s], geom[s], tri[s], uv[s] = local.t_m[closer], k + 1, local.triangle[closer], local.uv[closer]
            if normals:
                nrm[s] = local.normals[closer] @ rot.T
        return RayHits(t, geom, tri, uv, nrm)

    def _candidates(self, origins: np.ndarray, dirs: np.ndarray, t_m: np.ndarray):
        """For each part, the rays that pass its bounding sphere before their background hit."""
        radius32 = self.radius.astype(np.float32)
        if origins.strides[0] == 0:  # one origin (a sensor): one float32 matrix product for all parts
            rel = self.centres - origins[0]  # (A, 3)
            along = (
                rel.astype(np.float32) @ dirs.astype(np.float32, copy=False).T
            )  # (A, n) distance to the closest approach
            # a unit ray passes within r of the centre when along >= sqrt(|rel|^2 - r^2) (origin outside)
            dist_sq = np.sum(rel * rel, axis=1)
            inside = dist_sq <= self.radius**2
            threshold = np.where(inside, -self.radius, np.sqrt(np.maximum(dist_sq - self.radius**2, 0.0))).astype(
                np.float32
            )
            for k, row in enumerate(along):  # row by row: the cheap cone test first, then the depth test
                sel = np.flatnonzero(row >= threshold[k])
                yield sel[row[sel] < t_m[sel] + radius32[k]]
            return
        rel = self.centres[None, :, :] - origins[:, None, :]
        along = np.einsum("nd,nad->na", dirs, rel)
        miss_sq = np.sum(rel * rel, axis=2) - along**2
        near = (miss_sq <= self.radius**2) & (along >= -self.radius) & (along - self.radius < t_m[:, None])
        yield from (np.flatnonzero(col) for col in near.T)


class Open3dBackend:
    """Meshes as open3d RaycastingScenes; a placement casts the background, then each actor whose
    bounding sphere a ray passes, in the actor's frame (``CompositeCaster``)."""

    name = "open3d"
    shades_texels = False

    def mesh(self, vertices: np.ndarray, triangles: np.ndarray) -> MeshRaycaster:
        return MeshRaycaster([(vertices, triangles)])

    def placement(self, meshes: list[MeshRaycaster], poses: list[np.ndarray], radii_m: list[float]) -> CompositeCaster:
        return CompositeCaster(meshes[0], list(meshes[1:]), list(radii_m[1:]), list(poses[1:]))
