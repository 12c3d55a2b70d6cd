"""Native Embree caster: the same hits as the open3d composite caster, the same renders, and the
caster selection by NEURODRIVE_RAYCASTER."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from neurodrive.geometry import make_pose, rot_z
from neurodrive.raycast import embree as native
from neurodrive.raycast.base import bounding_radius_m
from neurodrive.raycast.open3d_caster import CompositeCaster, MeshRaycaster

pytestmark = pytest.mark.skipif(not native.native_built(), reason="native caster not built (needs libembree-dev)")


def _town() -> tuple[trimesh.Trimesh, trimesh.Trimesh, list[np.ndarray]]:
    ground = trimesh.creation.box((120.0, 120.0, 1.0))
    ground.apply_translation([0, 0, -0.5])
    wall = trimesh.creation.box((2.0, 60.0, 8.0))
    wall.apply_translation([30.0, 0.0, 4.0])
    background = trimesh.util.concatenate([ground, wall])
    car = trimesh.creation.cone(1.2, 1.8, sections=12)  # not symmetric: a wrong rotation would show
    car.apply_translation([0.5, 0.0, -0.9])
    rng = np.random.default_rng(3)
    poses = [
        make_pose([rng.uniform(4, 25), rng.uniform(-8, 8), 0.9], rot_z(rng.uniform(-np.pi, np.pi))) for _ in range(6)
    ]
    return background, car, poses


def _grid_dirs(rows: int, cols: int) -> np.ndarray:
    az, el = np.meshgrid(np.linspace(-np.pi, np.pi, cols, endpoint=False), np.linspace(0.3, -0.5, rows))
    return (
        np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3).astype(np.float32)
    )


def test_native_hits_match_open3d_composite_caster() -> None:
    background, car, poses = _town()
    composite = CompositeCaster(
        MeshRaycaster([(background.vertices, background.faces)]),
        [MeshRaycaster([(car.vertices, car.faces)])] * len(poses),
        [bounding_radius_m(car.vertices)] * len(poses),
        poses,
    )
    placed = native.NativePlacement(
        [native.NativeMesh(background.vertices, background.faces)]
        + [native.NativeMesh(car.vertices, car.faces)] * len(poses),
        [np.eye(4)] + poses,
    )
    rows, cols = 37, 203  # neither a multiple of the 4 x 4 packets
    dirs = _grid_dirs(rows, cols)
    origin = np.array([0.0, 0.0, 1.7])
    expected = composite.cast(origin, dirs)
    assert 0 < np.sum(expected.geometry >= 1) and np.sum(expected.geometry == -1) > 0  # actors, background and sky seen
    for got in (placed.cast(origin, dirs, grid=(rows, cols)), placed.cast(np.tile(origin, (len(dirs), 1)), dirs)):
        np.testing.assert_array_equal(got.geometry, expected.geometry)
        np.testing.assert_array_equal(got.triangle, expected.triangle)
        hit = expected.hit
        assert np.all(np.isinf(got.t_m[~hit]))
        np.testing.assert_allclose(got.t_m[hit], expected.t_m[hit], atol=1e-4)
        np.testing.assert_allclose(got.uv[hit], expected.uv[hit], atol=1e-4)
        np.testing.assert_allclose(got.normals[hit], expected.normals[hit], atol=1e-5)
    with pytest.raises(ValueError, match="transform 1"):
        native.NativePlacement(placed._meshes[:2], [np.eye(4), np.full((4, 4), np.nan)])
    no_normals = placed.cast(origin, dirs, normals=False, grid=(rows, cols))
    assert not no_normals.normals.any() and np.array_equal(no_normals.geometry, expected.geometry)


def test_native_shading_reads_the_same_texels_as_numpy() -> None:
    from neurodrive.scene.texels import TexelAtlas

    background, _, _ = _town()
    mesh = native.NativeMesh(background.vertices, background.faces)
    placed = native.NativePlacement([mesh], [np.eye(4)])
    rng = np.random.default_rng(0)
    atlas = TexelAtlas.build(background.vertices, background.faces, rng.uniform(0.5, 20.0, len(background.faces)))
    colours = rng.integers(0, 2**32, atlas.num_texels, dtype=np.uint64).astype(np.uint32)
    hits = placed.cast(np.array([0.0, 0.0, 1.7]), _grid_dirs(64, 256), grid=(64, 256))
    rgb = np.full((len(hits.t_m), 3), -1.0, np.float32)
    unseen = native.shade_texels(hits, [atlas.packed], [colours], rgb)
    hit = hits.hit
    packed = colours[atlas.lookup(hits.triangle[hit], hits.uv[hit])].view(np.uint8).reshape(-1, 4)
    np.testing.assert_allclose(rgb[hit], packed[:, :3] / 255.0, atol=1e-6)
    assert np.all(rgb[~hit] == -1.0)  # misses untouched (the sky is drawn by the caller)
    assert unseen == int(np.sum(packed[:, 3] == 0))


@pytest.mark.parametrize(("appearance", "share"), [("texels", 0.002), ("photos", 0.01)])
def test_scene_renders_agree_between_casters(
    tiny_scene_dir: Path, tiny_log_dir: Path, monkeypatch: pytest.MonkeyPatch, appearance: str, share: float
) -> None:
    """Both casters give the same images up to rays grazing an edge (with photos, an edge ray of a
    photo's quarter-resolution depth map decides a whole cell's visibility: a looser share)."""
    from neurodrive.logs.io import load_log
    from neurodrive.render.rendering import SceneRenderer
    from neurodrive.scene.model import SceneModel

    model = SceneModel.load(tiny_scene_dir)
    log = load_log(tiny_log_dir)
    frame = log.num_frames // 2
    poses = {a: p for a, p in log.actor_poses_at(frame).items() if a in model.actors}
    assert poses
    renders = {}
    for caster in ("embree", "open3d"):
        monkeypatch.setenv(native.ENV_VAR, caster)
        renderer = SceneRenderer(model, appearance=appearance)
        placed = renderer.place(poses)
        assert isinstance(placed.caster, native.NativePlacement) == (caster == "embree")
        renders[caster] = renderer.render_frame(placed, log.ego_poses[frame], log.rig.cameras, log.rig.lidars)
    a, b = renders["embree"], renders["open3d"]
    for name, cam in a.cameras.items():
        other = b.cameras[name]
        assert np.mean(np.any(cam.rgb != other.rgb, axis=-1)) < share  # rays grazing an edge may differ
        assert np.mean(cam.instance != other.instance) < 0.002
        assert abs(cam.unseen_share - other.unseen_share) < 0.002
    assert abs(len(a.lidar.sweep.xyz_m) - len(b.lidar.sweep.xyz_m)) <= len(b.lidar.sweep.xyz_m) // 500 + 2
    assert np.mean(np.abs(a.lidar.return_probability - b.lidar.return_probability) > 1e-3) < 0.005


def test_caster_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV_VAR, "open3d")
    assert not native.native_available()
    monkeypatch.setenv(native.ENV_VAR, "auto")
    assert native.native_available() and "native Embree" in native.caster_description()
    monkeypatch.setenv(native.ENV_VAR, "cuda")
    with pytest.raises(ValueError, match="NEURODRIVE_RAYCASTER"):
        native.native_available()
    monkeypatch.setenv(native.ENV_VAR, "embree")
    monkeypatch.setattr(native, "_library", lambda: None)
    with pytest.raises(native.NativeCasterUnavailable, match="libembree-dev"):
        native.native_available()
    monkeypatch.setenv(native.ENV_VAR, "auto")
    assert not native.native_available()  # not built: open3d, silently
    assert "libembree-dev" in native.caster_description()


_FORKED: dict = {}  # set before forking: ctypes handles cannot be pickled, forked workers inherit them


def _cast_in_worker(shift: float) -> np.ndarray:
    meshes, dirs = _FORKED["meshes"], _FORKED["dirs"]
    moved = native.NativePlacement(meshes, [np.eye(4), make_pose([shift, 0.0, 0.0])])  # a new top-level BVH here
    return moved.cast(np.array([0.0, 0.0, 1.7]), dirs, grid=(16, 64)).t_m


def test_meshes_built_before_fork_cast_in_forked_workers() -> None:
    """``gymnasium.make_vec(..., "async")`` and ``neurodrive eval`` fork: meshes built in the parent
    must keep working, and new placements must build, in the children."""
    import multiprocessing as mp

    background, car, _ = _town()
    _FORKED["meshes"] = [
        native.NativeMesh(background.vertices, background.faces),
        native.NativeMesh(car.vertices, car.faces),
    ]
    _FORKED["dirs"] = _grid_dirs(16, 64)
    shifts = [5.0, 8.0, 12.0]
    expected = [_cast_in_worker(s) for s in shifts]
    with mp.get_context("fork").Pool(2) as pool:
        got = pool.map(_cast_in_worker, shifts)
    _FORKED.clear()
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)
    assert not np.array_equal(expected[0], expected[2])  # the car moved
