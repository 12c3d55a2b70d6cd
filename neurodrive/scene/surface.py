"""A reconstructed surface (mesh, texel atlas, texel features, LiDAR attributes) and actor assets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from neurodrive.errors import DataError
from neurodrive.io_utils import atomic_write_json, atomic_write_npz, inside
from neurodrive.lidar.ray_drop import DROP_NEIGHBOURS
from neurodrive.logs.io import read_npz
from neurodrive.raycast import CasterBackend
from neurodrive.raycast.base import bounding_radius_m
from neurodrive.scene.texels import TexelAtlas


@dataclass(frozen=True)
class SurfaceMesh:
    """A triangle mesh with texel appearance features and per-triangle LiDAR attributes."""

    vertices: np.ndarray  # (V, 3) float32, metres
    triangles: np.ndarray  # (F, 3) int32
    atlas: TexelAtlas
    texels: np.ndarray  # (T, D) float32 appearance features (first 3: base sRGB colour)
    lidar_reflectivity: np.ndarray  # (F,) float32
    lidar_drop_rates: (
        np.ndarray
    )  # (V, K) float32 drop rate of the k training rays nearest each vertex (ray_drop.DROP_NEIGHBOURS)
    texel_observations: np.ndarray  # (T,) uint16 training pixels that saw each texel (0: filled in)
    # (T, 3) uint8 decoder colour at a typical training view, before exposure; None: baked by SceneModel.
    # Derived from ``texels``: set it to None when replacing the texels.
    baked_rgb: np.ndarray | None = None

    @cached_property
    def lidar_table(self) -> np.ndarray:
        """(F, 3 K + 1) float32: each triangle's corner drop rates and its reflectivity in one row
        (one gather per LiDAR hit instead of five)."""
        corners = self.lidar_drop_rates[self.triangles].reshape(len(self.triangles), -1)
        return np.column_stack([corners, self.lidar_reflectivity]).astype(np.float32)

    @cached_property
    def baked_rgb_seen(self) -> np.ndarray:
        """(T,) uint32: baked r, g, b and 255 if training saw the texel, one 4-byte word per texel
        (one gather per ray instead of two). Requires ``baked_rgb``."""
        packed = np.empty((len(self.baked_rgb), 4), np.uint8)
        packed[:, :3] = self.baked_rgb
        packed[:, 3] = np.where(self.texel_observations > 0, 255, 0)
        return packed.view(np.uint32).reshape(-1)

    def arrays(self) -> dict[str, np.ndarray]:
        baked = {} if self.baked_rgb is None else {"baked_rgb": self.baked_rgb.astype(np.uint8)}
        return baked | {
            "vertices": self.vertices.astype(np.float32),
            "triangles": self.triangles.astype(np.int32),
            "texel_offset": self.atlas.offset,
            "texel_resolution": self.atlas.resolution,
            "texels": self.texels.astype(np.float32),
            "lidar_reflectivity": self.lidar_reflectivity.astype(np.float32),
            "lidar_drop_rates": self.lidar_drop_rates.astype(np.float32),
            "texel_observations": np.minimum(self.texel_observations, 65535).astype(np.uint16),
        }

    @staticmethod
    def from_arrays(path: Path, a: dict[str, np.ndarray]) -> SurfaceMesh:
        f = len(a["triangles"])
        for name in ("texel_offset", "texel_resolution", "lidar_reflectivity"):
            if len(a[name]) != f:
                raise DataError(path, name, f"expected {f} entries (one per triangle), got {len(a[name])}")
        if a["lidar_drop_rates"].shape != (len(a["vertices"]), len(DROP_NEIGHBOURS)):
            raise DataError(
                path,
                "lidar_drop_rates",
                f"expected ({len(a['vertices'])}, {len(DROP_NEIGHBOURS)}) per-vertex rates, "
                f"got {a['lidar_drop_rates'].shape}",
            )
        if f and (a["texel_resolution"].min() < 1 or a["texel_resolution"].max() > 255):
            raise DataError(path, "texel_resolution", "cells per triangle edge must lie in 1..255")
        atlas = TexelAtlas(a["texel_offset"].astype(np.int64), a["texel_resolution"].astype(np.int32))
        for name in ("texels", "texel_observations", "baked_rgb"):
            if name == "baked_rgb" and name not in a:
                continue
            if a[name].shape[0] != atlas.num_texels:
                raise DataError(path, name, f"expected {atlas.num_texels} texels, got {a[name].shape[0]}")
        if f and (a["triangles"].min() < 0 or a["triangles"].max() >= len(a["vertices"])):
            raise DataError(path, "triangles", "vertex index out of range")
        baked = a.get("baked_rgb")
        if baked is not None and (baked.ndim != 2 or baked.shape[1] != 3 or baked.dtype != np.uint8):
            raise DataError(path, "baked_rgb", f"expected (texels, 3) uint8, got {baked.shape} {baked.dtype}")
        return SurfaceMesh(
            a["vertices"],
            a["triangles"],
            atlas,
            a["texels"],
            a["lidar_reflectivity"],
            a["lidar_drop_rates"],
            a["texel_observations"],
            baked,
        )

    @staticmethod
    def read(path: Path) -> SurfaceMesh:
        shapes = {
            "vertices": (None, 3),
            "triangles": (None, 3),
            "texel_offset": (None,),
            "texel_resolution": (None,),
            "texels": (None, None),
            "lidar_reflectivity": (None,),
            "lidar_drop_rates": (None, None),
            "texel_observations": (None,),
        }
        return SurfaceMesh.from_arrays(path, read_npz(path, shapes))


@dataclass(frozen=True)
class ActorAsset:
    """A rigid actor reconstruction in its box frame (centred, x forward, y left, z up)."""

    actor_id: str
    category: str
    size_m: np.ndarray  # (3,) length, width, height of its box
    mesh: SurfaceMesh
    source: str = ""  # where it was reconstructed from

    @cached_property
    def _mesh_handles(self) -> dict[str, Any]:
        return {}

    def mesh_handle(self, backend: CasterBackend) -> Any:
        """The mesh in ``backend``, in the box frame: built once per backend, reused at every pose."""
        handle = self._mesh_handles.get(backend.name)
        if handle is None:
            handle = self._mesh_handles[backend.name] = backend.mesh(self.mesh.vertices, self.mesh.triangles)
        return handle

    @cached_property
    def bounding_radius_m(self) -> float:
        return bounding_radius_m(self.mesh.vertices)

    def renamed(self, actor_id: str, source: str = "") -> ActorAsset:
        """The same asset under another id (an inserted copy); its mesh and BVHs are shared."""
        renamed = ActorAsset(actor_id, self.category, self.size_m, self.mesh, source=self.source or source)
        renamed.__dict__["_mesh_handles"] = self._mesh_handles  # same mesh: reuse its acceleration structures
        return renamed

    def save(self, folder: Path) -> None:
        atomic_write_npz(inside(folder, self.actor_id, ".npz"), **self.mesh.arrays())
        atomic_write_json(
            inside(folder, self.actor_id, ".json"),
            {
                "id": self.actor_id,
                "category": self.category,
                "size_m": np.asarray(self.size_m).tolist(),
                "source": self.source,
            },
        )

    @staticmethod
    def load(npz_path: str | Path) -> ActorAsset:
        npz_path = Path(npz_path)
        meta_path = npz_path.with_suffix(".json")
        try:
            meta = json.loads(meta_path.read_text())
            size = np.asarray(meta["size_m"], float)
            if size.shape != (3,) or not np.all(size > 0):
                raise DataError(meta_path, "size_m", "expected three positive numbers")
            return ActorAsset(
                str(meta["id"]), str(meta["category"]), size, SurfaceMesh.read(npz_path), str(meta.get("source", ""))
            )
        except FileNotFoundError as e:
            raise DataError(meta_path, None, "missing file") from e
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(meta_path, None, f"malformed actor asset metadata: {e}") from e


def resolve_asset(
    reference: str, scene_actors: dict[str, ActorAsset], base_dir: str | Path | None
) -> ActorAsset | None:
    """The asset an edit names: an actor of the scene, or an asset ``.npz`` (relative paths against
    ``base_dir``, the folder of the file that names it); None when it is neither."""
    if reference in scene_actors:
        return scene_actors[reference]
    path = Path(reference).expanduser()
    if path.suffix != ".npz":
        return None
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return ActorAsset.load(path) if path.is_file() else None
