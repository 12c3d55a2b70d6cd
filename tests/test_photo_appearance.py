"""Photo-based appearance: view selection, visibility, exposure, actor lookups, the scene's photos on
disk, and that a held-out photo never influences a render."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from neurodrive.errors import DataError
from neurodrive.geometry import make_pose, rot_z
from neurodrive.logs.io import image_path, load_log
from neurodrive.logs.writer import encode_png
from neurodrive.raycast import native_photo
from neurodrive.reconstruct.evaluate import evaluate_appearances
from neurodrive.reconstruct.pipeline import reconstruct
from neurodrive.render.photo_blend import PhotoBlendConfig, blend_photos, select_photos
from neurodrive.render.rendering import SceneRenderer
from neurodrive.scene.model import SceneModel
from neurodrive.scene.photos import PhotoSet
from tests.conftest import FAST_RECON

W, H, F = 64, 48, 40.0  # photo size (px) and focal length (px)
K = np.array([[F, 0.0, W / 2], [0.0, F, H / 2], [0.0, 0.0, 1.0]])
FORWARD_X = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # camera z along world x


def photo_set(poses: list[np.ndarray], images: list[np.ndarray], gains=None, actor_poses=None) -> PhotoSet:
    """Photos taken from ``poses`` (T_world_camera) with exposure ``gain`` x colour; one actor 'car'."""
    n = len(poses)
    gains = gains or [1.0] * n
    exposure = np.array([np.column_stack([g * np.eye(3), np.zeros(3)]) for g in gains])
    actors = np.full((n, 1, 4, 4), np.nan) if actor_poses is None else np.array(actor_poses)[:, None]
    return PhotoSet(
        tuple(f"cam{k}" for k in range(n)),
        np.arange(n),
        np.tile([W, H], (n, 1)),
        np.array(poses, float),
        np.tile(K, (n, 1, 1)),
        np.zeros((n, 5)),
        exposure,
        ("car",),
        actors,
        tuple(encode_png(im) for im in images),
    )


def rays(points: np.ndarray, origin: np.ndarray, geometry: int) -> tuple[np.ndarray, ...]:
    """The rays from ``origin`` through ``points`` as ``blend_photos`` takes them: origin, unit
    directions, distances, and what each hit (``geometry``: 0 the background, g an actor, -1 nothing)."""
    offset = points - origin
    t = np.linalg.norm(offset, axis=1)
    return origin, (offset / t[:, None]).astype(np.float32), t.astype(np.float32), np.full(len(points), geometry)


def gradient_image() -> np.ndarray:
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    return np.stack([u * 3, v * 4, np.full_like(u, 100)], axis=-1).astype(np.uint8)


def wall_points(x_m: float, n: int = 5) -> np.ndarray:
    """Points on a wall x = x_m in front of a camera at the origin looking along +x."""
    y, z = np.meshgrid(np.linspace(-1.0, 1.0, n), np.linspace(-0.8, 0.8, n))
    return np.column_stack([np.full(y.size, x_m), y.ravel(), z.ravel()])


def test_views_are_selected_by_position_and_direction_not_frame() -> None:
    ahead = make_pose([2.0, 0.0, 0.0], FORWARD_X)
    near = make_pose([0.3, 0.2, 0.0], FORWARD_X)
    far = make_pose([-30.0, 0.0, 0.0], FORWARD_X)
    backwards = make_pose([0.1, 0.0, 0.0], rot_z(np.pi) @ FORWARD_X)
    turned = make_pose([0.0, 0.5, 0.0], rot_z(0.4) @ FORWARD_X)
    photos = photo_set([far, backwards, ahead, turned, near], [gradient_image()] * 5)
    query = make_pose([0.0, 0.0, 0.0], FORWARD_X)
    chosen = select_photos(photos, query, PhotoBlendConfig(candidates=3))
    assert chosen.tolist() == [4, 2, 3]  # nearest first; a slight turn costs more than 2 m; never the backward one
    assert 1 not in select_photos(photos, query, PhotoBlendConfig(candidates=5)).tolist()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"per_pixel": 5}, r"1 <= per_pixel <= candidates <= 64, got 5 and 4"),
        ({"depth_scale": 0.0}, r"photos\.depth_scale must lie in \(0, 1\], got 0\.0"),
        ({"depth_tolerance_m": float("nan")}, r"photos\.depth_tolerance_m must be a finite value >= 0, got nan"),
        ({"far_depth_m": -1.0}, r"photos\.far_depth_m must lie in \(0, 10000\] m"),
    ],
)
def test_photo_blend_config_names_the_bad_field(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PhotoBlendConfig(**fields)


def test_blend_undoes_each_photos_exposure_and_respects_visibility() -> None:
    image = gradient_image()
    darker = np.round(image * 0.5).astype(np.uint8)
    pose = make_pose([0.0, 0.0, 0.0], FORWARD_X)
    photos = photo_set([pose, pose], [image, darker], gains=[1.0, 0.5])
    points = wall_points(10.0)
    cfg = PhotoBlendConfig(border_px=0.0)
    depth = np.full((12, 16), 10.0, np.float32)
    args = (*rays(points, np.zeros(3), 0), {}, cfg)
    one, seen_one = blend_photos(photos, np.array([0]), [depth], *args)
    both, seen_both = blend_photos(photos, np.array([0, 1]), [depth, depth], *args)
    assert seen_one.all() and seen_both.all()
    np.testing.assert_allclose(both, one, atol=2.5 / 255)  # the darker photo's exposure is undone
    uv = (points[:, [1, 2]] * np.array([-1, -1]) / 10.0) * F + [W / 2, H / 2]
    expected = image[np.floor(uv[:, 1] - 0.5).astype(int), np.floor(uv[:, 0] - 0.5).astype(int)] / 255.0
    assert np.max(np.abs(one - expected)) < 5 / 255
    hidden = np.full((12, 16), 4.0, np.float32)  # something 4 m away hid the wall from the photo
    _, seen_hidden = blend_photos(photos, np.array([0]), [hidden], *args)
    assert not seen_hidden.any()


def test_actor_points_are_looked_up_in_the_box_frame() -> None:
    pose = make_pose([0.0, 0.0, 0.0], FORWARD_X)
    then = make_pose([10.0, 0.0, 0.0])
    now = make_pose([30.0, 5.0, 0.0], rot_z(0.3))
    photos = photo_set([pose], [gradient_image()], actor_poses=[then])
    box_points = wall_points(0.0)  # the actor's face, in its box frame
    depth = np.full((12, 16), 10.0, np.float32)
    cfg = PhotoBlendConfig(border_px=0.0)
    at_then, seen = blend_photos(
        photos, np.array([0]), [depth], *rays(box_points + [10.0, 0, 0], np.zeros(3), 1), {1: ("car", then)}, cfg
    )
    moved = box_points @ now[:3, :3].T + now[:3, 3]
    camera_now = now @ np.linalg.inv(then) @ pose  # the same view of the actor
    at_now, seen_now = blend_photos(
        photos, np.array([0]), [depth], *rays(moved, camera_now[:3, 3], 1), {1: ("car", now)}, cfg
    )
    assert seen.all() and seen_now.all()
    np.testing.assert_allclose(at_now, at_then, atol=1e-4)
    _, seen_absent = blend_photos(
        photos, np.array([0]), [depth], *rays(moved, np.zeros(3), 1), {1: ("other", now)}, cfg
    )
    assert not seen_absent.any()  # an actor the photo did not record is never looked up there


def test_scene_keeps_the_training_photos_as_the_logs_bytes(tiny_scene_dir: Path, tiny_log_dir: Path) -> None:
    model = SceneModel.load(tiny_scene_dir)
    photos = model.photos
    assert photos is not None and len(photos) > 0
    assert set(photos.frame.tolist()) <= set(model.meta.training_frames)
    assert not set(photos.frame.tolist()) & set(model.meta.holdout_frames)
    for k in (0, len(photos) - 1):
        assert photos.encoded[k] == image_path(tiny_log_dir, photos.camera[k], int(photos.frame[k])).read_bytes()
    assert model.meta.photos is not None and model.meta.photos.disk_bytes == photos.disk_bytes


def test_a_copied_scene_renders_the_same_without_its_log(tiny_scene_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_scene_dir, tmp_path / "copy")
    log = load_log(SceneModel.load(tiny_scene_dir).meta.log.path)
    frame = SceneModel.load(tiny_scene_dir).meta.holdout_frames[0]
    images = []
    for folder in (tiny_scene_dir, copy):
        renderer = SceneRenderer(SceneModel.load(folder))
        assert renderer.appearance == "photos"
        placed = renderer.place({a: p for a, p in log.actor_poses_at(frame).items() if a in renderer.scene.actors})
        images.append(renderer.render_camera(placed, log.rig.cameras[0], log.ego_poses[frame]).rgb)
    np.testing.assert_array_equal(images[0], images[1])
    (copy / "photos" / "000000.png").unlink()
    with pytest.raises(DataError, match=r"000000\.png.*missing photo file"):
        SceneModel.load(copy)


def test_held_out_photos_never_influence_a_render(tiny_log_dir: Path, tiny_scene_dir: Path, tmp_path: Path) -> None:
    """Reconstructing from a copy of the log whose held-out images are noise gives the same renders
    and the same held-out metrics (both appearance modes)."""
    noisy = shutil.copytree(tiny_log_dir, tmp_path / "noisy")
    log = load_log(noisy)
    scene = SceneModel.load(tiny_scene_dir)
    rng = np.random.default_rng(0)
    for f in scene.meta.holdout_frames:
        for cam in log.rig.cameras:
            if log.has_image(cam.name, f):
                noise = rng.integers(0, 256, (cam.height_px, cam.width_px, 3), dtype=np.uint8)
                image_path(noisy, cam.name, f).write_bytes(encode_png(noise))
    other = reconstruct(load_log(noisy), tmp_path / "scene", FAST_RECON)
    truth = load_log(tiny_log_dir)
    kwargs = {"lane_shift": False, "actor_edits": False, "supersample": 1}
    a = evaluate_appearances(scene, truth, "both", **kwargs)
    b = evaluate_appearances(SceneModel.load(tmp_path / "scene"), truth, "both", **kwargs)
    assert a["appearance"] == "photos" and "texels" in a
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    f = scene.meta.holdout_frames[0]
    cam = truth.rig.cameras[0]
    renders = []
    for model in (scene, other):
        renderer = SceneRenderer(model)
        placed = renderer.place({a: p for a, p in truth.actor_poses_at(f).items() if a in model.actors})
        renders.append(renderer.render_camera(placed, cam, truth.ego_poses[f]).rgb)
    np.testing.assert_array_equal(renders[0], renders[1])


@pytest.mark.skipif(not native_photo.available(), reason="the native extension is not built")
@pytest.mark.parametrize("far", [False, True])
def test_native_and_numpy_blends_agree(far: bool) -> None:
    rng = np.random.default_rng(3)
    poses = [make_pose([rng.uniform(-1, 1), rng.uniform(-1, 1), 0.0], rot_z(rng.uniform(-0.2, 0.2)) @ FORWARD_X)
             for _ in range(4)]  # fmt: skip
    poses[0] = make_pose([0.0, 0.0, 0.0], FORWARD_X)  # the two whose depth maps see the wall at 8 m
    poses[1] = make_pose([0.0, 0.5, 0.0], rot_z(0.1) @ FORWARD_X)
    images = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(4)]
    photos = photo_set(poses, images, gains=[1.0, 0.8, 1.2, 0.9])
    photos.distortion[2] = [0.05, -0.01, 0.001, 0.0, 0.0]
    points = wall_points(8.0, 30) + rng.normal(0, 0.01, (900, 3))
    unseen = 8.0 if far else 2.0  # far: where rays hit something; else: an occluder
    depth = np.full((12, 16), unseen, np.float32)
    seen = np.inf if far else 8.0
    right, bottom = depth.copy(), depth.copy()
    right[:, 8:] = seen  # photo 0 sees the points on its right half, photo 1 on its bottom half
    bottom[6:] = seen
    maps = [right, bottom] + [depth] * 2
    origin = np.array([0.2, 0.1, 0.0])
    args = (*rays(points, origin, -1 if far else 0), {}, PhotoBlendConfig(far_depth_m=8.0))
    fast, seen_fast = blend_photos(photos, np.arange(4), maps, *args, native=True)
    slow, seen_slow = blend_photos(photos, np.arange(4), maps, *args, native=False)
    assert 0.3 < seen_slow.mean() < 1.0
    np.testing.assert_array_equal(seen_fast, seen_slow)
    np.testing.assert_allclose(fast, slow, atol=5e-4)  # float32 against float64 penalties: < 0.2 of a grey level


def test_photos_do_not_pop_as_the_ego_creeps_forward(tiny_scene_dir: Path) -> None:
    """2 m in 5 cm steps: the photos chosen change on the way, yet no step changes the image much
    more than a typical one (Unstructured Lumigraph weights fade a photo out before it is dropped)."""
    model = SceneModel.load(tiny_scene_dir)
    log = load_log(model.meta.log.path)
    renderer = SceneRenderer(model, appearance="photos")
    placed = renderer.place({a: p for a, p in log.actor_poses_at(2).items() if a in model.actors})
    cam = log.rig.cameras[0]
    poses = [log.ego_poses[2] @ make_pose([0.05 * i, 0.0, 0.0]) for i in range(40)]
    chosen = {tuple(select_photos(model.photos, p @ cam.T_ego_camera, renderer.photo_config)) for p in poses}
    assert len(chosen) > 1
    images = [renderer.render_camera(placed, cam, p).rgb.astype(float) for p in poses]
    steps = np.array([np.abs(a - b).mean() for a, b in zip(images, images[1:])])
    assert steps.max() < 2.5 * np.median(steps), steps.round(2)


def test_a_corrupt_photo_names_its_file(tiny_scene_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_scene_dir, tmp_path / "copy")
    photo = copy / "photos" / "000001.png"
    photo.write_bytes(photo.read_bytes()[:200])  # truncated
    photos = SceneModel.load(copy).photos
    assert photos is not None
    with pytest.raises(DataError, match=r"000001\.png.*corrupt or truncated photo"):
        photos.image(1)
    (copy / "photos" / "index.npz").write_bytes(b"not an npz")
    with pytest.raises(DataError, match=r"index\.npz"):
        SceneModel.load(copy)


def test_the_requested_exposure_is_applied_to_the_blend(tiny_scene_dir: Path) -> None:
    """Photo colours are scene colours with each photo's exposure undone: rendered through a
    brighter exposure, every pixel follows that exposure's affine map (none keeps a photo's own)."""
    model = SceneModel.load(tiny_scene_dir)
    log = load_log(model.meta.log.path)
    cam = log.rig.cameras[0]
    base = model.decoder.exposure(cam.name)
    bright = base.copy()
    bright[:, :3] *= 1.25
    model.decoder.exposures["bright"] = bright
    renderer = SceneRenderer(model, appearance="photos")
    f = model.meta.holdout_frames[0]
    placed = renderer.place({a: p for a, p in log.actor_poses_at(f).items() if a in model.actors})
    normal = renderer.render_camera(placed, cam, log.ego_poses[f]).rgb.reshape(-1, 3) / 255.0
    brighter = renderer.render_camera(placed, cam, log.ego_poses[f], exposure_camera="bright").rgb.reshape(-1, 3)
    scene = (normal - base[:, 3]) @ np.linalg.inv(base[:, :3]).T
    expected = np.clip(scene @ bright[:, :3].T + bright[:, 3], 0, 1) * 255
    mid = np.all((normal > 0.05) & (normal < 0.7), axis=1)
    assert mid.mean() > 0.5
    assert np.abs(expected[mid] - brighter[mid]).mean() < 1.5
