"""Voxel-grid neighbourhoods (neurodrive/spatial.py), the far-entry fill built on them, and the TSDF's
lookups between merges."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from neurodrive.reconstruct.texturing import FAR_FILL_CELL_M, fill_unobserved
from neurodrive.reconstruct.tsdf import SparseTsdf
from neurodrive.spatial import near_reference, one_per_cell, voxel_labels


def test_voxel_labels_number_voxels_as_numpy_unique_over_rows_does() -> None:
    points = np.random.default_rng(1).uniform(-300, 300, (50_000, 3))
    rows = np.unique(np.floor(points / 0.25).astype(np.int64), axis=0, return_inverse=True)[1].reshape(-1)
    assert np.array_equal(voxel_labels(points, 0.25), rows)
    assert len(voxel_labels(np.zeros((0, 3)), 0.25)) == 0


def test_near_reference_is_the_neighbouring_cells_test_done_point_by_point() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        points, reference = rng.uniform(-10, 10, (400, 3)), rng.uniform(-10, 10, (25, 3))
        cell_m = float(rng.uniform(0.5, 3.0))
        near = near_reference(points, reference, cell_m)
        cells_p, cells_r = np.floor(points / cell_m), np.floor(reference / cell_m)
        expected = (np.abs(cells_p[:, None] - cells_r[None]).max(axis=-1) <= 1).any(axis=1)
        assert np.array_equal(near, expected)
        dist, _ = cKDTree(reference).query(points)
        assert near[dist <= cell_m].all() and not near[dist > 2 * np.sqrt(3) * cell_m].any()
    assert not near_reference(points, np.zeros((0, 3)), 1.0).any()


def test_one_per_cell_keeps_the_first_point_of_every_occupied_cell() -> None:
    points = np.random.default_rng(3).uniform(0, 5, (2000, 3))
    kept = one_per_cell(points, 1.0)
    labels = voxel_labels(points, 1.0)
    assert np.array_equal(np.sort(labels[kept]), np.arange(labels.max() + 1))
    assert all(kept[i] == np.flatnonzero(labels == labels[kept[i]])[0] for i in range(len(kept)))


def test_fill_unobserved_is_exact_near_observations_and_close_far_from_them() -> None:
    rng = np.random.default_rng(4)
    observed_xyz = rng.uniform(0, 4, (3000, 3))  # a dense block of observed entries
    unobserved_xyz = np.concatenate([rng.uniform(0, 4, (500, 3)), rng.uniform(30, 40, (300, 3))])
    centres = np.concatenate([observed_xyz, unobserved_xyz])
    values = np.concatenate([rng.normal(size=(3000, 2)), np.zeros((800, 2))]).astype(np.float32)
    observed = np.arange(len(centres)) < 3000
    filled, now_observed = fill_unobserved(values, observed, centres)
    assert now_observed.all()
    _, nn = cKDTree(observed_xyz).query(unobserved_xyz)
    assert np.array_equal(filled[3000:3500], values[nn[:500]])  # near: the nearest observed entry
    # far: an observed entry at most one cell's diagonal farther than the nearest one
    source = cKDTree(observed_xyz).query(unobserved_xyz[500:])[0]
    picked = np.array([np.flatnonzero((values[:3000] == f).all(axis=1))[0] for f in filled[3500:]])
    gap = np.linalg.norm(observed_xyz[picked] - unobserved_xyz[500:], axis=1) - source
    assert gap.max() <= np.sqrt(3) * FAR_FILL_CELL_M
    smooth, _ = fill_unobserved(values, observed, centres, k=8)  # the weighted mean of 8 stays in range
    assert np.all(np.abs(smooth[3000:]) <= np.abs(values[:3000]).max(axis=0))


def test_tsdf_lookups_between_merges_equal_those_after_a_merge() -> None:
    rng = np.random.default_rng(5)
    tsdf = SparseTsdf(0.1, 0.3)
    for _ in range(4):
        tsdf.integrate(np.zeros(3), rng.normal(size=(5000, 3)) * 3)
    probes = rng.normal(size=(20_000, 3)) * 3
    pending_sdf, pending_seen = tsdf.query(probes)
    tsdf.values()  # merges
    merged_sdf, merged_seen = tsdf.query(probes)
    assert pending_seen.mean() > 0.05 and np.array_equal(pending_seen, merged_seen)
    assert np.array_equal(pending_sdf[pending_seen], merged_sdf[merged_seen])
