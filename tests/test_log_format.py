"""Round trip and validation of the on-disk log format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from neurodrive.errors import DataError
from neurodrive.logs.io import image_path, lidar_path, lidar_pattern_path, load_log
from neurodrive.logs.writer import write_log


@pytest.fixture()
def log_copy(tiny_log_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "log"
    shutil.copytree(tiny_log_dir, dst)
    return dst


def test_round_trip_preserves_everything(tiny_log_dir: Path, tmp_path: Path) -> None:
    log = load_log(tiny_log_dir)
    write_log(log, tmp_path / "copy")
    again = load_log(tmp_path / "copy")
    assert again.name == log.name and again.num_frames == log.num_frames
    np.testing.assert_array_equal(again.timestamps_s, log.timestamps_s)
    np.testing.assert_array_equal(again.ego_poses, log.ego_poses)
    assert again.rig.camera_names == log.rig.camera_names
    for a, b in zip(again.rig.cameras, log.rig.cameras):
        np.testing.assert_allclose(a.intrinsics, b.intrinsics)
        np.testing.assert_allclose(a.T_ego_camera, b.T_ego_camera)
    np.testing.assert_allclose(again.rig.lidar.beam_elevations_rad, log.rig.lidar.beam_elevations_rad)
    assert [t.actor_id for t in again.tracks] == [t.actor_id for t in log.tracks]
    for a, b in zip(again.tracks, log.tracks):
        assert a.category == b.category
        np.testing.assert_array_equal(a.poses, b.poses)
        np.testing.assert_array_equal(a.valid, b.valid)
        np.testing.assert_array_equal(a.size_m, b.size_m)
    assert [lane.lane_id for lane in again.road_map.lanes] == [lane.lane_id for lane in log.road_map.lanes]
    for frame in (0, log.num_frames - 1):
        for cam in log.rig.camera_names:
            np.testing.assert_array_equal(again.image(cam, frame), log.image(cam, frame))
        la, lb = again.lidar(frame), log.lidar(frame)
        np.testing.assert_array_equal(la.xyz_m, lb.xyz_m)
        np.testing.assert_array_equal(la.intensity, lb.intensity)
        np.testing.assert_array_equal(la.return_mask(log.rig.lidar), lb.return_mask(log.rig.lidar))


def test_images_are_read_lazily_from_disk(log_copy: Path) -> None:
    log = load_log(log_copy)
    first = log.image("front", 0)
    # replace the file after loading: the log must read the new content, it holds no pixels itself
    shutil.copy(image_path(log_copy, "front", 1), image_path(log_copy, "front", 0))
    assert not np.array_equal(log.image("front", 0), first)


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _rewrite_npz(path: Path, **changes) -> None:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    np.savez(path, **arrays)


def _nan_pose(root: Path) -> None:
    with np.load(root / "poses.npz") as d:
        poses = d["ego_poses"].copy()
    poses[3, 0, 3] = np.nan
    _rewrite_npz(root / "poses.npz", ego_poses=poses)


def _non_increasing_time(root: Path) -> None:
    with np.load(root / "poses.npz") as d:
        t = d["timestamps_s"].copy()
    t[2] = t[1]
    _rewrite_npz(root / "poses.npz", timestamps_s=t)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bad_rotation(data: dict) -> None:
    data["rig"]["cameras"][1]["T_ego_camera"][0][0] = 3.0


def _duplicate_track(data: dict) -> None:
    data["tracks"][1]["id"] = data["tracks"][0]["id"]


def _map_folder(root: Path) -> None:
    (root / "map.json").unlink()
    (root / "map.json").mkdir()


CORRUPTIONS = {
    "invalid json": (lambda r: (r / "log.json").write_text("{not json"), "log.json", None, "not valid JSON"),
    "negative width": (
        lambda r: _edit_json(r / "log.json", lambda d: d["rig"]["cameras"][0].update(width_px=-4)),
        "log.json",
        "rig.cameras[0].width_px",
        "greater than 0",
    ),
    "non-rigid extrinsics": (
        lambda r: _edit_json(r / "log.json", _bad_rotation),
        "log.json",
        "rig.cameras[1].T_ego_camera",
        "rigid",
    ),
    "wrong format name": (
        lambda r: _edit_json(r / "log.json", lambda d: d.update(format="kitti")),
        "log.json",
        "format",
        "neurodrive-log",
    ),
    "unknown field": (
        lambda r: _edit_json(r / "log.json", lambda d: d.update(colour=1)),
        "log.json",
        "colour",
        "Extra inputs",
    ),
    "map is a folder": (_map_folder, "map.json", None, "is a folder"),
    "NaN ego pose": (_nan_pose, "poses.npz", "ego_poses[3]", "NaN"),
    "time goes back": (_non_increasing_time, "poses.npz", "timestamps_s[2]", "strictly increasing"),
    "truncated npz": (lambda r: _truncate(r / "poses.npz"), "poses.npz", None, "corrupt or truncated"),
    "duplicate actor": (
        lambda r: _edit_json(r / "tracks.json", _duplicate_track),
        "tracks.json",
        "tracks",
        "duplicate actor id",
    ),
    "track shape": (
        lambda r: _rewrite_npz(r / "tracks.npz", valid=np.ones((1, 2), bool)),
        "tracks.npz",
        "valid",
        "expected shape",
    ),
    "lane with one point": (
        lambda r: _edit_json(r / "map.json", lambda d: d["lanes"][0].update(centerline_m=[[0.0, 0.0]])),
        "map.json",
        "lanes[0].centerline_m",
        "at least 2",
    ),
    "missing sweep": (lambda r: lidar_path(r, 5, "top").unlink(), "000005.npz", None, "missing LiDAR sweep"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_metadata_is_reported_with_file_and_field(log_copy: Path, name: str) -> None:
    corrupt, file_name, field, text = CORRUPTIONS[name]
    corrupt(log_copy)
    with pytest.raises(DataError) as info:
        load_log(log_copy)
    err = info.value
    assert Path(err.file).name == file_name
    assert err.field == field
    assert text in str(err)
    assert "\n" not in str(err)


def test_corrupt_sweep_is_reported_on_access(log_copy: Path) -> None:
    path = lidar_path(log_copy, 2, "top")
    with np.load(path) as d:
        beam = d["beam"].copy()
    beam[0] = 999
    _rewrite_npz(path, beam=beam)
    log = load_log(log_copy)
    log.lidar(1)  # others still load
    with pytest.raises(DataError, match="beam index outside"):
        log.lidar(2)


def test_pickled_arrays_are_refused(log_copy: Path) -> None:
    path = lidar_path(log_copy, 0, "top")
    np.savez(
        path,
        xyz_m=np.array([{"evil": 1}], dtype=object),
        intensity=np.zeros(1),
        beam=np.zeros(1),
        azimuth_index=np.zeros(1),
    )
    log = load_log(log_copy)
    with pytest.raises(DataError, match="000000.npz"):
        log.lidar(0)


def test_truncated_and_wrong_size_images(log_copy: Path) -> None:
    _truncate(image_path(log_copy, "front", 0))
    from PIL import Image

    Image.new("RGB", (10, 10)).save(image_path(log_copy, "front_right", 2))
    log = load_log(log_copy)
    with pytest.raises(DataError, match="corrupt or truncated image"):
        log.image("front", 0)
    with pytest.raises(DataError, match="expected 90x160"):
        log.image("front_right", 2)


def test_unknown_actor_and_camera(tiny_log_dir: Path) -> None:
    log = load_log(tiny_log_dir)
    with pytest.raises(DataError, match="unknown actor id 'nobody'"):
        log.track("nobody")
    with pytest.raises(KeyError, match="unknown camera"):
        log.image("rear", 0)
    with pytest.raises(IndexError):
        log.lidar(log.num_frames)


def test_a_version_2_log_without_a_map_falls_back_to_a_corridor_around_the_ego_path(log_copy: Path) -> None:
    (log_copy / "map.json").unlink()
    log = load_log(log_copy)
    assert not log.has_map
    (lane,) = log.road_map.lanes
    import shapely

    area = shapely.union_all([shapely.Polygon(p) for p in log.road_map.drivable_areas])
    path = shapely.LineString(log.ego_poses[:, :2, 3])
    assert area.contains(path)  # the whole logged path lies in the corridor
    assert area.area < path.length * 12.5 + 2 * 30 * 12.5  # and the corridor is narrow
    assert lane.centerline_m.shape[0] >= 2


def test_a_distorted_camera_projects_its_own_rays_back_onto_the_pixel_centres() -> None:
    from neurodrive.logs.model import CameraSpec

    k = np.array([[700.0, 0.0, 320.5], [0.0, 690.0, 240.5], [0.0, 0.0, 1.0]])
    cam = CameraSpec("c", 640, 480, k, np.eye(4), np.array([-0.3, 0.1, 0.001, -0.002, -0.02]))
    rays = cam.ray_directions(1).reshape(-1, 3)
    uv, inside = cam.project(rays)
    v, u = np.mgrid[0:480, 0:640]
    centres = np.stack([u.ravel() + 0.5, v.ravel() + 0.5], axis=1)
    assert inside.all() and np.abs(uv - centres).max() < 1e-3
    pinhole = CameraSpec("c", 640, 480, k, np.eye(4))
    assert np.abs(pinhole.ray_directions(1) - cam.ray_directions(1)).max() > 0.01  # distortion is modelled


def test_a_measured_ray_pattern_places_returns_and_survives_a_round_trip(tmp_path: Path) -> None:
    from neurodrive.lidar.pattern import MeasuredPattern, measure_pattern

    rng = np.random.default_rng(0)
    el = np.deg2rad(np.linspace(-20, 5, 16))
    sweeps = []
    for _ in range(3):
        az = rng.uniform(0, 2 * np.pi, (16, 400))
        e = el[:, None] + rng.normal(0, 1e-4, az.shape)
        d = np.stack([np.cos(e) * np.cos(az), np.cos(e) * np.sin(az), np.sin(e)], -1).reshape(-1, 3) * 10
        sweeps.append((d.astype(np.float32), np.repeat(np.arange(16), 400).astype(np.int16)))
    pattern, report = measure_pattern(sweeps, "ring index", cols=256)
    assert pattern.image_shape == (16, 256) and report.outside_fraction == 0.0
    assert 0 < report.shared_ray_fraction < 0.5
    again = MeasuredPattern.from_arrays(pattern.to_arrays())
    assert np.array_equal(again.cells(), pattern.cells())
    rays = np.arange(0, len(pattern.directions()), 7)
    sweep = pattern.sweep_from_rays(rays, pattern.directions()[rays] * 5, np.full(len(rays), 0.5))
    assert np.array_equal(pattern.rays_of(sweep), rays)


def _one_lidar_layout(root: Path, version: int) -> None:
    """Rewrite a version 3 log with one LiDAR as a version 1 or 2 log: ``rig.lidar``, sweeps in
    lidar/<frame>.npz, the pattern in lidar_pattern.npz, LiDAR times (N,)."""
    meta = json.loads((root / "log.json").read_text())
    (lidar,) = meta["rig"].pop("lidars")
    meta["rig"]["lidar"] = lidar
    meta["version"] = version
    for sweep in sorted((root / "lidar" / lidar["name"]).glob("*.npz")):
        sweep.rename(root / ("lidar_pattern.npz" if sweep.name == "pattern.npz" else f"lidar/{sweep.name}"))
    (root / "lidar" / lidar["name"]).rmdir()
    with np.load(root / "poses.npz") as d:
        poses = dict(d)
    if "lidar_timestamps_s" in poses:
        poses["lidar_timestamps_s"] = poses["lidar_timestamps_s"][0]
    np.savez(root / "poses.npz", **poses)
    if version == 1:
        meta.pop("pose_source")
        for cam in meta["rig"]["cameras"]:
            cam.pop("distortion", None)
        for key in ("pattern", "motion_compensated"):
            meta["rig"]["lidar"].pop(key)
    (root / "log.json").write_text(json.dumps(meta))


def test_a_version_1_log_still_loads(log_copy: Path) -> None:
    _one_lidar_layout(log_copy, 1)
    log = load_log(log_copy)
    assert log.pose_source["kind"] == "measured" and log.has_map
    assert log.rig.lidar_names == ("top",) and log.lidar(0).return_mask(log.rig.lidar).any()


def test_a_version_2_log_with_a_measured_pattern_and_lidar_times_still_loads(log_copy: Path) -> None:
    _measured_pattern(log_copy)
    with np.load(log_copy / "poses.npz") as d:
        times = d["timestamps_s"].copy()
    times[3] = np.nan  # no sweep on frame 3
    _rewrite_npz(log_copy / "poses.npz", lidar_timestamps_s=times[None])
    lidar_path(log_copy, 3, "top").unlink()
    expected = load_log(log_copy)
    expected_sweep = expected.lidar(4).xyz_m
    _one_lidar_layout(log_copy, 2)
    log = load_log(log_copy)
    assert log.rig.lidar.measured_pattern is not None and not log.has_lidar(3) and log.has_lidar(4)
    np.testing.assert_array_equal(log.lidar_timestamps_s, expected.lidar_timestamps_s)
    np.testing.assert_array_equal(log.lidar(4).xyz_m, expected_sweep)
    # what a version 2 log is written as again is a version 3 log that loads the same
    from neurodrive.logs.writer import write_log

    write_log(log, log_copy.parent / "again")
    again = load_log(log_copy.parent / "again")
    assert json.loads((log_copy.parent / "again" / "log.json").read_text())["version"] == 3
    np.testing.assert_array_equal(again.lidar(4).xyz_m, expected_sweep)
    assert not again.has_lidar(3)


def test_sensor_poses_are_interpolated_at_the_sensor_time() -> None:
    from neurodrive.geometry import interpolate_poses, pose_xyz_yaw

    poses = np.stack([pose_xyz_yaw(0, 0, 0, 0.0), pose_xyz_yaw(10, 0, 0, 1.0)])
    mid = interpolate_poses(np.array([0.0, 1.0]), poses, 0.25)
    assert np.allclose(mid[:3, 3], [2.5, 0, 0])
    assert np.isclose(np.arctan2(mid[1, 0], mid[0, 0]), 0.25)
    assert np.allclose(interpolate_poses(np.array([0.0, 1.0]), poses, 5.0), poses[1])  # clamped


def _poses_arrays(root: Path) -> dict:
    with np.load(root / "poses.npz") as d:
        return {k: d[k] for k in d.files}


def _measured_pattern(root: Path, **changes) -> None:
    """Turn the log's LiDAR into a measured pattern (one ray per grid cell), with ``changes``."""
    from neurodrive.lidar.pattern import MeasuredPattern

    log = load_log(root)
    lid = log.rig.lidar
    rows, cols = lid.pattern.image_shape
    pattern = MeasuredPattern(
        lid.pattern.directions(),
        lid.pattern.cells(),
        rows,
        cols,
        False,
        np.zeros(0, np.int64),
        np.linspace(np.pi / 2, -np.pi / 2, rows + 1),
    )
    np.savez(lidar_pattern_path(root, "top"), **(pattern.to_arrays() | changes))
    _edit_json(root / "log.json", lambda d: d["rig"]["lidars"][0].update(pattern="measured"))


