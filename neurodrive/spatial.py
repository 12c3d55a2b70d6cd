"""Neighbourhoods of point sets on a voxel grid: which points have data near them, one point per cell.

A k-d tree answers nearest-neighbour queries fast near its points but slowly far from them (a query
in a large empty region visits many cells at nearly the same distance): reconstruction asks about
millions of vertices and texels tens of metres from any LiDAR ray or seen texel. These helpers split
such queries into the near ones (answered exactly by the tree) and the far ones (answered from a
coarse summary of the data, or not at all).
"""

from __future__ import annotations

import numpy as np

# the 27 offsets of a cell and its neighbours
_NEIGHBOUR_OFFSETS = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)


def _packed_cells(cells: np.ndarray, lo: np.ndarray, dims: np.ndarray) -> np.ndarray:
    c = cells - lo
    return (c[:, 0] * dims[1] + c[:, 1]) * dims[2] + c[:, 2]


def _cell_keys(points: np.ndarray, cell_m: float) -> np.ndarray:
    """(n,) one integer per ``cell_m`` voxel of each point, ordered as the voxels' (x, y, z)."""
    cells = np.floor(points / cell_m).astype(np.int64)
    lo = cells.min(axis=0)
    return _packed_cells(cells, lo, cells.max(axis=0) + 1 - lo)


def near_reference(points: np.ndarray, reference: np.ndarray, cell_m: float) -> np.ndarray:
    """(n,) bool: whether the ``cell_m`` voxel holding each point, or one of its 26 neighbours, holds a
    reference point. Every point within ``cell_m`` of a reference point is near; none farther than
    ``2 sqrt(3) cell_m`` is."""
    if len(points) == 0 or len(reference) == 0:
        return np.zeros(len(points), bool)
    point_cells = np.floor(points / cell_m).astype(np.int64)
    ref_cells = np.floor(reference / cell_m).astype(np.int64)
    lo = np.minimum(point_cells.min(axis=0), ref_cells.min(axis=0)) - 1  # a margin of one cell: no
    dims = np.maximum(point_cells.max(axis=0), ref_cells.max(axis=0)) + 2 - lo  # neighbour wraps round
    ref_keys = np.unique(_packed_cells(ref_cells, lo, dims))
    steps = (_NEIGHBOUR_OFFSETS[:, 0] * dims[1] + _NEIGHBOUR_OFFSETS[:, 1]) * dims[2] + _NEIGHBOUR_OFFSETS[:, 2]
    keys = np.unique((ref_keys[:, None] + steps[None]).ravel())
    query = _packed_cells(point_cells, lo, dims)
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return keys[pos] == query


def one_per_cell(points: np.ndarray, cell_m: float) -> np.ndarray:
    """Sorted indices of one point per occupied ``cell_m`` voxel (the first in each, by index)."""
    if len(points) == 0:
        return np.zeros(0, np.int64)
    _, first = np.unique(_cell_keys(points, cell_m), return_index=True)
    return np.sort(first)


def voxel_labels(points: np.ndarray, size_m: float) -> np.ndarray:
    """(n,) label of each point's ``size_m`` voxel, numbered in lexicographic (x, y, z) order of the
    voxels (as ``np.unique(..., axis=0)`` numbers them, on one packed integer: many times faster)."""
    if len(points) == 0:
        return np.zeros(0, np.int64)
    return np.unique(_cell_keys(points, size_m), return_inverse=True)[1].reshape(-1)
