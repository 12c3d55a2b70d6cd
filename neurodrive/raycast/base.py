"""What every ray caster shares: the hit record, the caster protocol, the input check.

Casters: ``raycast/embree.py`` (native, Embree 3 through a small C++ extension, 4 x 4 ray packets)
and ``raycast/open3d_caster.py`` (open3d's RaycastingScene). A *backend* builds meshes once and
places them (background + actors at poses) into a ``RayCaster``; ``raycast.select_backend`` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


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


class RayCaster(Protocol):
    """Casts rays into a fixed placement of meshes."""

    def cast(
        self, origins: np.ndarray, dirs: np.ndarray, normals: bool = True, grid: tuple[int, int] | None = None
    ) -> RayHits:
        """Nearest hits of unit rays ``dirs`` (n, 3) from ``origins`` ((3,) or (n, 3)); ``grid``
        (rows, cols): the rays of one origin form that row-major grid (packets where supported)."""
        ...


class CasterBackend(Protocol):
    """Builds meshes once and places them; geometry index 0 of a placement is its first mesh."""

    name: str
    shades_texels: bool  # can shade baked texels natively (``raycast.embree.shade_texels``)

    def mesh(self, vertices: np.ndarray, triangles: np.ndarray) -> Any:
        """A mesh handle with its acceleration structure, in its own frame."""
        ...

    def placement(self, meshes: list[Any], poses: list[np.ndarray], radii_m: list[float]) -> RayCaster:
        """The meshes at world-from-mesh ``poses`` (the first is the static background, at identity)."""
        ...


def bounding_radius_m(vertices: np.ndarray) -> float:
    """Radius of the sphere about the local origin that holds every vertex."""
    return float(np.linalg.norm(vertices, axis=1).max()) + 0.01 if len(vertices) else 0.0
