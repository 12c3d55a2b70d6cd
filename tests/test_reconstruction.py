"""Reconstruction from a log: geometry, appearance, actors, LiDAR model, resume, evaluation."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from neurodrive.errors import DataError
from neurodrive.logs.io import load_log
from neurodrive.reconstruct.config import holdout_frames
from neurodrive.reconstruct.evaluate import evaluate_reconstruction, psnr
from neurodrive.reconstruct.pipeline import reconstruct
from neurodrive.reconstruct.tsdf import SparseTsdf
from neurodrive.render.rendering import SceneRenderer
from neurodrive.scene.model import SceneModel
from neurodrive.scene.surface import ActorAsset, SurfaceMesh
from neurodrive.scene.texels import TexelAtlas
from tests.conftest import FAST_RECON as FAST


@pytest.fixture(scope="module")
def scene_dir(tiny_scene_dir: Path) -> Path:
    return tiny_scene_dir


@pytest.fixture(scope="module")
def model(scene_dir: Path) -> SceneModel:
    return SceneModel.load(scene_dir)


def test_tsdf_recovers_a_plane_and_a_box_from_rays() -> None:
    rng = np.random.default_rng(0)
    tsdf = SparseTsdf(0.1, 0.3)
    for origin in (np.array([-3.0, 0.0, 2.0]), np.array([3.0, 1.0, 2.0])):
        d = rng.normal(size=(60000, 3))
        d[:, 2] = -np.abs(d[:, 2]) - 0.3
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        t_ground = -origin[2] / d[:, 2]
        # an axis-aligned box [-1, 1] x [-1, 1] x [0, 1]: intersect by slabs
        inv = 1.0 / d
        t0, t1 = (np.array([-1, -1, 0]) - origin) * inv, (np.array([1, 1, 1]) - origin) * inv
        t_near = np.minimum(t0, t1).max(axis=1)
        t_far = np.maximum(t0, t1).min(axis=1)
        hit_box = (t_near < t_far) & (t_near > 0)
        t = np.where(hit_box, np.minimum(t_near, t_ground), t_ground)
        pts = origin + d * t[:, None]
        keep = np.abs(pts[:, :2]).max(axis=1) < 6
        tsdf.integrate(origin, pts[keep] + rng.normal(0, 0.005, (keep.sum(), 3)))
    v, f = tsdf.extract_mesh()
    assert len(f) > 1000
    on_ground = np.abs(v[:, 2]) < 0.05
    on_box_top = (np.abs(v[:, 2] - 1.0) < 0.05) & (np.abs(v[:, :2]).max(axis=1) < 0.9)
    assert on_ground.mean() > 0.5 and on_box_top.sum() > 50
    # every vertex lies near the true surface
    box_distance = np.abs(np.max(np.abs(v - [0, 0, 0.5]) - [1, 1, 0.5], axis=1))
    err = np.minimum(np.abs(v[:, 2]), box_distance)
    assert np.median(err) < 0.01 and np.percentile(err, 95) < 0.06


def test_texel_atlas_maps_every_texel_centre_to_itself() -> None:
    from neurodrive.raycast.open3d_caster import MeshRaycaster

    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    f = np.array([[0, 1, 2], [1, 3, 2]])
    atlas = TexelAtlas.build(v, f, np.array([0.1, 0.45]))
    assert list(atlas.resolution) == [15, 4] and atlas.num_texels == 15 * 16 // 2 + 4 * 5 // 2
    centres = atlas.texel_centres(v, f)
    hits = MeshRaycaster([(v, f)]).cast(centres + [0, 0, 1.0], np.tile([0, 0, -1.0], (len(centres), 1)))
    np.testing.assert_array_equal(atlas.lookup(hits.triangle, hits.uv), np.arange(len(centres)))


def test_held_out_frames_are_excluded_and_reproduced(model: SceneModel, tiny_log_dir: Path) -> None:
    log = load_log(tiny_log_dir)
    assert model.meta.holdout_frames == holdout_frames(log.num_frames, FAST) == [2, 7]
    assert not set(model.meta.training_frames) & {2, 7}
    metrics = evaluate_reconstruction(model, log)
    # a flat mean-colour image is the no-model baseline
    baseline = np.mean(
        [
            psnr(
                np.full_like(log.image(c, f), log.image(c, f).reshape(-1, 3).mean(0).astype(np.uint8)), log.image(c, f)
            )
            for c in log.rig.camera_names
            for f in (2, 7)
        ]
    )
    assert metrics["psnr_db"] > baseline + 4.0
    assert metrics["ssim"] > 0.4
    assert metrics["lidar_median_depth_error_m"] < 0.05
    assert metrics["lidar_intensity_rmse"] < 0.1
    assert metrics["lidar_chamfer_m"] < 1.5
    assert metrics["lane_shift_psnr_db"] > baseline + 2.0


def test_named_holdout_protocols() -> None:
    from typer.testing import CliRunner

    from neurodrive.app.cli import app
    from neurodrive.reconstruct.config import ReconConfig, holdout_protocol, with_holdout

    neurad = with_holdout(ReconConfig(), "every-other")
    assert holdout_frames(10, neurad) == [1, 3, 5, 7, 9] and holdout_protocol(neurad) == "every-other"
    assert holdout_frames(10, with_holdout(ReconConfig(), "every-5th")) == [2, 7] == holdout_frames(10, ReconConfig())
    assert holdout_protocol(ReconConfig(holdout_every=3, holdout_phase=0)) == "1 frame in 3, from frame 0"
    result = CliRunner().invoke(app, ["reconstruct", "LOG", "--out", "OUT", "--holdout", "half"])
    assert result.exit_code == 2 and "--holdout must be one of every-5th, every-other, got 'half'" in result.output


def test_reconstruction_configs_check_their_ranges(tiny_log_dir: Path, tmp_path: Path) -> None:
    """Python callers get the same range checks as the command line; the command line names its option."""
    from typer.testing import CliRunner

    from neurodrive.app.cli import app
    from neurodrive.reconstruct.config import AppearanceConfig, GeometryConfig, ReconConfig

    for make, message in (
        (lambda: GeometryConfig(voxel_size_m=5.0), r"geometry\.voxel_size_m must lie in \[0\.01, 1\.0\] m, got 5\.0"),
        (lambda: AppearanceConfig(train_steps=0), r"appearance\.train_steps must be at least 1, got 0"),
        (lambda: ReconConfig(holdout_every=1), r"holdout_every must be >= 2"),
        (lambda: ReconConfig(holdout_every=5, holdout_phase=5), r"0 <= holdout_phase < holdout_every"),
    ):
        with pytest.raises(ValueError, match=message):
            make()
    out = tmp_path / "scene"
    result = CliRunner().invoke(app, ["reconstruct", str(tiny_log_dir), "--out", str(out), "--steps", "0"])
    assert result.exit_code == 2 and "--steps: appearance.train_steps must be at least 1" in result.output
    assert not out.exists()


def test_fitting_appearance_reduces_the_error(model: SceneModel, tiny_log_dir: Path) -> None:
    log = load_log(tiny_log_dir)
    frame = model.meta.training_frames[1]
    renderer = SceneRenderer(model)
    scene = renderer.place({a: p for a, p in log.actor_poses_at(frame).items() if a in model.actors})
    fitted = np.mean(
        [
            psnr(renderer.render_camera(scene, c, log.ego_poses[frame]).rgb, log.image(c.name, frame))
            for c in log.rig.cameras
        ]
    )
    # the same geometry with unfitted texels (one mean colour) and untrained exposure
    bg = model.background
    flat = np.tile(bg.texels.mean(axis=0), (len(bg.texels), 1))
    untrained = SceneModel(
        replace(bg, texels=flat, baked_rgb=None),
        {},
        replace(model.decoder, exposures={}),
        model.sky,
        model.lidar_models,
        model.meta,
    )
    untrained_renderer = SceneRenderer(untrained)
    flat_scene = untrained_renderer.place({})
    before = np.mean(
        [
            psnr(untrained_renderer.render_camera(flat_scene, c, log.ego_poses[frame]).rgb, log.image(c.name, frame))
            for c in log.rig.cameras
        ]
    )
    assert fitted > before + 5.0
    # per-camera exposure is learned: the generator gives front_right a brighter gain than front_left
    gain = {c: np.trace(e[:, :3]) / 3 + e[:, 3].mean() for c, e in model.decoder.exposures.items()}
    assert gain["front_right"] > gain["front"] > gain["front_left"]


def test_local_sky_maps_follow_the_ego_and_fit_better(model: SceneModel, tiny_log_dir: Path) -> None:
    log = load_log(tiny_log_dir)
    sky = model.sky
    train = model.meta.training_frames
    assert sky.local_images.shape == (len(train), *sky.image.shape)
    np.testing.assert_allclose(sky.local_xy_m, log.ego_poses[train][:, :2, 3], atol=1e-4)
    frame = train[2]
    scene = SceneRenderer(model).place({a: p for a, p in log.actor_poses_at(frame).items() if a in model.actors})
    errors = {}

    def variant(**changes) -> SceneModel:
        return SceneModel(
            model.background, model.actors, model.decoder, replace(sky, **changes), model.lidar_models, model.meta
        )

    for name, scene_variant in (
        ("far field", model),
        ("local", variant(far_field=None)),
        ("global", variant(far_field=None, local_images=None, local_xy_m=None)),
    ):
        cam = log.rig.cameras[0]
        render = SceneRenderer(scene_variant).render_camera(scene, cam, log.ego_poses[frame])
        missed = ~np.isfinite(render.depth_m)
        assert missed.sum() > 100
        diff = render.rgb[missed].astype(float) - log.image(cam.name, frame)[missed]
        errors[name] = float(np.mean(diff**2))
    assert errors["local"] < 0.8 * errors["global"]
    assert errors["far field"] < 0.5 * errors["local"]  # the training photo itself, not a blurred map


def test_actor_assets_are_symmetric_and_reusable(model: SceneModel, scene_dir: Path) -> None:
    assert model.actors, "every tracked actor gets an asset"
    for aid, asset in model.actors.items():
        assert np.all(np.abs(asset.mesh.vertices) <= asset.size_m / 2 + 0.03), aid
    car = max((a for a in model.actors.values() if a.category == "car"), key=lambda a: len(a.mesh.triangles))
    v = car.mesh.vertices
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(v).query(v * [1, -1, 1])
    assert np.median(dist) < 0.03  # left-right symmetry prior
    # assets load standalone (for insertion into other scenes)
    again = ActorAsset.load(scene_dir / "actors" / f"{car.actor_id}.npz")
    np.testing.assert_array_equal(again.mesh.texels, car.mesh.texels)
    assert again.category == "car"


def test_learned_lidar_model(model: SceneModel, tiny_log_dir: Path) -> None:
    log = load_log(tiny_log_dir)
    frame = 7
    renderer = SceneRenderer(model)
    scene = renderer.place({a: p for a, p in log.actor_poses_at(frame).items() if a in model.actors})
    pred = renderer.render_lidar(scene, log.rig.lidar, log.ego_poses[frame])
    real = log.lidar(frame)
    lidar = log.rig.lidar
    both = pred.sweep.return_mask(lidar) & real.return_mask(lidar)
    pi, ri = pred.sweep.ray_image(lidar, pred.sweep.intensity), real.ray_image(lidar, real.intensity)
    assert np.corrcoef(pi[both], ri[both])[0, 1] > 0.5  # learned reflectivity tracks the real one
    assert 0.0 <= model.lidar_model("top").alpha <= 1.0
    # learned ray drop on this held-out frame: more rays right than "every ray that hits returns"
    real_mask = real.return_mask(lidar)
    hit_mask = pred.return_probability > 0
    learned = np.mean(pred.sweep.return_mask(lidar) == real_mask)
    assert model.lidar_model("top").drop is not None
    assert learned > np.mean(hit_mask == real_mask) + 0.002, (learned, np.mean(hit_mask == real_mask))
    # sampled drops are seeded: same seed, same sweep
    a = renderer.render_lidar(scene, lidar, log.ego_poses[frame], rng=np.random.default_rng(3)).sweep
    b = renderer.render_lidar(scene, lidar, log.ego_poses[frame], rng=np.random.default_rng(3)).sweep
    np.testing.assert_array_equal(a.xyz_m, b.xyz_m)
    assert a.num_returns < pred.return_probability.size


def test_interrupted_reconstruction_resumes(tiny_log_dir: Path, tmp_path: Path) -> None:
    log = load_log(tiny_log_dir)
    out = tmp_path / "scene"

    def killer(stage: str, done: int, total: int) -> None:
        if stage == "training appearance" and done == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reconstruct(log, out, FAST, killer)
    assert not (out / "scene.json").exists()
    assert json.loads((out / "checkpoints" / "appearance.json").read_text())["step"] == 20
    calls: list[tuple[str, int]] = []
    model = reconstruct(log, out, FAST, lambda s, d, n: calls.append((s, d)))
    assert not any(s == "background geometry" for s, _ in calls)  # geometry came from the checkpoint
    assert min(d for s, d in calls if s == "training appearance") == 21  # training went on from step 20
    assert (out / "scene.json").is_file() and not (out / "checkpoints").exists()
    assert len(model.actors) > 0


def test_scene_files_are_safe_and_validated(scene_dir: Path, tmp_path: Path) -> None:
    for npz in scene_dir.rglob("*.npz"):
        with np.load(npz, allow_pickle=False) as data:
            assert all(data[k].dtype != object for k in data.files)
    bad = tmp_path / "bad"
    shutil.copytree(scene_dir, bad)
    data = (bad / "background.npz").read_bytes()
    (bad / "background.npz").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="background.npz"):
        SceneModel.load(bad)
    meta = json.loads((scene_dir / "scene.json").read_text())
    (bad / "scene.json").write_text(json.dumps(meta | {"version": 1}))  # an older scene format
    with pytest.raises(DataError, match="version.*reconstruct"):
        SceneModel.load(bad)
    shutil.copy(scene_dir / "background.npz", bad / "background.npz")
    for models, field in (([], "lidar_models"), ([{"name": "top", "alpha": "x"}], "lidar_models[0].alpha")):
        (bad / "scene.json").write_text(json.dumps(meta | {"lidar_models": models}))
        with pytest.raises(DataError) as info:
            SceneModel.load(bad)
        assert (Path(info.value.file).name, info.value.field) == ("scene.json", field)
    (bad / "scene.json").unlink()
    with pytest.raises(DataError, match="scene.json"):
        SceneModel.load(bad)
    with pytest.raises(DataError, match="texels"):
        arrays = dict(np.load(scene_dir / "background.npz"))
        arrays["texels"] = arrays["texels"][:-1]
        SurfaceMesh.from_arrays(Path("background.npz"), arrays)
    with pytest.raises(DataError, match="lidar_drop_rates"):
        arrays = dict(np.load(scene_dir / "background.npz"))
        arrays["lidar_drop_rates"] = arrays["lidar_drop_rates"][:, :2]
        SurfaceMesh.from_arrays(Path("background.npz"), arrays)


def test_rays_behind_actor_boxes_match_a_test_of_every_ray_against_every_box(tiny_log_dir: Path) -> None:
    """The cone culling in ``behind_actor_boxes`` (each box against the rays that point its way) gives
    what a slab test of every ray against every box gives."""
    from neurodrive.reconstruct.texturing import behind_actor_boxes

    log = load_log(tiny_log_dir)
    frame = 3
    rng = np.random.default_rng(0)
    origin = log.ego_poses[frame][:3, 3] + np.array([0.0, 0.0, 1.6])
    dirs = rng.normal(size=(20_000, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    t_background = np.where(rng.random(20_000) < 0.1, np.inf, rng.uniform(0.0, 80.0, 20_000))
    expected = np.zeros(len(dirs), bool)
    for track in log.tracks:
        if not track.valid[frame]:
            continue
        T = track.poses[frame]
        o, d, half = (origin - T[:3, 3]) @ T[:3, :3], dirs @ T[:3, :3], track.size_m / 2 + 0.3
        with np.errstate(divide="ignore", invalid="ignore"):
            t0, t1 = (-half - o) / d, (half - o) / d
        near, far = np.nanmax(np.minimum(t0, t1), axis=1), np.nanmin(np.maximum(t0, t1), axis=1)
        expected |= (near <= far) & (far > 0) & (np.maximum(near, 0) < t_background) & (t_background > 0)
    got = behind_actor_boxes(log, frame, origin, dirs, t_background, 0.3)
    assert expected.sum() > 100 and np.array_equal(got, expected)
