"""The native twins of ``render/photo_blend.py``'s per-sample work (``nd_sample_photo``,
``nd_ulr_blend`` in ``embree_caster.cpp``): one photo's samples for many surface points, and the
per-pixel blend. Same arithmetic as the numpy code (tested to agree), several times faster."""

from __future__ import annotations

import numpy as np

from neurodrive.raycast.embree import _library, _threads


def available() -> bool:
    lib = _library()
    return lib is not None and hasattr(lib, "nd_sample_photo")


def _c(array: np.ndarray, dtype) -> np.ndarray:
    return np.ascontiguousarray(array, dtype)


def sample_photo(
    points: np.ndarray,
    T_world_camera: np.ndarray,
    intrinsics: np.ndarray,
    distortion: np.ndarray,
    size_px: tuple[int, int],
    depth_map: np.ndarray,
    tolerance: tuple[float, float],
    view: np.ndarray,
    view_dist: np.ndarray,
    image: np.ndarray,
    exposure: np.ndarray,
    weights: tuple[float, float],
    rows: np.ndarray,
    column: int,
    out: tuple[np.ndarray, np.ndarray, np.ndarray],
    far: bool = False,
) -> None:
    """Fills ``out`` = (penalty (N, m), ramp (N, m), rgb (N, m, 3)) float32 at (rows, column);
    ``far``: the points stand for rays that missed the mesh (seen where the photo's rays missed)."""
    penalty, ramp, rgb = out
    n, m = len(points), penalty.shape[1]
    for array in out:
        if array.dtype != np.float32 or not array.flags.c_contiguous:
            raise ValueError("penalty, ramp and rgb must be contiguous float32 arrays")
    if len(rows) != n or (n and (rows.min() < 0 or rows.max() >= len(penalty))):
        raise ValueError("rows must name one row of the outputs per point")
    h, w = image.shape[:2]
    if (w, h) != tuple(size_px):
        raise ValueError(f"photo is {w}x{h}, expected {size_px[0]}x{size_px[1]}")
    _library().nd_sample_photo(
        n,
        _c(points, np.float64),
        _c(T_world_camera, np.float64),
        _c(intrinsics, np.float64),
        _c(distortion, np.float64),
        w,
        h,
        _c(depth_map, np.float32),
        depth_map.shape[0],
        depth_map.shape[1],
        tolerance[0],
        tolerance[1],
        int(far),
        _c(view, np.float32),
        _c(view_dist, np.float32),
        _c(image, np.uint8),
        _c(np.linalg.inv(exposure[:, :3]), np.float32),
        _c(exposure[:, 3], np.float32),
        weights[0],
        weights[1],
        _c(rows, np.int64),
        m,
        column,
        penalty,
        ramp,
        rgb,
        _threads(),
    )


def ulr_blend(penalty: np.ndarray, ramp: np.ndarray, rgb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Blended colours (n, 3) float32 and a mask of rows with any weight (see ``photo_blend``)."""
    n, m = penalty.shape
    out = np.zeros((n, 3), np.float32)
    seen = np.zeros(n, np.uint8)
    if n and m:
        _library().nd_ulr_blend(
            n, m, k, _c(penalty, np.float32), _c(ramp, np.float32), _c(rgb, np.float32), out, seen, _threads()
        )
    return out, seen.astype(bool)
