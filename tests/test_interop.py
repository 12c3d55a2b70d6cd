"""Interoperability: the nerfstudio dataset export and Rerun recordings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from neurodrive.app.cli import app
from neurodrive.errors import DataError
from neurodrive.interop.nerfstudio_export import export_nerfstudio
from neurodrive.logs.io import image_path, load_log
from neurodrive.reconstruct.config import ReconConfig, holdout_frames

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
KITTI_DRIVE = REALDATA / "kitti_raw" / "2011_09_26" / "2011_09_26_drive_unknown_sync"
NERFSTUDIO_CAMERA_MODELS = ("OPENCV", "OPENCV_FISHEYE", "PINHOLE", "SIMPLE_PINHOLE", "EQUIRECTANGULAR")
NERFSTUDIO_FRAME_KEYS = ("file_path", "transform_matrix", "fl_x", "fl_y", "cx", "cy", "w", "h")


@pytest.fixture(scope="module")
def tiny_export(tiny_log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nerfstudio") / "tiny"
    export_nerfstudio(load_log(tiny_log_dir), out)
    return out


def check_nerfstudio_schema(root: Path) -> dict:
    """What nerfstudio's ``nerfstudio-data`` parser reads from ``transforms.json`` (per-frame intrinsics,
    4x4 camera-to-world, files under the folder, split lists naming frames, a mask for every frame or
    none, a coloured PLY); returns the parsed JSON."""
    import open3d as o3d

    meta = json.loads((root / "transforms.json").read_text())
    assert meta["camera_model"] in NERFSTUDIO_CAMERA_MODELS
    paths = [fr["file_path"] for fr in meta["frames"]]
    names = [Path(p).name for p in paths]  # nerfstudio finds downscaled copies (images_2/...) by name alone
    assert len(set(names)) == len(names)
    for fr in meta["frames"]:
        assert all(k in fr for k in NERFSTUDIO_FRAME_KEYS)
        pose = np.asarray(fr["transform_matrix"])
        assert pose.shape == (4, 4) and np.allclose(pose[3], [0, 0, 0, 1])
        assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-6) and np.linalg.det(pose[:3, :3]) > 0
        with Image.open(root / fr["file_path"]) as im:
            assert im.size == (fr["w"], fr["h"])
    masks = [fr.get("mask_path") for fr in meta["frames"]]
    assert all(m is None for m in masks) or all((root / m).is_file() for m in masks)
    for split in ("train", "val", "test"):
        assert set(meta[f"{split}_filenames"]) <= set(paths) and meta[f"{split}_filenames"]
    cloud = o3d.io.read_point_cloud(str(root / meta["ply_file_path"]))
    assert len(cloud.points) > 100 and len(cloud.colors) == len(cloud.points)
    return meta


def colour_agreement(root: Path, meta: dict) -> list[float]:
    """Per image: the median |colour difference| (0-255) between the PLY's points and the image pixels
    they project to, projecting with nerfstudio's convention (OpenGL camera looks down -z, image y up)
    written out here independently of the exporter."""
    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(root / meta["ply_file_path"]))
    xyz, rgb = np.asarray(cloud.points), np.asarray(cloud.colors) * 255
    errors = []
    for fr in meta["frames"]:
        pose = np.asarray(fr["transform_matrix"])
        cam = (xyz - pose[:3, 3]) @ pose[:3, :3]  # world -> OpenGL camera axes
        depth = -cam[:, 2]
        ahead = depth > 1.0
        u = fr["fl_x"] * cam[ahead, 0] / depth[ahead] + fr["cx"]
        v = fr["cy"] - fr["fl_y"] * cam[ahead, 1] / depth[ahead]
        inside = (u >= 0) & (u < fr["w"]) & (v >= 0) & (v < fr["h"])
        image = np.asarray(Image.open(root / fr["file_path"]).convert("RGB"), float)
        pixels = image[v[inside].astype(int), u[inside].astype(int)]
        diff = np.abs(pixels - rgb[ahead][inside]).mean(axis=1)
        errors.append(float(np.median(diff)) if len(diff) else float("nan"))  # NaN: no point in view
    return errors


def test_nerfstudio_export_schema_splits_and_conventions(tiny_export: Path, tiny_log_dir: Path) -> None:
    meta = check_nerfstudio_schema(tiny_export)
    log = load_log(tiny_log_dir)
    held = holdout_frames(log.num_frames, ReconConfig())
    assert held and meta["neurodrive"]["holdout_frames"] == held
    test_frames = {fr["frame"] for fr in meta["frames"] if fr["file_path"] in meta["test_filenames"]}
    train_frames = {fr["frame"] for fr in meta["frames"] if fr["file_path"] in meta["train_filenames"]}
    assert test_frames == set(held) and not train_frames & set(held)
    assert meta["val_filenames"] == meta["test_filenames"]
    assert len(meta["frames"]) == log.num_frames * len(log.rig.cameras)
    # images byte for byte
    fr = meta["frames"][0]
    assert (tiny_export / fr["file_path"]).read_bytes() == image_path(log.root, fr["camera"], fr["frame"]).read_bytes()
    # the LiDAR points, coloured from the images, land on pixels of their colour in every image
    errors = colour_agreement(tiny_export, meta)
    assert np.median(errors) < 20, errors
    # a wrong convention (OpenCV axes read as OpenGL) does not agree
    flipped = json.loads(json.dumps(meta))
    for f in flipped["frames"]:
        f["transform_matrix"] = (np.asarray(f["transform_matrix"]) @ np.diag([1.0, -1, -1, 1])).tolist()
    assert np.nanmedian(colour_agreement(tiny_export, flipped)) > 5 * np.median(errors)


def test_nerfstudio_masks_hide_moving_actors(tiny_export: Path, tiny_log_dir: Path) -> None:
    log = load_log(tiny_log_dir)
    meta = json.loads((tiny_export / "transforms.json").read_text())
    moving = [t for t in log.tracks if not t.is_static(0.3)]
    assert moving, "the tiny log has moving actors"
    checked = 0
    for fr in meta["frames"]:
        mask = np.asarray(Image.open(tiny_export / fr["mask_path"]))
        assert mask.shape == (fr["h"], fr["w"]) and set(np.unique(mask)) <= {0, 255}
        cam = log.rig.camera(fr["camera"])
        T_camera_world = np.linalg.inv(log.T_world_camera(cam.name, fr["frame"]))
        for t in moving:
            if not t.valid[fr["frame"]]:
                continue
            centre = (T_camera_world @ t.poses[fr["frame"]][:, 3])[:3]
            uv, seen = cam.project(centre[None])
            if seen[0] and centre[2] > 3:
                assert mask[int(uv[0, 1]), int(uv[0, 0])] == 0
                checked += 1
    assert checked > 0
    # the points leave out the returns on moving actors (kept when nothing is masked)
    from neurodrive.geometry import invert_pose, points_in_box, transform_points
    from neurodrive.interop.nerfstudio_export import sweep_points

    indices = [i for i, t in enumerate(log.tracks) if not t.is_static(0.3)]
    origin = np.zeros(3)
    on_actors = {True: 0, False: 0}
    for masked in (True, False):
        for f in range(log.num_frames):
            images = {c.name: log.image(c.name, f) for c in log.rig.cameras}
            xyz, _ = sweep_points(log, f, indices if masked else [], origin, images)
            for i in indices:
                t = log.tracks[i]
                if t.valid[f]:
                    on_actors[masked] += int(
                        points_in_box(transform_points(invert_pose(t.poses[f]), xyz), t.size_m).sum()
                    )
    assert on_actors[True] == 0 and on_actors[False] > 0
    static_only = export_nerfstudio(log, tiny_export.parent / "no_masks", mask_moving=False)
    no_masks = json.loads((tiny_export.parent / "no_masks" / "transforms.json").read_text())
    assert static_only.masked_images == 0 and all("mask_path" not in fr for fr in no_masks["frames"])


def test_nerfstudio_export_bad_input_writes_nothing(tiny_log_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_log_dir, broken)
    bad_image = image_path(broken, load_log(broken).rig.cameras[0].name, 3)
    bad_image.write_bytes(bad_image.read_bytes()[:100])  # truncated
    with pytest.raises(DataError, match=bad_image.name):
        export_nerfstudio(load_log(broken), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    # an existing dataset is kept unless --overwrite
    runner = CliRunner()
    first = runner.invoke(app, ["export", str(tiny_log_dir), "--out", str(tmp_path / "ds")])
    assert first.exit_code == 0, first.output
    stamp = (tmp_path / "ds" / "transforms.json").read_bytes()
    again = runner.invoke(app, ["export", str(tiny_log_dir), "--out", str(tmp_path / "ds")])
    assert again.exit_code == 2 and "already exists" in again.output
    assert (tmp_path / "ds" / "transforms.json").read_bytes() == stamp
    unknown = runner.invoke(app, ["export", str(tiny_log_dir), "--format", "colmap", "--out", str(tmp_path / "x")])
    assert unknown.exit_code == 2 and "unknown export format 'colmap'" in unknown.output
    for option, value, named in (
        ("--voxel", "nan", "--voxel"),
        ("--voxel", "-1", "--voxel"),
        ("--max-points", "0", "--max-points"),
    ):
        wrong = runner.invoke(app, ["export", str(tiny_log_dir), option, value, "--out", str(tmp_path / "z")])
        assert wrong.exit_code == 2 and named in wrong.output and not (tmp_path / "z").exists()
    bad = runner.invoke(app, ["export", str(broken), "--out", str(tmp_path / "y")])
    assert bad.exit_code == 2 and bad_image.name in bad.output and not (tmp_path / "y").exists()


def test_nerfstudio_export_of_a_real_log(tmp_path: Path) -> None:
    """KITTI: the LiDAR points coloured through the exported calibration agree with the images."""
    if not KITTI_DRIVE.exists():
        pytest.skip(f"real data sample not found at {KITTI_DRIVE} (see ../shared/realdata/README.md)")
    from neurodrive.sources import get_source

    log_dir = get_source("kitti-raw").write_log(KITTI_DRIVE, tmp_path / "log", frames=6)
    log = load_log(log_dir)
    result = export_nerfstudio(log, tmp_path / "ns")
    meta = check_nerfstudio_schema(tmp_path / "ns")
    assert result.holdout_frames == [2] and result.points > 1000
    assert np.median(colour_agreement(tmp_path / "ns", meta)) < 25
    # and its Rerun recording: every sweep with all its returns, every image, in the world frame
    pytest.importorskip("rerun", reason="rerun-sdk not installed (install.sh installs it)")
    from neurodrive.interop.rerun_recording import record_log

    assert record_log(log, tmp_path / "kitti.rrd") == log.num_frames
    rrd = read_rrd(tmp_path / "kitti.rrd")
    positions = column(rrd["/world/lidar"], "Points3D:positions")
    assert [len(p) for p in positions] == [log.lidar(f).num_returns for f in range(log.num_frames)]
    camera = log.rig.cameras[0].name
    assert len(column(rrd[f"/world/cameras/{camera}/image"], "EncodedImage:blob")) == log.num_frames


def test_nerfstudio_parser_reads_the_export(tiny_export: Path) -> None:
    """nerfstudio's own parser (optional: it pins numpy<2 and weighs 8 GB, so CI runs without it)."""
    parser_module = pytest.importorskip(
        "nerfstudio.data.dataparsers.nerfstudio_dataparser", reason="nerfstudio not installed (optional extra)"
    )
    config = parser_module.NerfstudioDataParserConfig(data=tiny_export, downscale_factor=1)
    if hasattr(config, "load_3D_points"):  # nerfstudio >= 1.0 reads the PLY when a method asks (splatfacto does)
        config.load_3D_points = True
    parser = config.setup()
    train = parser.get_dataparser_outputs(split="train")
    test = parser.get_dataparser_outputs(split="test")
    meta = json.loads((tiny_export / "transforms.json").read_text())
    assert sorted(str(p.relative_to(tiny_export)) for p in train.image_filenames) == sorted(meta["train_filenames"])
    assert sorted(str(p.relative_to(tiny_export)) for p in test.image_filenames) == sorted(meta["test_filenames"])
    assert train.mask_filenames is not None and len(train.mask_filenames) == len(train.image_filenames)
    from nerfstudio.data.utils.data_utils import get_image_mask_tensor_from_path

    for mask_path in train.mask_filenames:  # nerfstudio trains where its mask is True: off the moving actors
        keep = get_image_mask_tensor_from_path(mask_path)[..., 0].numpy()
        assert np.array_equal(keep, np.asarray(Image.open(mask_path)) == 255)
    frame = next(fr for fr in meta["frames"] if fr["file_path"] == meta["train_filenames"][0])
    assert float(train.cameras.fx[0]) == pytest.approx(frame["fl_x"])
    # the parser moves cameras and points by one transform and scale (the PLY is in the poses' frame)
    transform = train.dataparser_transform.numpy()
    scale = float(train.dataparser_scale)
    centre = np.asarray(frame["transform_matrix"])[:3, 3]
    assert np.allclose(
        train.cameras.camera_to_worlds[0, :3, 3].numpy(),
        scale * (transform[:3, :3] @ centre + transform[:3, 3]),
        atol=1e-4,
    )
    import open3d as o3d

    xyz = np.asarray(o3d.io.read_point_cloud(str(tiny_export / meta["ply_file_path"])).points)
    parsed = train.metadata["points3D_xyz"].numpy()
    assert np.allclose(parsed, scale * (xyz @ transform[:3, :3].T + transform[:3, 3]), atol=1e-4)


