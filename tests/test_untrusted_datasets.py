"""Dataset files are untrusted: paths they name stay inside the dataset, names that become paths are
checked before anything is written, bad values are one error naming the file and field, and a failed
import leaves the previous log at --out as it was. Runs on copies of ../shared/realdata samples."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodrive.app.cli import app
from neurodrive.errors import DataError
from neurodrive.logs.io import load_log
from neurodrive.sources import get_source
from tests.test_importers import AV2_LOG, DGP_JSON, KITTI_DRIVE, NUSCENES, need

# ------------------------------------------------------------------ nuScenes


@pytest.fixture
def nuscenes_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(need(NUSCENES), tmp_path / "nuscenes"))


def edit_table(root: Path, table: str, change: Callable[[list[dict]], None]) -> None:
    path = root / "v1.0-mini" / f"{table}.json"
    rows = json.loads(path.read_text())
    change(rows)
    path.write_text(json.dumps(rows))


def channel_row(rows: list[dict], channel: str) -> dict:
    return next(r for r in rows if f"/{channel}/" in r["filename"])


def import_fails(fmt: str, src: Path, out: Path, match: str, **options) -> None:
    """The import raises one DataError matching ``match`` and writes nothing at ``out``."""
    with pytest.raises(DataError, match=match):
        get_source(fmt).write_log(src, out, **options)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "staging left behind"


def _outside_image(tmp_path: Path) -> str:
    """A valid JPEG outside the dataset, so that only the path check can refuse it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(next((NUSCENES / "samples" / "CAM_FRONT").glob("*.jpg")), outside / "x.jpg")
    return str(outside / "x.jpg")


@pytest.mark.parametrize("channel", ["CAM_FRONT", "LIDAR_TOP"])
@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_nuscenes_files_outside_the_dataroot_are_refused(
    nuscenes_copy: Path, tmp_path: Path, channel: str, kind: str
) -> None:
    target = _outside_image(tmp_path)
    if channel == "LIDAR_TOP":  # a real LiDAR file outside, so only the path check can refuse it
        target = str(shutil.copy(next((NUSCENES / "samples" / "LIDAR_TOP").iterdir()), tmp_path / "outside"))
    value = "../outside/" + Path(target).name if kind == "relative" else target

    def change(rows: list[dict]) -> None:
        channel_row(rows, channel)["filename"] = value

    edit_table(nuscenes_copy, "sample_data", change)
    import_fails("nuscenes", nuscenes_copy, tmp_path / "log", r"sample_data.json: field '\w+\.filename'")


def test_nuscenes_reads_no_system_file(nuscenes_copy: Path, tmp_path: Path) -> None:
    edit_table(nuscenes_copy, "sample_data", lambda rows: channel_row(rows, "CAM_FRONT").update(filename="/etc/passwd"))
    import_fails("nuscenes", nuscenes_copy, tmp_path / "log", "absolute path")


def test_nuscenes_channel_names_cannot_write_outside_the_log(nuscenes_copy: Path, tmp_path: Path) -> None:
    escape = tmp_path / "escaped"

    def change(rows: list[dict]) -> None:
        next(r for r in rows if r["channel"] == "CAM_FRONT")["channel"] = f"../../../{escape.name}"

    edit_table(nuscenes_copy, "sensor", change)
    import_fails("nuscenes", nuscenes_copy, tmp_path / "log", r"sensor.json: field '\w+\.channel'")
    assert not escape.exists() and not (tmp_path.parent / escape.name).exists()


@pytest.mark.parametrize(
    ("table", "change", "match"),
    [
        ("sample_data", lambda r: channel_row(r, "CAM_FRONT").update(filename=None), r"filename'.*relative file path"),
        ("sample_data", lambda r: channel_row(r, "CAM_FRONT").update(filename=7), r"filename'.*relative file path"),
        ("sample_data", lambda r: channel_row(r, "CAM_FRONT").pop("filename"), r"filename'.*relative file path"),
        (
            "sample_data",
            lambda r: channel_row(r, "CAM_BACK").update(calibrated_sensor_token="dangling"),
            r"calibrated_sensor_token'.*missing calibrated_sensor record 'dangling'",
        ),
        (
            "sample_data",
            lambda r: channel_row(r, "LIDAR_TOP").update(ego_pose_token="dangling"),
            r"ego_pose_token'.*missing ego_pose record 'dangling'",
        ),
        ("ego_pose", lambda r: r[0].update(translation=[float("nan"), 0, 0]), r"ego_pose.json.*NaN"),
        ("calibrated_sensor", lambda r: r[0].update(rotation=[0, 0, 0, 0]), r"rotation'.*zero quaternion"),
        ("sample_annotation", lambda r: r[0].update(size=[1.0, -2.0, 1.0]), r"size'.*positive"),
        ("sample_annotation", lambda r: r[0].update(instance_token="x"), r"instance_token'.*missing instance"),
        ("sample", lambda r: r[0].update(next=r[0]["token"]), r"sample.json.*loop"),
        ("sample_data", lambda r: channel_row(r, "CAM_FRONT").update(width=0), r"width'.*positive whole number"),
        ("sample_data", lambda r: channel_row(r, "CAM_FRONT").update(height=2.5), r"width'.*positive whole number"),
    ],
)
def test_nuscenes_bad_records_are_one_error_naming_file_and_field(
    nuscenes_copy: Path, tmp_path: Path, table: str, change, match: str
) -> None:
    edit_table(nuscenes_copy, table, change)
    import_fails("nuscenes", nuscenes_copy, tmp_path / "log", match)


