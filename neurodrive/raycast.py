"""Ray casting against triangle meshes with open3d's RaycastingScene (Embree), shared by the
ground-truth renderer and the reconstructed-scene renderer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d


@dataclass(frozen=True)
class RayHits:
    t_m: np.ndarray  # (n,) float32 distance along the (unit) ray, inf on a miss
    geometry: np.ndarray  # (n,) int32 index of the mesh hit, -1 on a miss
    triangle: np.ndarray  # (n,) int32 triangle index within that mesh, -1 on a miss
    uv: np.ndarray  # (n, 2) float32 barycentric coordinates: point = (1-u-v) a + u b + v c
    normals: np.ndarray  # (n, 3) float32 unit triangle normals turned to face the ray origin

    @property
    def hit(self) -> np.ndarray:
        return self.geometry >= 0


def check_rays(origins: np.ndarray, dirs: np.ndarray) -> None:
    """Refuse non-finite rays before they reach Embree (which asserts on them, or hangs in open3d).

    A NaN or infinite pose upstream shows up here; the check is one reduction per array.
    """
    if not np.isfinite(np.add.reduce(np.asarray(origins, np.float64), axis=None)):
        raise ValueError("ray origins contain NaN or infinite values (is a pose non-finite?)")
    if not np.isfinite(np.add.reduce(dirs, axis=None)):
        raise ValueError("ray directions contain NaN or infinite values (is a pose non-finite?)")


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
            mesh.vertex.positions = o3d.core.Tensor(np.ascontiguousarray(vertices, np.float32))
            mesh.triangle.indices = o3d.core.Tensor(np.ascontiguousarray(triangles, np.int32))
            self.scene.add_triangles(mesh)

    @staticmethod
    def _rays(origins: np.ndarray, dirs: np.ndarray) -> o3d.core.Tensor:
        rays = np.empty((len(dirs), 6), np.float32)
        rays[:, :3] = origins
        rays[:, 3:] = dirs
        return o3d.core.Tensor.from_numpy(rays)  # shares the buffer: no second copy

    def cast(self, origins: np.ndarray, dirs: np.ndarray, normals: bool = True) -> RayHits:
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

    def __init__(self, background: MeshRaycaster, parts: list[MeshRaycaster], radii_m: list[float], poses: list[np.ndarray]) -> None:
        self.background = background
        self.parts = parts
        self.radius = np.asarray(radii_m, float)
        self.poses = [np.asarray(p, float) for p in poses]
        self.centres = np.array([p[:3, 3] for p in self.poses]).reshape(-1, 3)

    def cast(self, origins: np.ndarray, dirs: np.ndarray, normals: bool = True) -> RayHits:
        hits = self.background.cast(origins, dirs, normals)
        if not self.parts:
            return hits
        t, geom, tri, uv, nrm = hits.t_m, hits.geometry, hits.triangle, hits.uv, hits.normals  # fresh arrays: updated in place
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
            along = rel.astype(np.float32) @ dirs.astype(np.float32, copy=False).T  # (A, n) distance to the closest approach
            # a unit ray passes within r of the centre when along >= sqrt(|rel|^2 - r^2) (origin outside)
            dist_sq = np.sum(rel * rel, axis=1)
            inside = dist_sq <= self.radius**2
            threshold = np.where(inside, -self.radius, np.sqrt(np.maximum(dist_sq - self.radius**2, 0.0))).astype(np.float32)
            for k, row in enumerate(along):  # row by row: the cheap cone test first, then the depth test
                sel = np.flatnonzero(row >= threshold[k])
                yield sel[row[sel] < t_m[sel] + radius32[k]]
            return
        rel = self.centres[None, :, :] - origins[:, None, :]
        along = np.einsum("nd,nad->na", dirs, rel)
        miss_sq = np.sum(rel * rel, axis=2) - along**2
        near = (miss_sq <= self.radius**2) & (along >= -self.radius) & (along - self.radius < t_m[:, None])
        yield from (np.flatnonzero(col) for col in near.T)


def bounding_radius_m(vertices: np.ndarray) -> float:
    """Radius of the sphere about the local origin that holds every vertex."""
    return float(np.linalg.norm(vertices, axis=1).max()) + 0.01 if len(vertices) else 0.0
