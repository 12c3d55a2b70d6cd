"""Ray casting against triangle meshes with open3d's RaycastingScene (Embree), shared by the
ground-truth renderer and the reconstructed-scene renderer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d


@dataclass(frozen=True)
class RayHits:
    t_m: np.ndarray  # (n,) distance along the (unit) ray, inf on a miss
    geometry: np.ndarray  # (n,) index of the mesh hit, -1 on a miss
    triangle: np.ndarray  # (n,) triangle index within that mesh, -1 on a miss
    uv: np.ndarray  # (n, 2) barycentric coordinates: point = (1-u-v) a + u b + v c
    normals: np.ndarray  # (n, 3) unit triangle normals turned to face the ray origin

    @property
    def hit(self) -> np.ndarray:
        return self.geometry >= 0


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
        origins = np.broadcast_to(origins, dirs.shape)
        return o3d.core.Tensor(np.ascontiguousarray(np.concatenate([origins, dirs], axis=1), np.float32))

    def cast(self, origins: np.ndarray, dirs: np.ndarray, normals: bool = True) -> RayHits:
        """Nearest hits of rays; ``normals=False`` skips the normals (left as zeros) for speed."""
        ans = self.scene.cast_rays(self._rays(origins, dirs))
        t = ans["t_hit"].numpy().astype(np.float64)
        hit = np.isfinite(t)
        geom = ans["geometry_ids"].numpy().astype(np.int64)
        prim = ans["primitive_ids"].numpy().astype(np.int64)
        geom[~hit] = -1
        prim[~hit] = -1
        if normals:
            n = ans["primitive_normals"].numpy().astype(np.float64)
            n[np.einsum("ij,ij->i", n, dirs) > 0] *= -1
            norm = np.linalg.norm(n, axis=1, keepdims=True)
            n /= np.where(norm > 0, norm, 1.0)
        else:
            n = np.zeros((len(t), 3))
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
        t, geom, tri, uv, nrm = hits.t_m.copy(), hits.geometry.copy(), hits.triangle.copy(), hits.uv.copy(), hits.normals
        origins = np.broadcast_to(origins, dirs.shape)
        if origins.strides[0] == 0:  # one origin (a sensor): one float32 matrix product for all parts
            rel = self.centres - origins[0]  # (A, 3)
            along = dirs.astype(np.float32) @ rel.T.astype(np.float32)  # (n, A) distance to the closest approach
            # a unit ray passes within r of the centre when along >= sqrt(|rel|^2 - r^2) (origin outside)
            dist_sq = np.sum(rel * rel, axis=1)
            threshold = np.where(dist_sq > self.radius**2, np.sqrt(np.maximum(dist_sq - self.radius**2, 0.0)), -self.radius)
            near = (along >= threshold.astype(np.float32)) & (along < (t[:, None] + self.radius).astype(np.float32))
        else:
            rel = self.centres[None, :, :] - origins[:, None, :]
            along = np.einsum("nd,nad->na", dirs, rel)
            miss_sq = np.sum(rel * rel, axis=2) - along**2
            near = (miss_sq <= self.radius**2) & (along >= -self.radius) & (along - self.radius < t[:, None])
        for k in np.flatnonzero(near.any(axis=0)):
            sel = np.flatnonzero(near[:, k])
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


def bounding_radius_m(vertices: np.ndarray) -> float:
    """Radius of the sphere about the local origin that holds every vertex."""
    return float(np.linalg.norm(vertices, axis=1).max()) + 0.01 if len(vertices) else 0.0