def test_nuscenes_ring_index_beyond_int16_is_refused(nuscenes_copy: Path, tmp_path: Path) -> None:
    path = next((nuscenes_copy / "samples" / "LIDAR_TOP").iterdir())
    pts = np.fromfile(path, np.float32).reshape(-1, 5)
    pts[10, 4] = 40000.0  # wraps to a negative row in int16
    pts.tofile(path)
    import_fails("nuscenes", nuscenes_copy, tmp_path / "log", r"\.pcd\.bin: field 'ring'")


def test_truncated_jpeg_is_refused_at_import(nuscenes_copy: Path, tmp_path: Path) -> None:
    path = next((nuscenes_copy / "samples" / "CAM_FRONT").glob("*.jpg"))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    import_fails("nuscenes", nuscenes_copy, tmp_path / "log", r"CAM_FRONT.*\.jpg: unreadable or truncated image")


# ------------------------------------------------------------------ DGP


@pytest.fixture
def dgp_copy(tmp_path: Path) -> Path:
    """The copied scene dataset JSON."""
    root = Path(shutil.copytree(need(DGP_JSON.parent), tmp_path / "dgp"))
    return root / DGP_JSON.name


def edit_scene(dataset_json: Path, change: Callable[[dict], None]) -> None:
    path = next((dataset_json.parent / "scene_02").glob("scene_*.json"))
    scene = json.loads(path.read_text())
    change(scene)
    path.write_text(json.dumps(scene))


def _datum(scene: dict, kind: str) -> dict:
    return next(d for d in scene["data"] if kind in d["datum"])


def _set(path: tuple[str, ...], value):
    def change(scene: dict) -> None:
        record = _datum(scene, path[0])["datum"][path[0]]
        for key in path[1:-1]:
            record = record[key]
        record[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (_set(("image", "filename"), "../../outside/x.jpg"), r"image.filename'.*leads outside"),
        (_set(("image", "filename"), "/etc/passwd"), r"image.filename'.*absolute path"),
        (_set(("point_cloud", "filename"), "../../outside/x.npz"), r"point_cloud.filename'.*leads outside"),
        (_set(("point_cloud", "annotations", "1"), "../../outside/b.json"), r"annotations.1'.*leads outside"),
        (lambda s: _datum(s, "image")["datum"]["image"].pop("filename"), r"image.filename'.*relative file path"),
        (lambda s: _datum(s, "point_cloud")["datum"]["point_cloud"].pop("pose"), r"point_cloud.pose'.*missing"),
        (lambda s: _datum(s, "image")["datum"]["image"].pop("pose"), r"image.pose'.*missing field"),
        (lambda s: s.update(samples=[]), r"field 'samples': lists no samples"),
        (
            lambda s: s["samples"][0].update(calibration_key="../../x"),
            r"calibration_key'.*cannot be used as a file name",
        ),
        (lambda s: _datum(s, "image")["id"].update(name="../../../escaped"), r"id.name'.*cannot be used"),
        (lambda s: s["ontologies"].update({"0": "../../x"}), r"field 'ontologies'.*cannot be used as a file name"),
    ],
)
def test_dgp_bad_scene_files_are_one_error(dgp_copy: Path, tmp_path: Path, change, match: str) -> None:
    (tmp_path / "outside").mkdir()
    shutil.copy(
        next((dgp_copy.parent / "scene_02" / "point_cloud" / "LIDAR").iterdir()), tmp_path / "outside" / "x.npz"
    )
    edit_scene(dgp_copy, change)
    import_fails("dgp", dgp_copy, tmp_path / "log", match)
    assert not (tmp_path / "escaped").exists()


