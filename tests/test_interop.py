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
    assert len(set(paths)) == len(paths)
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
    moving = [t for t in log.tracks if not t.is_static()]
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
    from neurodrive.interop.nerfstudio_export import coloured_points

    indices = [i for i, t in enumerate(log.tracks) if not t.is_static()]
    origin = np.zeros(3)
    on_actors = {True: 0, False: 0}
    for masked in (True, False):
        for f in range(log.num_frames):
            xyz, _ = coloured_points(log, [f], indices if masked else [], origin)
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
    bad = runner.invoke(app, ["export", str(broken), "--out", str(tmp_path / "y")])
    assert bad.exit_code == 2 and bad_image.name in bad.output and not (tmp_path / "y").exists()


def test_nerfstudio_export_of_a_real_log(tmp_path: Path) -> None:
    """KITTI: the LiDAR points coloured through the exported calibration agree with the images."""
    if not KITTI_DRIVE.exists():
        pytest.skip(f"real data sample not found at {KITTI_DRIVE} (see ../shared/realdata/README.md)")
    from neurodrive.sources import get_source

    log_dir = get_source("kitti-raw").write_log(KITTI_DRIVE, tmp_path / "log", frames=6)
    result = export_nerfstudio(load_log(log_dir), tmp_path / "ns")
    meta = check_nerfstudio_schema(tmp_path / "ns")
    assert result.holdout_frames == [2] and result.points > 1000
    assert np.median(colour_agreement(tmp_path / "ns", meta)) < 25


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
