"""Python side of the native Embree caster (``embree_caster.cpp``, built by setup.py when Embree's
headers are present): meshes built once, placements of instances, rays cast as 4 x 4 packets.

Which caster renders is chosen by ``raycast.select_backend`` (explicit argument; the
``NEURODRIVE_RAYCASTER`` variable overrides it).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from collections.abc import Sequence
from functools import cache

import numpy as np

from neurodrive.raycast import ENV_VAR, NativeCasterUnavailable
from neurodrive.raycast.base import RayHits, check_rays

_F32 = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
_I32 = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
_F64 = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")


def _threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@cache
def _library() -> ctypes.CDLL | None:
    spec = importlib.util.find_spec("neurodrive._embree_caster")
    if spec is None or spec.origin is None:
        return None
    lib = ctypes.CDLL(spec.origin)  # plain C functions: ctypes releases the GIL during each call
    vp = ctypes.c_void_p
    lib.nd_device_new.argtypes, lib.nd_device_new.restype = [ctypes.c_char_p], vp
    lib.nd_device_error.argtypes, lib.nd_device_error.restype = [vp], ctypes.c_int
    lib.nd_mesh_new.argtypes, lib.nd_mesh_new.restype = [vp, _F32, ctypes.c_int64, _I32, ctypes.c_int64], vp
    lib.nd_mesh_free.argtypes, lib.nd_mesh_free.restype = [vp], None
    lib.nd_placement_new.argtypes, lib.nd_placement_new.restype = [vp, ctypes.POINTER(vp), _F64, ctypes.c_int64], vp
    lib.nd_placement_free.argtypes, lib.nd_placement_free.restype = [vp], None
    out: list = [_F32, _I32, _I32, _F32, vp, ctypes.c_int]  # ndpointer types are ctypes argument types at run time
    lib.nd_cast_grid.argtypes, lib.nd_cast_grid.restype = [vp, _F32, _F32, ctypes.c_int64, ctypes.c_int64, *out], None
    lib.nd_cast_rays.argtypes, lib.nd_cast_rays.restype = [vp, _F32, ctypes.c_int64, _F32, ctypes.c_int64, *out], None
    pp = ctypes.POINTER(ctypes.c_void_p)
    lib.nd_shade_texels.argtypes = [ctypes.c_int64, _I32, _I32, _F32, pp, pp, _F32, ctypes.c_int]
    lib.nd_shade_texels.restype = ctypes.c_int64
    i64, f32 = ctypes.c_int64, ctypes.c_float
    _U8 = np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS")
    lib.nd_blend_photos.argtypes = [
        *(i64, _F64, _F32, _F32, _I32, f32, i64, i64, _F64, _F64, _F64, _I32, pp, _I32, pp, _F32, _F32),
        *(f32, f32, f32, f32, i64, _F32, _F32, _U8, ctypes.c_int),
    ]
    lib.nd_blend_photos.restype = None
    return lib


def native_built() -> bool:
    """Whether the native caster was compiled (setup.py skips it without Embree's headers)."""
    return _library() is not None


def native_available() -> bool:
    """Whether the native caster is built and selected (see ``raycast.select_backend``)."""
    from neurodrive.raycast import select_backend

    return select_backend().name == "embree"


def caster_description() -> str:
    """One line for users: which ray caster renders, and how to get the native one."""
    if native_available():
        return "ray caster: native Embree (4x4 ray packets)"
    if _library() is None:
        return (
            "ray caster: open3d (native caster not built: install libembree-dev, then reinstall neurodrive; "
            "about 1.7x slower)"
        )
    return f"ray caster: open3d ({ENV_VAR}=open3d)"


@cache
def _device() -> int:
    device = _library().nd_device_new(None)
    if not device:
        raise NativeCasterUnavailable("Embree could not create a device")
    return device


class NativeMesh:
    """One triangle mesh with its own BVH, built once (vertices (V, 3), triangles (F, 3))."""

    def __init__(self, vertices: np.ndarray, triangles: np.ndarray) -> None:
        lib = _library()
        v = np.ascontiguousarray(vertices, np.float32).reshape(-1, 3)
        f = np.ascontiguousarray(triangles, np.int32).reshape(-1, 3)
        self.num_triangles = len(f)
        self._lib = lib
        self.handle = lib.nd_mesh_new(_device(), v, len(v), f, len(f))
        error = lib.nd_device_error(_device())
        if error:
            raise NativeCasterUnavailable(f"Embree error {error} while building a mesh of {len(f)} triangles")

    def __del__(self) -> None:
        if getattr(self, "handle", None):
            self._lib.nd_mesh_free(self.handle)
            self.handle = None


class NativePlacement:
    """Meshes placed by rigid transforms (world from local, (4, 4)); geometry k of the hits is
    ``meshes[k]``. Building one commits a top-level BVH over the instances (microseconds)."""

    def __init__(self, meshes: Sequence[NativeMesh], transforms: Sequence[np.ndarray]) -> None:
        if len(meshes) != len(transforms):
            raise ValueError(f"{len(meshes)} meshes but {len(transforms)} transforms")
        for k, t in enumerate(transforms):
            if np.shape(t) != (4, 4) or not np.all(np.isfinite(t)):
                raise ValueError(f"transform {k}: expected a finite (4, 4) matrix")
        self._lib = _library()
        self._meshes = list(meshes)  # kept alive as long as the placement
        handles = (ctypes.c_void_p * len(meshes))(*[m.handle for m in meshes])
        xfm = np.ascontiguousarray(
            np.stack([np.asarray(t, float) for t in transforms]) if len(transforms) else np.zeros((0, 4, 4))
        )
        self.handle = self._lib.nd_placement_new(_device(), handles, xfm, len(meshes))

    def __del__(self) -> None:
        if getattr(self, "handle", None):
            self._lib.nd_placement_free(self.handle)
            self.handle = None

    def cast(
        self, origins: np.ndarray, dirs: np.ndarray, normals: bool = True, grid: tuple[int, int] | None = None
    ) -> RayHits:
        """Nearest hits of rays: ``origins`` (3,) one origin or (n, 3), unit ``dirs`` (n, 3).

        ``grid`` (rows, cols) with one origin: the rays are a row-major grid (camera pixels, LiDAR
        beams x azimuths) and are traced as 4 x 4 packets. ``normals=False`` leaves normals zero.
        """
        d = np.ascontiguousarray(dirs, np.float32).reshape(-1, 3)
        n = len(d)
        o = np.ascontiguousarray(origins, np.float32)
        check_rays(o, d)
        single = o.size == 3
        t = np.empty(n, np.float32)
        geom, prim = np.empty(n, np.int32), np.empty(n, np.int32)
        uv = np.empty((n, 2), np.float32)
        nrm = np.empty((n, 3), np.float32) if normals else None
        nrm_ptr = nrm.ctypes.data if normals else None
        if grid is not None and single and grid[0] * grid[1] == n:
            self._lib.nd_cast_grid(
                self.handle, o.reshape(3), d, grid[0], grid[1], t, geom, prim, uv, nrm_ptr, _threads()
            )
        else:
            if not single and o.shape != d.shape:
                raise ValueError(f"origins {o.shape} do not match dirs {d.shape}")
            self._lib.nd_cast_rays(
                self.handle, o.reshape(-1, 3), 0 if single else 3, d, n, t, geom, prim, uv, nrm_ptr, _threads()
            )
        if nrm is None:
            nrm = np.broadcast_to(np.zeros(3, np.float32), (n, 3))
        return RayHits(t, geom, prim, uv, nrm)


def shade_texels(
    hits: RayHits, packed_atlases: Sequence[np.ndarray], colours: Sequence[np.ndarray], rgb: np.ndarray
) -> int:
    """Colours of the hit rays read from baked texels, written into ``rgb`` (n, 3) float32 in [0, 1]
    (misses left as they are); returns how many hits show texels no training pixel saw.

    Mesh g of ``hits.geometry`` has the packed atlas ``packed_atlases[g]`` ((F,) int64, first texel
    << 8 | cells per edge, :class:`~neurodrive.scene.texels.TexelAtlas`) and the texel colours
    ``colours[g]`` ((T,) uint32: r, g, b bytes, 255 in the fourth if training saw the texel)."""
    lib = _library()
    if len(packed_atlases) != len(colours):
        raise ValueError("one packed atlas per colour table expected")
    atlases = [np.ascontiguousarray(a, np.int64) for a in packed_atlases]  # referenced until the call returns
    tables = [np.ascontiguousarray(c, np.uint32) for c in colours]
    atlas_ptrs = (ctypes.c_void_p * len(atlases))(*[a.ctypes.data for a in atlases])
    colour_ptrs = (ctypes.c_void_p * len(tables))(*[c.ctypes.data for c in tables])
    if rgb.shape != (len(hits.t_m), 3) or rgb.dtype != np.float32 or not rgb.flags.c_contiguous:
        raise ValueError(f"rgb must be a contiguous float32 ({len(hits.t_m)}, 3) array")
    uv = np.ascontiguousarray(hits.uv, np.float32)
    return int(
        lib.nd_shade_texels(
            len(hits.t_m),
            np.ascontiguousarray(hits.geometry, np.int32),
            np.ascontiguousarray(hits.triangle, np.int32),
            uv,
            atlas_ptrs,
            colour_ptrs,
            rgb,
            _threads(),
        )
    )


class EmbreeBackend:
    """Meshes as native Embree BVHs; a placement is one top-level BVH of instances (one traversal
    for background and actors, camera / LiDAR rays in 4 x 4 packets, baked texels shaded natively)."""

    name = "embree"
    shades_texels = True

    def mesh(self, vertices: np.ndarray, triangles: np.ndarray) -> NativeMesh:
        return NativeMesh(vertices, triangles)

    def placement(self, meshes: list[NativeMesh], poses: list[np.ndarray], radii_m: list[float]) -> NativePlacement:
        return NativePlacement(meshes, poses)
