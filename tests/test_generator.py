"""The procedural town generator: determinism, ground truth, and geometric consistency of the log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely

from neurodrive.geometry import invert_pose, make_pose, points_in_box, transform_points
from neurodrive.logs.io import load_log
from neurodrive.sources.synthetic.generate import GROUND_TRUTH_DIR, generate_log
from neurodrive.sources.synthetic.presets import get_preset
from neurodrive.sources.synthetic.raycaster import NO_ACTOR, WorldRenderer
from neurodrive.sources.synthetic.world import World


@pytest.fixture(scope="module")
def log(tiny_log_dir: Path):
    return load_log(tiny_log_dir)


@pytest.fixture(scope="module")
def gt(tiny_log_dir: Path) -> WorldRenderer:
    return WorldRenderer(World.load(tiny_log_dir / GROUND_TRUTH_DIR))


def test_log_has_rig_frames_and_actors(log) -> None:
    assert log.num_frames == 8
    assert log.rig.camera_names == ("front", "front_left", "front_right")
    assert log.rig.lidar.num_beams == 32
    np.testing.assert_allclose(np.diff(log.timestamps_s), 0.1)
    assert {t.category for t in log.tracks} == {"car", "pedestrian"}
    moving = [t for t in log.tracks if not t.is_static()]
    assert len(moving) >= 3
    # the ego moves forward along +x at a plausible urban speed
    speed = np.diff(log.ego_poses[:, 0, 3]) / np.diff(log.timestamps_s)
    assert np.all((speed > 5) & (speed < 15))


def test_generation_is_deterministic(tiny_log_dir: Path, tmp_path: Path) -> None:
    cfg = get_preset("tiny", num_frames=2)
    a = load_log(generate_log(cfg, tmp_path / "a"))
    b = load_log(generate_log(cfg, tmp_path / "b"))
    c = load_log(generate_log(get_preset("tiny", seed=7, num_frames=2), tmp_path / "c"))
    for frame in range(2):
        np.testing.assert_array_equal(a.image("front", frame), b.image("front", frame))
        np.testing.assert_array_equal(a.lidar(frame).xyz_m, b.lidar(frame).xyz_m)
        np.testing.assert_array_equal(a.lidar(frame).intensity, b.lidar(frame).intensity)
    assert not np.array_equal(a.image("front", 0), c.image("front", 0))
    # the first frames of the 8-frame log match the 2-frame one: frames are independent of log length
    full = load_log(tiny_log_dir)
    np.testing.assert_array_equal(full.image("front_left", 1), a.image("front_left", 1))


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path) -> None:
    cfg = get_preset("tiny", num_frames=1)
    out = generate_log(cfg, tmp_path / "log")
    before = (out / "log.json").read_bytes()
    with pytest.raises(FileExistsError):
        generate_log(cfg, out)
    assert (out / "log.json").read_bytes() == before
    generate_log(get_preset("tiny", num_frames=2), out, overwrite=True)
    assert load_log(out).num_frames == 2
    assert not list(tmp_path.glob(".*partial"))


def test_images_look_like_a_street(log) -> None:
    img = log.image("front", 0).astype(float)
    sky = img[:8].reshape(-1, 3)
    road = img[-15:, 60:100].reshape(-1, 3)
    assert sky[:, 2].mean() > sky[:, 0].mean() + 10  # blue-ish sky at the top
    assert np.abs(road[:, 0] - road[:, 2]).mean() < 12  # grey asphalt below
    assert sky.mean() > road.mean() + 30
    assert img.std() > 25  # textured, not flat


def test_lidar_has_realistic_returns_and_drops(log) -> None:
    lidar = log.rig.lidar
    sweep = log.lidar(0)
    mask = sweep.return_mask(lidar)
    below = lidar.beam_elevations_rad < np.deg2rad(-3)
    drop_rate = 1 - mask[below].mean()
    assert 0.005 < drop_rate < 0.3  # downward rays nearly all hit the ground; some drop
    r = sweep.range_m()
    assert r.min() >= lidar.min_range_m - 0.1 and r.max() <= lidar.max_range_m + 0.1
    assert 0.0 <= sweep.intensity.min() and sweep.intensity.max() <= 1.0
    assert sweep.intensity.std() > 0.03
    # ground points lie about LiDAR-height below the sensor
    ground = (sweep.beam >= lidar.num_beams - 4) & (r < 12)
    world_z = transform_points(log.T_world_lidar(0), sweep.xyz_m[ground])[:, 2]
    assert np.median(np.abs(world_z)) < 0.05


def test_ground_truth_world_reproduces_the_log(log, gt: WorldRenderer) -> None:
    cam = log.rig.camera("front")
    scene = gt.scene(log.actor_poses_at(3))
    clean = gt.render_camera(scene, cam, log.ego_poses[3], supersample=1).rgb.astype(float)
    recorded = log.image("front", 3).astype(float)
    assert np.abs(clean - recorded).mean() < 3.0  # only the sensor noise differs
    # a lane shift of 2 m gives a different but equally valid view
    shifted = log.ego_poses[3] @ make_pose([0.0, 2.0, 0.0])
    moved = gt.render_camera(scene, cam, shifted, supersample=1).rgb.astype(float)
    assert np.abs(moved - recorded).mean() > 5.0


def test_lidar_points_project_onto_matching_pixels(log, gt: WorldRenderer) -> None:
    frame = 2
    sweep = log.lidar(frame)
    scene = gt.scene(log.actor_poses_at(frame))
    world_pts = transform_points(log.T_world_lidar(frame), sweep.xyz_m)
    for cam in log.rig.cameras:
        fine = cam.scaled(4)  # finer pixels than the log's, so depth varies little inside one
        pts_cam = transform_points(invert_pose(log.T_world_camera(cam.name, frame)), world_pts)
        uv, inside = fine.project(pts_cam)
        assert inside.sum() > 200
        px = np.floor(uv[inside]).astype(int)
        depth = gt.render_camera(scene, fine, log.ego_poses[frame], supersample=1).depth_m
        error = np.abs(depth[px[:, 1], px[:, 0]] - pts_cam[inside, 2])
        assert np.median(error) < 0.03, cam.name
        assert np.mean(error < 0.05 + 0.02 * pts_cam[inside, 2]) > 0.9, cam.name  # the rest: parallax
    # retro-reflective lane markings (bright LiDAR returns on the road) are bright in the image too
    cam = log.rig.camera("front")
    pts_cam = transform_points(invert_pose(log.T_world_camera("front", frame)), world_pts)
    uv, inside = cam.project(pts_cam)
    on_road = inside & (np.abs(world_pts[:, 2]) < 0.05) & (pts_cam[:, 2] < 25)
    gray = log.image("front", frame).astype(float).mean(axis=2)
    px = np.floor(uv).astype(int)
    bright = on_road & (sweep.intensity > 0.35)
    dark = on_road & (sweep.intensity < 0.15)
    assert bright.sum() > 5 and dark.sum() > 50
    assert gray[px[bright, 1], px[bright, 0]].mean() > gray[px[dark, 1], px[dark, 0]].mean() + 40


def test_actor_boxes_contain_their_lidar_points(log, gt: WorldRenderer) -> None:
    rng = np.random.default_rng(0)
    total = 0
    for frame in (0, log.num_frames - 1):
        poses = log.actor_poses_at(frame)
        scene = gt.scene(poses)
        ld = gt.render_lidar(scene, log.rig.lidar, log.ego_poses[frame], rng)
        world_pts = transform_points(log.T_world_lidar(frame), ld.sweep.xyz_m)
        for k, aid in enumerate(scene.actor_ids):
            pts = world_pts[ld.instance == k]
            if len(pts) == 0:
                continue
            track = log.track(aid)
            in_box = points_in_box(transform_points(invert_pose(poses[aid]), pts), track.size_m, margin_m=0.02)
            assert in_box.all(), aid
            total += len(pts)
        # and the recorded sweep has returns inside the boxes of nearby actors
        rec = transform_points(log.T_world_lidar(frame), log.lidar(frame).xyz_m)
        for aid, pose in poses.items():
            if np.linalg.norm(pose[:2, 3] - log.ego_poses[frame][:2, 3]) < 20:
                local = transform_points(invert_pose(pose), rec)
                min_points = 5 if log.track(aid).category == "car" else 2
                assert points_in_box(local, log.track(aid).size_m, 0.05).sum() > min_points, aid
        assert np.any(ld.instance == NO_ACTOR)
    assert total > 100


def test_map_contains_the_ego_route(log) -> None:
    drivable = shapely.union_all([shapely.Polygon(p) for p in log.road_map.drivable_areas])
    for pose in log.ego_poses:
        assert drivable.contains(shapely.Point(pose[0, 3], pose[1, 3]))
    # the ego's lane exists and points the way the ego drives
    ego_xy = log.ego_poses[0, :2, 3]
    lane = min(log.road_map.lanes, key=lambda ln: shapely.LineString(ln.centerline_m).distance(shapely.Point(ego_xy)))
    direction = lane.centerline_m[-1] - lane.centerline_m[0]
    assert direction[0] > 0 and shapely.LineString(lane.centerline_m).distance(shapely.Point(ego_xy)) < 0.5