def _duplicate_cells(root: Path) -> None:
    _measured_pattern(root)
    with np.load(lidar_pattern_path(root, "top")) as d:
        cells = d["ray_cells"].copy()
    cells[1] = cells[0]
    _rewrite_npz(lidar_pattern_path(root, "top"), ray_cells=cells)


V2_CORRUPTIONS = {
    "camera times of the wrong shape": (
        lambda r: _rewrite_npz(r / "poses.npz", camera_timestamps_s=np.zeros((1, 2))),
        "poses.npz",
        "camera_timestamps_s",
        "expected shape",
    ),
    "a pose stream without its times": (
        lambda r: _rewrite_npz(r / "poses.npz", stream_ego_poses=_poses_arrays(r)["ego_poses"]),
        "poses.npz",
        "stream_ego_poses",
        "come together",
    ),
    "a pose stream going back in time": (
        lambda r: _rewrite_npz(
            r / "poses.npz",
            stream_ego_poses=_poses_arrays(r)["ego_poses"],
            stream_timestamps_s=_poses_arrays(r)["timestamps_s"][::-1].copy(),
        ),
        "poses.npz",
        "stream_timestamps_s[1]",
        "strictly increasing",
    ),
    "a NaN in the pose stream times": (
        lambda r: _rewrite_npz(
            r / "poses.npz",
            stream_ego_poses=_poses_arrays(r)["ego_poses"],
            stream_timestamps_s=np.where(np.arange(len(_poses_arrays(r)["timestamps_s"])) == 2, np.nan, 1.0),
        ),
        "poses.npz",
        "stream_timestamps_s[2]",
        "NaN",
    ),
    "a category outside the set": (
        lambda r: _edit_json(r / "tracks.json", lambda d: d["tracks"][0].update(category="vehicle.car")),
        "tracks.json",
        "tracks[0].category",
        "is not one of",
    ),
    "a measured LiDAR without its pattern file": (
        lambda r: _edit_json(r / "log.json", lambda d: d["rig"]["lidars"][0].update(pattern="measured")),
        "pattern.npz",
        None,
        "missing file",
    ),
    "a measured pattern with two rays in one cell": (_duplicate_cells, "pattern.npz", "ray_cells", "distinct"),
    "two LiDARs of one name": (
        lambda r: _edit_json(r / "log.json", lambda d: d["rig"]["lidars"].append(d["rig"]["lidars"][0])),
        "log.json",
        "rig.lidars",
        "unique",
    ),
    "a LiDAR name that leaves its folder": (
        lambda r: _edit_json(r / "log.json", lambda d: d["rig"]["lidars"][0].update(name="../top")),
        "log.json",
        "rig.lidars",
        "folder name",
    ),
    "a version 3 log with a version 2 rig.lidar": (
        lambda r: _edit_json(r / "log.json", lambda d: d["rig"].update(lidar=d["rig"]["lidars"][0])),
        "log.json",
        "rig.lidar",
        "rig.lidars",
    ),
    "LiDAR times of the wrong shape": (
        lambda r: _rewrite_npz(r / "poses.npz", lidar_timestamps_s=np.zeros(2)),
        "poses.npz",
        "lidar_timestamps_s",
        "expected shape",
    ),
}


@pytest.mark.parametrize("name", sorted(V2_CORRUPTIONS))
def test_corrupt_version_2_fields_are_reported_with_file_and_field(log_copy: Path, name: str) -> None:
    corrupt, file_name, field, text = V2_CORRUPTIONS[name]
    corrupt(log_copy)
    with pytest.raises(DataError) as info:
        load_log(log_copy)
    err = info.value
    assert (Path(err.file).name, err.field) == (file_name, field)
    assert text in str(err) and "\n" not in str(err)


def test_a_sweep_with_a_negative_ring_number_is_reported(log_copy: Path) -> None:
    _measured_pattern(log_copy)
    with np.load(lidar_path(log_copy, 0, "top")) as d:
        n = len(d["xyz_m"])
    _rewrite_npz(lidar_path(log_copy, 0, "top"), ring=np.full(n, -1, np.int16))
    log = load_log(log_copy)
    with pytest.raises(DataError) as info:
        log.lidar(0)
    assert (Path(info.value.file).name, info.value.field) == ("000000.npz", "ring")
