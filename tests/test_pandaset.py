"""PandaSet import on the real sample (../shared/realdata/pandaset/002; skipped with a reason when absent):
both LiDARs in their own frames, 6 cameras, merged cuboid tracks, and bad input as one error."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodrive.errors import DataError
from neurodrive.geometry import invert_pose, points_in_box, transform_points
from neurodrive.logs.io import load_log
from neurodrive.sources.datasets.pandas_pickle import read_dataframe_pickle
from tests.test_importers import REALDATA, _edge_score, need

PANDASET = REALDATA / "pandaset"
SEQUENCE = PANDASET / "002"


def _import(out: Path, src: Path = PANDASET, **options) -> Path:
    from neurodrive.sources import get_source

    get_source("pandaset").write_log(need(src), out, **({"sequence": "002"} | options))
    return out


@pytest.fixture(scope="module")
def panda_log(tmp_path_factory):
    return load_log(_import(tmp_path_factory.mktemp("pandaset") / "log"))


def test_the_sample_imports_with_both_lidars_and_six_cameras(panda_log) -> None:
    log = panda_log
    assert log.num_frames == 20 and log.rig.lidar_names == ("pandar64", "pandar_gt")
    assert [(c.width_px, c.height_px) for c in log.rig.cameras] == [(1920, 1080)] * 6
    assert log.rig.camera_names[0] == "front_camera"
    assert all(log.has_lidar(f, name) for f in range(20) for name in log.rig.lidar_names)
    # the PandarGT looks forward: its returns lie ahead of the ego (x forward), the Pandar64's all round
    gt = transform_points(log.rig.lidar_named("pandar_gt").T_ego_lidar, log.lidar(5, "pandar_gt").xyz_m.astype(float))
    assert np.mean(gt[:, 0] > 0) > 0.99
    spin = transform_points(log.rig.lidar.T_ego_lidar, log.lidar(5).xyz_m.astype(float))
    assert np.mean(spin[:, 0] < 0) > 0.2
    # per-point times: one 10 Hz sweep ending at the sweep's timestamp
    offsets = log.lidar(5).time_offset_s
    assert offsets is not None and -0.11 < offsets.min() < -0.09 and -0.01 < offsets.max() < 0.01
    # each camera fires as the spinning LiDAR sweeps past it (back camera first), within the sweep's 0.1 s
    offsets = log.camera_timestamps_s - log.timestamps_s[None]
    assert np.all((offsets > -0.11) & (offsets < 0)) and np.ptp(offsets.mean(axis=1)) > 0.05
    assert log.pose_source["kind"] == "measured" and not log.has_map  # routes use the corridor


def test_boxes_and_lidar_agree_on_cars_within_30_m(panda_log) -> None:
    log = panda_log
    for frame in (0, 10, 19):
        world = log.world_returns(frame)[0]
        ego_xy = log.ego_poses[frame][:2, 3]
        counts = [
            int(points_in_box(transform_points(invert_pose(t.poses[frame]), world), t.size_m).sum())
            for t in log.tracks
            if t.valid[frame] and t.category == "car" and np.linalg.norm(t.poses[frame][:2, 3] - ego_xy) <= 30
        ]
        assert len(counts) >= 20
        assert np.mean(np.array(counts) >= 20) >= 0.9, (frame, sorted(counts)[:5])


def test_lidar_depth_edges_land_on_every_cameras_image_edges(panda_log) -> None:
    for camera in panda_log.rig.camera_names:
        pairs = [(camera, f) for f in (0, 10, 19)]
        aligned = _edge_score(panda_log, pairs, 0)
        shifted = (_edge_score(panda_log, pairs, 25) + _edge_score(panda_log, pairs, -25)) / 2
        assert aligned > shifted, camera


def test_the_lidar_sits_at_its_optical_centre_not_at_pandasets_pose(panda_log) -> None:
    from neurodrive.lidar.pattern import elevation_rad

    log = panda_log
    raised = log.metadata["lidar_above_pandaset_pose_m"]
    assert 1.5 < raised < 2.3 and 1.8 < log.metadata["lidar_height_m"] < 2.5  # a roof-mounted sensor
    # from there the Pandar64's highest returns lie at its top beam (+15 deg) on every sweep
    for frame in (0, 19):
        xyz = log.lidar(frame).xyz_m.astype(np.float64)
        xyz = xyz[np.hypot(xyz[:, 0], xyz[:, 1]) > 3]
        assert np.degrees(np.percentile(elevation_rad(xyz), 99.9)) == pytest.approx(15.0, abs=0.3)
    # and nearby cars' roofs, which the sweeps hold returns on, lie below it
    sensor_z = log.T_world_lidar(0)[2, 3]
    roofs = [
        t.poses[0][2, 3] + t.size_m[2] / 2
        for t in log.tracks
        if t.valid[0] and t.category == "car" and np.linalg.norm(t.poses[0][:2, 3] - log.ego_poses[0][:2, 3]) < 15
    ]
    assert roofs and max(roofs) < sensor_z


def test_cuboids_split_between_the_lidars_become_one_track(panda_log) -> None:
    ids = {t.actor_id for t in panda_log.tracks}
    uuids, pairs = set(), set()
    for f in range(20):
        table = read_dataframe_pickle(SEQUENCE / "annotations" / "cuboids" / f"{f:02d}.pkl.gz")
        uuids |= set(table["uuid"])
        pairs |= {(u, s) for u, s in zip(table["uuid"], table["cuboids.sibling_id"]) if s != "-" and s != u}
    assert pairs and len(ids) < len(uuids)
    for a, b in pairs:
        assert (a in ids) != (b in ids), (a, b)  # exactly one track for the two cuboids
        track = panda_log.track(min(a, b))
        assert track.valid.sum() >= 1
    categories = {t.dataset_category: t.category for t in panda_log.tracks}
    assert categories["Car"] == "car" and categories["Pedestrian with Object"] == "pedestrian"
    assert categories["Medium-sized Truck"] == "truck" and categories["Cones"] == "other"
    # a parked car is still; its box does not drift between frames
    parked = [t for t in panda_log.tracks if t.category == "car" and t.valid.all() and t.is_static(0.2)]
    assert len(parked) >= 10


def test_frames_option_and_the_cli(tmp_path: Path) -> None:
    from neurodrive.app.cli import app

    out = tmp_path / "five"
    result = CliRunner().invoke(
        app, ["import", "pandaset", str(need(PANDASET)), "--sequence", "002", "--frames", "5", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    log = load_log(out)
    assert log.num_frames == 5 and len(log.rig.lidars) == 2
    bad = CliRunner().invoke(
        app, ["import", "pandaset", str(PANDASET), "--sequence", "099", "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2 and "no PandaSet sequence '099'" in bad.output and "found: 002" in bad.output
    assert not (tmp_path / "x").exists()


def _copy(tmp_path: Path) -> Path:
    """The sample as a tree of links (files replaced by a test are written, the rest linked)."""
    root = tmp_path / "pandaset"
    shutil.copytree(need(SEQUENCE), root / "002", copy_function=os.symlink)
    return root


def _replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_inputs(root: Path, marker: Path) -> dict:
    seq = root / "002"
    lidar = (seq / "lidar" / "01.pkl.gz").resolve().read_bytes()
    raw = gzip.decompress(lidar)
    no_sensor = pickle.dumps({"x": np.zeros(3)})  # a dict, not a DataFrame

    return {
        "missing cuboid table": (lambda: (seq / "annotations" / "cuboids" / "02.pkl.gz").unlink(), "02.pkl.gz"),
        "truncated LiDAR pickle": (
            lambda: _replace(seq / "lidar" / "01.pkl.gz", lidar[: len(lidar) // 2]),
            "01.pkl.gz",
        ),
        "pickle cut inside": (lambda: _replace(seq / "lidar" / "01.pkl.gz", gzip.compress(raw[:-300])), "01.pkl.gz"),
        "wrong-shape pickle": (lambda: _replace(seq / "lidar" / "03.pkl.gz", gzip.compress(no_sensor)), "03.pkl.gz"),
        "pickle that runs a command": (
            lambda: _replace(seq / "lidar" / "00.pkl.gz", gzip.compress(pickle.dumps({"x": _RunsACommand(marker)}))),
            "00.pkl.gz",
        ),
        "NaN pose": (lambda: _nan_pose(seq / "lidar" / "poses.json"), "poses.json"),
    }


def _nan_pose(path: Path) -> None:
    text = path.resolve().read_text()
    _replace(path, text.replace('"x": ', '"x": NaN, "ignored": ', 1).encode())


@pytest.mark.parametrize(
    "case",
    [
        "missing cuboid table",
        "truncated LiDAR pickle",
        "pickle cut inside",
        "wrong-shape pickle",
        "pickle that runs a command",
        "NaN pose",
    ],
)
def test_bad_input_is_one_error_naming_the_file_and_nothing_is_written(tmp_path: Path, case: str) -> None:
    root = _copy(tmp_path)
    marker = tmp_path / "pwned"
    spoil, file_name = _bad_inputs(root, marker)[case]
    spoil()
    out = tmp_path / "log"
    with pytest.raises(DataError) as info:
        _import(out, root, frames=4)
    assert Path(info.value.file).name == file_name and "\n" not in str(info.value)
    assert not out.exists() and not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pandaset"]  # no staging folder left behind


def test_av2_lidars_are_split_by_laser_and_each_keeps_its_rings_flat() -> None:
    """Each AV2 LiDAR's lasers keep one elevation in that LiDAR's own frame (the down LiDAR is mounted
    upside down); swapping the two LiDARs' lasers would smear every ring."""
    from neurodrive.lidar.pattern import elevation_rad
    from neurodrive.sources.datasets.av2 import lidar_extrinsics, read_sweep, split_sweep
    from tests.test_importers import AV2_LOG

    sweep = read_sweep(sorted((need(AV2_LOG) / "sensors" / "lidar").glob("*.feather"))[0])
    parts = split_sweep(sweep, lidar_extrinsics(AV2_LOG))
    assert set(parts) == {"up_lidar", "down_lidar"}
    assert sum(p.num_returns for p in parts.values()) == sweep.num_returns
    for part in parts.values():
        assert part.ring is not None and part.ring.min() >= 0 and part.ring.max() < 32
        spread = [np.std(elevation_rad(part.xyz_m[part.ring == r].astype(float))) for r in np.unique(part.ring)]
        assert np.degrees(np.median(spread)) < 0.1