# ---------------------------------------------------------------- Rerun


def read_rrd(path: Path) -> dict[str, list]:
    """Entity path -> the record batches (pyarrow) of its chunks, read back with the Rerun SDK."""
    from rerun.chunk import RrdReader

    batches: dict[str, list] = {}
    for chunk in RrdReader(path).stream():
        batches.setdefault(chunk.entity_path, []).append(chunk.to_record_batch())
    return batches


def column(batches: list, suffix: str, timeline: str = "frame") -> list:
    """The values of the component column ending in ``suffix``, one per row, in timeline order."""
    rows = []
    for batch in batches:
        names = batch.schema.names
        name = next((n for n in names if n.endswith(suffix)), None)
        if name is None:  # another archetype's chunk on the same entity (e.g. the static annotation context)
            continue
        times = batch.column(timeline).to_pylist() if timeline in names else [None] * batch.num_rows
        rows += list(zip(times, batch.column(name).to_pylist(), strict=True))
    return [value for _, value in sorted(rows, key=lambda r: -1 if r[0] is None else r[0])]


def test_info_rerun_recording_reads_back(tiny_log_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("rerun", reason="rerun-sdk not installed (install.sh installs it)")
    from neurodrive.interop.rerun_recording import intensity_colours

    log = load_log(tiny_log_dir)
    path = tmp_path / "tiny.rrd"
    result = CliRunner().invoke(app, ["info", str(tiny_log_dir), "--rerun", str(path)])
    assert result.exit_code == 0, result.output
    rrd = read_rrd(path)
    cams = [f"/world/cameras/{c.name}/image" for c in log.rig.cameras]
    expected = {"/world/ego", "/world/ego/box", "/world/ego_path", "/world/actors", "/world/lidar", "/world/map/lanes"}
    assert expected | set(cams) | {"/metrics/ego_speed_mps"} <= set(rrd)
    positions = column(rrd["/world/lidar"], "Points3D:positions")
    colours = column(rrd["/world/lidar"], "Points3D:colors")
    assert len(positions) == sum(log.has_lidar(f) for f in range(log.num_frames))
    for f in (0, log.num_frames - 1):
        sweep = log.lidar(f)
        assert len(positions[f]) == sweep.num_returns
        world = (log.T_world_lidar(f) @ np.c_[sweep.xyz_m, np.ones(sweep.num_returns)].T).T[:, :3]
        assert np.allclose(np.asarray(positions[f]), world, atol=1e-3)
        packed = intensity_colours(sweep.intensity).astype(np.uint32)
        rgba = (packed[:, 0] << 24) | (packed[:, 1] << 16) | (packed[:, 2] << 8) | 255
        assert np.array_equal(np.asarray(colours[f], np.uint32), rgba)
    labels = column(rrd["/world/actors"], "Boxes3D:labels")
    assert len(labels) == log.num_frames
    for f, ids in enumerate(labels):
        assert sorted(ids) == sorted(log.actor_poses_at(f))
    for cam in cams:
        assert len(column(rrd[cam], "EncodedImage:blob")) == log.num_frames
    assert len(column(rrd["/metrics/ego_speed_mps"], "Scalars:scalars")) == log.num_frames
    path_points = column(rrd["/world/ego_path"], "LineStrips3D:strips", timeline="none")
    assert np.allclose(np.asarray(path_points[0]), log.ego_poses[:, :3, 3], atol=1e-4)


def test_replay_rerun_recording_has_the_episode(tiny_scene_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("rerun", reason="rerun-sdk not installed (install.sh installs it)")
    from neurodrive.app.replay import replay

    scenario = tmp_path / "s.yaml"
    scenario.write_text(f"name: rr\nscene: {tiny_scene_dir}\nduration_s: 2.0\n")
    path = tmp_path / "episode.rrd"

    def interrupt(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C mid-episode: no recording, no partial file
        replay(scenario, "constant-velocity", tmp_path / "out", video=False, rerun_path=path, progress=interrupt)
    assert not list(tmp_path.glob("*.rrd*"))
    metrics = replay(scenario, "constant-velocity", tmp_path / "out", video=False, rerun_path=path)
    rrd = read_rrd(path)
    steps = 21  # 2 s at 10 Hz, the start included
    assert {"/world/route", "/world/ego_path", "/world/lidar", "/world/cameras/front/image"} <= set(rrd)
    assert len(column(rrd["/world/cameras/front/image"], "EncodedImage:blob")) == steps
    assert len(column(rrd["/world/lidar"], "Points3D:positions")) == steps
    progress = column(rrd["/metrics/progress_m"], "Scalars:scalars")
    assert len(progress) == steps and progress[0] == [0.0]
    assert progress[-1][0] == pytest.approx(metrics["metrics"]["ego_progress"]["value"], abs=1e-6)
    speeds = column(rrd["/metrics/speed_mps"], "Scalars:scalars")
    assert np.ptp([s[0] for s in speeds]) < 1e-6  # constant velocity
    assert len(column(rrd["/world/actors"], "Boxes3D:labels")) == steps
    confidence = column(rrd["/metrics/realism_confidence"], "Scalars:scalars")
    assert len(confidence) == steps and all(0.0 <= c[0] <= 1.0 for c in confidence)


def test_rerun_bad_input_leaves_no_file(tiny_log_dir: Path, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("rerun", reason="rerun-sdk not installed (install.sh installs it)")
    from neurodrive.interop.rerun_recording import record_log, require_rerun

    runner = CliRunner()
    wrong = runner.invoke(app, ["info", str(tiny_log_dir), "--rerun", str(tmp_path / "tiny.mp4")])
    assert wrong.exit_code == 2 and "must end in .rrd" in wrong.output
    (tmp_path / "folder.rrd").mkdir()
    folder = runner.invoke(app, ["info", str(tiny_log_dir), "--rerun", str(tmp_path / "folder.rrd")])
    assert folder.exit_code == 2 and "is a folder" in folder.output
    path = tmp_path / "kept.rrd"
    path.write_bytes(b"earlier")
    kept = runner.invoke(app, ["info", str(tiny_log_dir), "--rerun", str(path)])
    assert kept.exit_code == 2 and "already exists" in kept.output and path.read_bytes() == b"earlier"
    broken = tmp_path / "broken"
    shutil.copytree(tiny_log_dir, broken)
    bad_image = image_path(broken, load_log(broken).rig.cameras[0].name, 4)
    bad_image.write_bytes(b"not an image")
    with pytest.raises(DataError, match=bad_image.name):
        record_log(load_log(broken), tmp_path / "broken.rrd")
    assert not list(tmp_path.glob("*broken.rrd*"))
    monkeypatch.setitem(__import__("sys").modules, "rerun", None)
    with pytest.raises(RuntimeError, match=r"neurodrive\[rerun\]"):
        require_rerun()


def test_nerfstudio_export_with_a_scene_masks_its_auto_tracks(tiny_log_dir: Path, tmp_path: Path) -> None:
    """``--scene``: the scene's held-out frames, and its auto tracks (movers the log has no labels for)
    masked; a scene of another log is one error naming scene.json's ``log``."""
    from neurodrive.scene.meta import SceneMeta
    from neurodrive.scene.tracks import auto_track_entries

    log = load_log(tiny_log_dir)
    movers = [t for t in log.tracks if not t.is_static(0.3)]
    unlabelled = tmp_path / "unlabelled"  # the tiny log without its labels: a real log's moving traffic
    shutil.copytree(tiny_log_dir, unlabelled)
    (unlabelled / "tracks.json").write_text(json.dumps({"tracks": []}))
    n = log.num_frames
    np.savez(unlabelled / "tracks.npz", poses=np.zeros((0, n, 4, 4)), valid=np.zeros((0, n), bool))
    bare = load_log(unlabelled)
    assert not bare.tracks
    scene = tmp_path / "scene"
    scene.mkdir()
    auto = [item.model_copy(update={"id": f"auto-{i:03d}"}) for i, item in enumerate(auto_track_entries(movers))]
    meta = SceneMeta(auto_tracks=auto, holdout_frames=[3]).model_dump(mode="json")
    meta["log"] = {"name": bare.name, "num_frames": bare.num_frames}
    (scene / "scene.json").write_text(json.dumps(meta))
    plain = export_nerfstudio(bare, tmp_path / "plain")
    with_scene = export_nerfstudio(bare, tmp_path / "with_scene", scene=scene)
    assert plain.masked_images == 0 and with_scene.masked_images > 0
    assert with_scene.holdout_frames == [3]
    meta["log"]["num_frames"] = bare.num_frames + 1
    (scene / "scene.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="scene.json.*log"):
        export_nerfstudio(bare, tmp_path / "other", scene=scene)
    assert not (tmp_path / "other").exists()


def test_eval_writes_one_recording_per_scenario(tiny_scene_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("rerun", reason="rerun-sdk not installed (install.sh installs it)")
    from neurodrive.app.evaluation import evaluate_scenarios

    folder = tmp_path / "scenarios"
    folder.mkdir()
    for name, seconds in (("short", 0.5), ("longer", 1.0)):
        (folder / f"{name}.yaml").write_text(f"name: {name}\nscene: {tiny_scene_dir}\nduration_s: {seconds}\n")
    out = tmp_path / "eval"
    summary = evaluate_scenarios(folder, "idm", out, rerun=True)
    assert not summary["failed"]
    for name, steps in (("short", 6), ("longer", 11)):
        rrd = read_rrd(out / name / "episode.rrd")
        assert len(column(rrd["/metrics/speed_mps"], "Scalars:scalars")) == steps
        assert len(column(rrd["/world/cameras/front/image"], "EncodedImage:blob")) == steps
    again = evaluate_scenarios(folder, "idm", out, rerun=True)  # same request: reused
    assert sorted(again["reused"]) == ["longer", "short"]
    without = evaluate_scenarios(folder, "idm", out)  # a result made with a recording is not "the same"
    assert sorted(without["rerun_stale"]) == ["longer", "short"]
    assert not list(out.glob("*/episode.rrd"))  # the old recordings went with the old results