def test_dgp_scene_splits_cannot_name_a_scene_outside_the_dataset(dgp_copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    shutil.copytree(dgp_copy.parent / "scene_02", outside / "scene_02")
    scene_file = next((outside / "scene_02").glob("scene_*.json")).name
    data = json.loads(dgp_copy.read_text())
    data["scene_splits"] = {"0": {"filenames": [f"../elsewhere/scene_02/{scene_file}"]}}
    dgp_copy.write_text(json.dumps(data))
    import_fails("dgp", dgp_copy, tmp_path / "log", r"scene_splits.0.filenames\[0\]'.*leads outside")


# ------------------------------------------------------------------ KITTI and AV2


@pytest.fixture
def kitti_copy(tmp_path: Path) -> Path:
    """The day folder with its calibration and a 3-frame drive."""
    day = tmp_path / "2011_09_26"
    drive = day / KITTI_DRIVE.name
    for sub in ("image_02/data", "velodyne_points/data"):
        (drive / sub).mkdir(parents=True)
        for f in sorted((need(KITTI_DRIVE) / sub).iterdir())[:3]:
            shutil.copy(f, drive / sub / f.name)
    for calib in KITTI_DRIVE.parent.glob("calib_*.txt"):
        shutil.copy(calib, day / calib.name)
    return drive


def test_kitti_nan_calibration_names_the_source_and_keeps_the_previous_log(kitti_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "log"
    get_source("kitti-raw").write_log(kitti_copy, out)
    before = (out / "log.json").read_bytes()
    calib = kitti_copy.parent / "calib_cam_to_cam.txt"
    calib.write_text(re.sub(r"(P_rect_02:\s*)\S+", r"\1nan", calib.read_text(), count=1))
    with pytest.raises(DataError, match=r"calib_cam_to_cam.txt: field 'P_rect_02': contains NaN"):
        get_source("kitti-raw").write_log(kitti_copy, out, overwrite=True)
    assert (out / "log.json").read_bytes() == before and load_log(out).num_frames == 3


def test_kitti_truncated_png_and_bad_frames_are_refused(kitti_copy: Path, tmp_path: Path) -> None:
    kitti = get_source("kitti-raw")
    with pytest.raises(ValueError, match="--frames must be at least 1, got -3"):
        kitti.write_log(kitti_copy, tmp_path / "log", frames=-3)
    with pytest.raises(ValueError, match="--scene is not used by the kitti-raw importer"):
        kitti.write_log(kitti_copy, tmp_path / "log", scene="x")
    png = sorted((kitti_copy / "image_02" / "data").iterdir())[1]
    png.write_bytes(png.read_bytes()[:-5000])
    import_fails("kitti-raw", kitti_copy, tmp_path / "log", r"0000000001.png: unreadable or truncated image")


def test_options_a_format_does_not_use_are_refused(tmp_path: Path) -> None:
    runner = CliRunner()
    for args, option in (
        (["import", "nuscenes", str(need(NUSCENES)), "--frames", "3"], "--frames"),
        (["import", "dgp", str(need(DGP_JSON)), "--calib", str(tmp_path)], "--calib"),
        (["import", "av2", str(need(AV2_LOG)), "--version", "v1.0-trainval"], "--version"),
    ):
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "log")])
        assert result.exit_code == 2 and f"{option} is not used by the" in result.output, result.output
        assert not (tmp_path / "log").exists()


def test_av2_nan_pose_names_the_feather_file_and_keeps_the_previous_log(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.feather as feather

    src = Path(shutil.copytree(need(AV2_LOG), tmp_path / "av2"))
    out = tmp_path / "log"
    get_source("av2").write_log(src, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    table = feather.read_table(src / "city_SE3_egovehicle.feather")
    tx = table.column("tx_m").to_numpy().copy()
    tx[5] = np.nan
    table = table.set_column(table.column_names.index("tx_m"), "tx_m", pa.array(tx))
    feather.write_feather(table, src / "city_SE3_egovehicle.feather")
    with pytest.raises(DataError, match=r"city_SE3_egovehicle.feather: field 'tx_m\[\d+\]': contains NaN"):
        get_source("av2").write_log(src, out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_kitti_import_is_byte_identical_run_to_run_and_reports_progress(tmp_path: Path) -> None:
    seen: dict[str, tuple[int, int]] = {}
    for name in ("a", "b"):
        get_source("kitti-raw").write_log(
            need(KITTI_DRIVE), tmp_path / name, frames=12, progress=lambda s, d, n: seen.__setitem__(s, (d, n))
        )
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert seen["LiDAR odometry (KISS-ICP)"] == (12, 12) and seen["reading Velodyne scans"] == (12, 12)
    assert seen["writing the log"][0] == seen["writing the log"][1]


# ------------------------------------------------------------------ an output never destroys its input


def test_import_refuses_an_output_that_is_holds_or_lies_inside_the_dataset(nuscenes_copy: Path) -> None:
    tables = sorted(p.name for p in (nuscenes_copy / "v1.0-mini").iterdir())
    runner = CliRunner()
    for out, problem in (
        (nuscenes_copy, "is the dataset"),
        (nuscenes_copy.parent, "holds the dataset"),
        (nuscenes_copy / "logs" / "mine", "lies inside the dataset"),
    ):
        result = runner.invoke(app, ["import", "nuscenes", str(nuscenes_copy), "--out", str(out), "--overwrite"])
        assert result.exit_code == 2 and problem in result.output, result.output
        assert sorted(p.name for p in (nuscenes_copy / "v1.0-mini").iterdir()) == tables
    assert not (nuscenes_copy / "logs").exists()
