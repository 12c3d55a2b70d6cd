"""The learned LiDAR ray drop: depth-edge cues, per-vertex rates, the MLP, and far-return densification."""

from __future__ import annotations

import numpy as np
import pytest

from neurodrive.lidar.ray_drop import (
    DROP_NEIGHBOURS,
    DropSamples,
    RayDropModel,
    fit_ray_drop,
    interpolate_vertices,
    range_image_edges,
    ray_drop_features,
    vertex_drop_rates,
)
from neurodrive.lidar.sensor import LidarSpec, LidarSweep
from neurodrive.reconstruct.background import densify_far_returns


def test_range_image_edges_mark_depth_jumps_and_missing_neighbours() -> None:
    t = np.full((4, 8), 10.0, np.float32)
    t[:, 4:] = 30.0  # a depth edge between columns 3 and 4 (and 7 / 0: azimuth wraps)
    t[0, 1] = np.inf  # a ray that hits nothing
    jump, missing = range_image_edges(t)
    assert jump[2, 3] == np.float32(2.0) and jump[2, 4] == np.float32(20 / 30)  # relative to the own range
    assert jump[2, 1] == 0 and jump[2, 5] == 0  # inside a surface
    assert jump[2, 0] > 0  # wrapped neighbour (column 7) is at 30 m
    assert missing[0, 0] == 1 and missing[1, 1] == 1 and missing[2, 2] == 0
    assert np.all(np.isfinite(jump))


