"""Compositing ray caster: the culling of rays per placed part is exact, and parts win where nearer."""

from __future__ import annotations

import numpy as np
import trimesh

from neurodrive.geometry import make_pose, rot_z
from neurodrive.raycast.base import bounding_radius_m
from neurodrive.raycast.open3d_caster import CompositeCaster, MeshRaycaster


def _sphere_rays(origin: np.ndarray, rel: np.ndarray, radius: float, t_m: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Brute force, float64: the rays passing within ``radius`` of the centre before ``t_m``."""
    along = dirs.astype(np.float64) @ rel
    miss_sq = rel @ rel - along**2
    inside = rel @ rel <= radius**2
    passes = (miss_sq <= radius**2) & (along >= (-radius if inside else 0.0))
    return np.flatnonzero(passes & (along < t_m + radius))


def test_culling_keeps_every_ray_that_passes_a_sphere() -> None:
    rng = np.random.default_rng(0)
    # image-like rays: rows of a pinhole camera looking along +x
    h, w = 37, 101
    yy, zz = np.meshgrid(np.linspace(-0.6, 0.6, w), np.linspace(-0.35, 0.35, h))
    dirs = np.stack([np.ones_like(yy), yy, zz], -1).reshape(-1, 3)
    dirs = (dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).astype(np.float32)
    box = trimesh.creation.box((4.0, 2.0, 1.5))
    part = MeshRaycaster([(box.vertices, box.faces)])
    radius = bounding_radius_m(box.vertices)
    centres = np.column_stack([rng.uniform(-3, 30, 12), rng.uniform(-8, 8, 12), rng.uniform(-2, 2, 12)])
    centres[0] = [0.5, 0.3, 0.2]  # the sensor inside a part's sphere
    poses = [make_pose(c, rot_z(rng.uniform(-np.pi, np.pi))) for c in centres]
    caster = CompositeCaster(part, [part] * len(poses), [radius] * len(poses), poses)
    origin = np.zeros(3)
    t_m = rng.uniform(5, 40, len(dirs)).astype(np.float32)
    got = list(caster._candidates(np.broadcast_to(origin, dirs.shape), dirs, t_m))
    assert len(got) == len(poses)
    for c, sel in zip(centres, got):
        expected = _sphere_rays(origin, c, radius, t_m, dirs)
        # the same rays, but for float32 rounding right at the sphere's rim
        assert len(np.setxor1d(sel, expected)) <= max(2, len(expected) // 500)
    assert sum(len(s) for s in got) > 0 and len(got[0]) > len(dirs) // 4


def test_composite_cast_takes_the_nearest_part() -> None:
    ground = trimesh.creation.box((200.0, 200.0, 0.1))
    ground.apply_translation([0, 0, -0.05])
    car = trimesh.creation.box((4.0, 2.0, 1.5))
    background = MeshRaycaster([(ground.vertices, ground.faces)])
    part = MeshRaycaster([(car.vertices, car.faces)])
    pose = make_pose([10.0, 0.0, 0.75])
    caster = CompositeCaster(background, [part], [bounding_radius_m(car.vertices)], [pose])
    dirs = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, -0.2], [0.0, 1.0, -0.1]], np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    hits = caster.cast(np.array([0.0, 0.0, 1.0]), dirs)
    assert hits.geometry[0] == 1 and abs(hits.t_m[0] - 8.0) < 1e-3  # the car's rear face at x = 8
    assert hits.geometry[1] == 0 and hits.geometry[2] == 0  # the ground, short of the car / beside it
