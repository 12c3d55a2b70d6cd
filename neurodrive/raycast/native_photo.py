"""The native twin of ``render/photo_blend.py``'s blend (``nd_blend_photos`` in
``embree_caster.cpp``): every candidate photo's sample of every surface point and their
Unstructured-Lumigraph blend in one pass, without per-photo intermediate arrays. Same arithmetic as
the numpy code (tested to agree), several times faster."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from neurodrive.raycast.embree import _library, _threads


def available() -> bool:
    lib = _library()
    return lib is not None and hasattr(lib, "nd_blend_photos")


@dataclass(frozen=True)
class Candidates:
    """The candidate photos of one render, as the kernel reads them.

    Attributes:
        transforms: (m, G, 3, 4) world-from-camera pose of photo j for points of group g (the
            background, or an actor moved with its box); NaN where photo j does not see group g.
        intrinsics: (m, 3, 3); distortion: (m, 5); sizes: (m, 2) width, height.
        depth_maps: m float32 (h, w) z-depth maps; images: m uint8 (H, W, 3) photos.
        exposures: (m, 3, 4) each photo's affine exposure (photo = scene @ A.T + b).
    """

    transforms: np.ndarray
    intrinsics: np.ndarray
    distortion: np.ndarray
    sizes: np.ndarray
    depth_maps: Sequence[np.ndarray]
    images: Sequence[np.ndarray]
    exposures: np.ndarray


def blend(
    origin: np.ndarray,
    dirs: np.ndarray,
    t_m: np.ndarray,
    geometry: np.ndarray,
    photos: Candidates,
    far_depth_m: float,
    tolerance: tuple[float, float],
    weights: tuple[float, float],
    k: int,
    exposure: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Blended colours (n, 3) float32 through ``exposure`` (3x4: scene -> image colour, clipped to
    [0, 1]; zeros where no photo saw the ray) of n rays from ``origin`` (unit ``dirs``), and which rays
    any photo saw. A ray that hit ``geometry`` g >= 0 (the row of ``photos.transforms``) is looked
    up at ``t_m`` along it; a miss (-1) ``far_depth_m`` along it. ``tolerance``: relative and
    absolute depth tolerance; ``weights``: resolution weight, border ramp (px)."""
    n, m = len(dirs), len(photos.depth_maps)
    groups = photos.transforms.shape[1] if m else 1
    rgb = np.zeros((n, 3), np.float32)
    seen = np.zeros(n, np.uint8)
    if n == 0 or m == 0:
        return rgb, seen.astype(bool)
    if geometry.min() < -1 or geometry.max() >= groups:
        raise ValueError(f"geometry indices must lie in [-1, {groups})")
    depths = [np.ascontiguousarray(d, np.float32) for d in photos.depth_maps]  # referenced until the call returns
    images = [np.ascontiguousarray(im, np.uint8) for im in photos.images]
    for j, (im, size) in enumerate(zip(images, photos.sizes)):
        if im.shape != (int(size[1]), int(size[0]), 3):
            raise ValueError(f"photo {j} is {im.shape[1]}x{im.shape[0]}, expected {size[0]}x{size[1]}")
    K = photos.intrinsics
    lib = _library()
    assert lib is not None
    lib.nd_blend_photos(
        n,
        np.ascontiguousarray(origin, np.float64).reshape(3),
        np.ascontiguousarray(dirs, np.float32),
        np.ascontiguousarray(t_m, np.float32),
        np.ascontiguousarray(geometry, np.int32),
        far_depth_m,
        m,
        groups,
        np.ascontiguousarray(photos.transforms, np.float64),
        np.ascontiguousarray(np.stack([K[:, 0, 0], K[:, 0, 1], K[:, 0, 2], K[:, 1, 1], K[:, 1, 2]], 1), np.float64),
        np.ascontiguousarray(photos.distortion, np.float64),
        np.ascontiguousarray(photos.sizes, np.int32),
        (ctypes.c_void_p * m)(*[d.ctypes.data for d in depths]),
        np.ascontiguousarray([d.shape for d in depths], np.int32),
        (ctypes.c_void_p * m)(*[im.ctypes.data for im in images]),
        np.ascontiguousarray(np.linalg.inv(photos.exposures[:, :, :3]), np.float32),
        np.ascontiguousarray(photos.exposures[:, :, 3], np.float32),
        tolerance[0],
        tolerance[1],
        weights[0],
        weights[1],
        k,
        np.ascontiguousarray(exposure, np.float32).reshape(3, 4),
        rgb,
        seen,
        _threads(),
    )
    return rgb, seen.astype(bool)