def _window_wall(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hits on the plane z = 0: glass (90 % drop) for x < 0, wall (1 %) for x >= 0."""
    pts = np.column_stack([rng.uniform(-2, 2, n), rng.uniform(-2, 2, n), np.zeros(n)])
    dropped = rng.random(n) < np.where(pts[:, 0] < 0, 0.9, 0.01)
    return pts, dropped


def test_vertex_rates_resolve_a_window_edge() -> None:
    rng = np.random.default_rng(0)
    pts, dropped = _window_wall(rng, 40_000)
    vertices = np.array([[-1.0, 0, 0], [1.0, 0, 0], [-0.05, 0, 0], [0.05, 0, 0], [-1.0, 0, 20.0]])
    rates = vertex_drop_rates(vertices, pts, dropped, prior=0.1)
    assert rates.shape == (5, len(DROP_NEIGHBOURS))
    assert np.all(rates[4] > 0.65)  # 20 m above the glass: the rates of the rays nearest below it
    assert np.all(rates[0] > 0.65) and np.all(rates[1] < 0.1)  # shrunk towards the prior by two rays
    k4 = DROP_NEIGHBOURS.index(4)
    assert rates[2, k4] > rates[3, k4]  # the smallest neighbourhood still tells the two sides apart
    # barycentric interpolation reproduces the corners and blends inside
    tri = np.array([[0, 1, 2]])
    at = interpolate_vertices(rates, tri, np.array([0, 0, 0]), np.array([[0, 0], [1, 0], [0.5, 0]], np.float32))
    np.testing.assert_allclose(at[0], rates[0], atol=1e-6)
    np.testing.assert_allclose(at[1], rates[1], atol=1e-6)
    np.testing.assert_allclose(at[2], (rates[0] + rates[1]) / 2, atol=1e-6)


def _samples(
    rng: np.random.Generator, n: int, vertices: np.ndarray, triangles: np.ndarray
) -> tuple[DropSamples, np.ndarray]:
    """Rays on two separate triangles, glass (0) and wall (1), and near-grazing rays (cos < 0.08)
    that always drop. Returns the samples and the true drop probability."""
    tri = rng.integers(0, 2, n)
    uv = rng.dirichlet([1, 1, 1], n)[:, 1:].astype(np.float32)
    corners = vertices[triangles[tri]]
    point = corners[:, 0] * (1 - uv[:, :1] - uv[:, 1:]) + corners[:, 1] * uv[:, :1] + corners[:, 2] * uv[:, 1:]
    cos = rng.uniform(0.0, 1.0, n)
    p = np.where(cos < 0.08, 1.0, np.where(tri == 0, 0.9, 0.01))
    dropped = rng.random(n) < p
    samples = DropSamples(
        np.zeros(n, int),
        tri,
        uv,
        point,
        rng.integers(0, 8, n),
        dropped,
        cos,
        rng.uniform(0.05, 0.5, n),
        np.zeros(n, np.float32),
        np.zeros(n, np.float32),
    )
    return samples, p


def test_fitted_drop_model_approaches_the_best_possible_accuracy() -> None:
    rng = np.random.default_rng(1)
    vertices = np.array([[-4.0, -2, 0], [-1, -2, 0], [-1, 2, 0], [1, -2, 0], [4, -2, 0], [4, 2, 0]])
    triangles = np.array([[0, 1, 2], [3, 4, 5]])
    train, _ = _samples(rng, 20_000, vertices, triangles)
    rates, (model,) = fit_ray_drop([(vertices, triangles)], train, steps=300, batch_size=2048)
    assert model is not None and rates[0].shape == (6, len(DROP_NEIGHBOURS))
    test, p_true = _samples(rng, 20_000, vertices, triangles)
    feats_rates = interpolate_vertices(rates[0], triangles, test.triangle, test.uv)
    p = model.probability(
        ray_drop_features(feats_rates, test.cos_incidence, test.relative_range, test.edge, test.missing)
    )
    accuracy = np.mean((p >= 0.5) == test.dropped)
    best = np.mean((p_true >= 0.5) == test.dropped)
    # the rates alone (no MLP) cannot know that grazing rays drop
    rate_only = np.mean((feats_rates[:, DROP_NEIGHBOURS.index(16)] >= 0.5) == test.dropped)
    assert accuracy > best - 0.02 and accuracy > rate_only + 0.02
    # stored and read back as tensors (safetensors), the same model
    again = RayDropModel.from_tensors(model.tensors("lidar_drop"), "lidar_drop")
    np.testing.assert_allclose(
        again.probability(np.zeros((3, len(model.mean)), np.float32)),
        model.probability(np.zeros((3, len(model.mean)), np.float32)),
    )
    broken = model.tensors("lidar_drop") | {"lidar_drop.w1": np.zeros((3, 3), np.float32)}
    with pytest.raises(ValueError, match="lidar_drop"):
        RayDropModel.from_tensors(broken, "lidar_drop")
    with pytest.raises(ValueError, match="lidar_drop"):
        RayDropModel.from_tensors(
            model.tensors("lidar_drop") | {"lidar_drop.w0": np.zeros(9, np.float32)}, "lidar_drop"
        )
    assert RayDropModel.from_tensors({}, "lidar_drop") is None


def test_densified_far_returns_fill_a_wall_but_not_a_depth_edge() -> None:
    elevations = np.deg2rad(np.linspace(-5, 5, 9))
    lidar = LidarSpec("l", np.eye(4), elevations, 360, 0.5, 200.0, 10.0)
    dirs = lidar.pattern.directions().reshape(9, 360, 3)
    # a wall at x = 60 m in front (azimuth bins 350..359 and 0..10), a post 5 m away in bin 5
    ranges = np.zeros((9, 360))
    az = np.r_[350:360, 0:11]
    ranges[:, az] = 60.0 / dirs[:, az, 0]
    ranges[:, 5] = 5.0
    beam, col = np.nonzero(ranges)
    sweep = LidarSweep(
        (dirs[beam, col] * ranges[beam, col, None]).astype(np.float32),
        np.zeros(len(beam), np.float32),
        beam.astype(np.int16),
        col.astype(np.int32),
    )
    dense = densify_far_returns(sweep, lidar, min_range_m=15.0, spacing_m=0.2)
    assert len(dense) > 10 * len(beam)
    np.testing.assert_allclose(dense[:, 0], 60.0, atol=0.05)  # on the wall (bilinear ranges along a plane)
    bearing = np.rad2deg(np.arctan2(dense[:, 1], dense[:, 0]))
    assert not np.any((bearing > 4) & (bearing < 6))  # no fill across the post's depth edge
    assert np.all(np.abs(bearing) < 10.5)  # nor past the wall's end into the sky


def test_a_ray_pattern_places_rays_and_returns_consistently(tiny_log_dir) -> None:
    """The beam grid behind LidarSpec.pattern: ray n fills image cell n, a logged sweep's returns map
    to rays whose directions match their points, and a sweep written from rays reads back the same."""
    from neurodrive.lidar.pattern import from_image, to_image
    from neurodrive.logs.io import load_log

    log = load_log(tiny_log_dir)
    lidar = log.rig.lidar
    pattern = lidar.pattern
    rows, cols = pattern.image_shape
    assert (rows, cols) == (lidar.num_beams, lidar.azimuth_bins) and pattern.is_full_grid
    values = np.arange(rows * cols, dtype=float)
    np.testing.assert_array_equal(from_image(pattern, to_image(pattern, values, -1.0)), values)
    sweep = log.lidar(2)
    rays = pattern.rays_of(sweep)
    unit = sweep.xyz_m / np.linalg.norm(sweep.xyz_m, axis=1, keepdims=True)
    cos = np.einsum("ij,ij->i", unit, pattern.directions()[rays])
    assert np.quantile(cos, 0.01) > np.cos(np.deg2rad(0.5))  # each return lies along its ray
    again = pattern.sweep_from_rays(rays, sweep.xyz_m, sweep.intensity)
    np.testing.assert_array_equal(pattern.rays_of(again), rays)
    np.testing.assert_array_equal(again.range_image(lidar), sweep.range_image(lidar))
    assert sweep.return_mask(lidar).sum() == sweep.num_returns


def test_a_drop_model_fitted_on_one_sweep_uses_the_rates_and_stays_in_range() -> None:
    """One training sweep (AV2's sample): the cross-fitted rates come from interleaved rays, not other
    frames (there are none), so the MLP learns from them; constant features are frozen out."""
    rng = np.random.default_rng(2)
    vertices = np.array([[-4.0, -2, 0], [-1, -2, 0], [-1, 2, 0], [1, -2, 0], [4, -2, 0], [4, 2, 0]])
    triangles = np.array([[0, 1, 2], [3, 4, 5]])
    train, _ = _samples(rng, 20_000, vertices, triangles)
    one_sweep = DropSamples(**{**train.__dict__, "frame": np.zeros(len(train.frame), int)})
    rates, (model,) = fit_ray_drop([(vertices, triangles)], one_sweep, steps=300, batch_size=2048)
    assert model is not None
    test, p_true = _samples(rng, 20_000, vertices, triangles)
    feats_rates = interpolate_vertices(rates[0], triangles, test.triangle, test.uv)
    features = ray_drop_features(feats_rates, test.cos_incidence, test.relative_range, test.edge, test.missing)
    p = model.probability(features)
    best = np.mean((p_true >= 0.5) == test.dropped)
    assert np.mean((p >= 0.5) == test.dropped) > best - 0.02
    # edge / missing were 0 on every training ray: frozen, so values never seen do not change the answer
    unseen = features.copy()
    unseen[:, -2:] = 5.0
    np.testing.assert_allclose(model.probability(unseen), p, atol=1e-5)
