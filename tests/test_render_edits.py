"""Rendering a reconstructed scene with edited actors, the edits file, realism confidence, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodrive.app.cli import app
from neurodrive.errors import DataError
from neurodrive.geometry import invert_pose, make_pose, points_in_box, pose_xyz_yaw, transform_points
from neurodrive.logs.io import load_log
from neurodrive.render.rendering import SceneRenderer
from neurodrive.scenarios.edits import ActorEdits
from neurodrive.scene.model import SceneModel
from neurodrive.sim.edits import EditedActors

FRAME = 4


@pytest.fixture(scope="module")
def model(tiny_scene_dir: Path) -> SceneModel:
    return SceneModel.load(tiny_scene_dir)


@pytest.fixture(scope="module")
def log(tiny_log_dir: Path):
    return load_log(tiny_log_dir)


def _render(model, log, poses):
    renderer = SceneRenderer(model)
    placed = renderer.place(poses)
    return placed, renderer.render_frame(placed, log.ego_poses[FRAME], log.rig.cameras, log.rig.lidars)


def _most_visible_actor(model, log) -> str:
    poses = {a: p for a, p in log.actor_poses_at(FRAME).items() if a in model.actors}
    placed, frame = _render(model, log, poses)
    counts = {
        a: sum(int((r.instance == placed.actor_ids.index(a)).sum()) for r in frame.cameras.values()) for a in poses
    }
    return max(counts, key=counts.get)


def test_removing_an_actor_removes_its_pixels_and_returns(model, log) -> None:
    poses = {a: p for a, p in log.actor_poses_at(FRAME).items() if a in model.actors}
    target = _most_visible_actor(model, log)
    placed, before = _render(model, log, poses)
    k = placed.actor_ids.index(target)
    assert (before.lidar.instance == k).sum() > 5
    covered = {c: r.instance == k for c, r in before.cameras.items()}
    assert sum(m.sum() for m in covered.values()) > 50
    edited = EditedActors(ActorEdits(remove=[target]), log, model)
    placed2, after = _render(edited.scene, log, edited.poses_at(FRAME))
    assert target not in placed2.actor_ids
    pts = transform_points(log.T_world_lidar(FRAME), after.lidar.sweep.xyz_m)
    local = transform_points(invert_pose(poses[target]), pts)
    assert points_in_box(local, log.track(target).size_m, -0.05).sum() == 0  # no returns left inside
    for cam, mask in covered.items():
        if mask.any():  # what it hid is background now, farther away
            assert np.median(after.cameras[cam].depth_m[mask]) > np.median(before.cameras[cam].depth_m[mask])


def test_reposing_moves_pixels_and_returns_consistently(model, log) -> None:
    target = _most_visible_actor(model, log)
    offset = np.array([2.0, 0.0, 0.0])
    base = {a: p for a, p in log.actor_poses_at(FRAME).items() if a in model.actors}
    edited = EditedActors(ActorEdits.model_validate({"repose": {target: {"offset": [*offset, 0.0]}}}), log, model)
    moved_poses = edited.poses_at(FRAME)
    np.testing.assert_allclose(moved_poses[target], base[target] @ make_pose(offset))
    shift_world = moved_poses[target][:3, 3] - base[target][:3, 3]
    placed_a, a = _render(model, log, base)
    placed_b, b = _render(edited.scene, log, moved_poses)
    ka, kb = placed_a.actor_ids.index(target), placed_b.actor_ids.index(target)
    pa = transform_points(log.T_world_lidar(FRAME), a.lidar.sweep.xyz_m[a.lidar.instance == ka])
    pb = transform_points(log.T_world_lidar(FRAME), b.lidar.sweep.xyz_m[b.lidar.instance == kb])
    assert len(pa) > 5 and len(pb) > 5
    # LiDAR: the returns stay on the actor, which sits at its new pose
    local = transform_points(invert_pose(moved_poses[target]), pb)
    assert points_in_box(local, log.track(target).size_m, 0.05).all()
    assert np.linalg.norm(pb.mean(0) - pa.mean(0) - shift_world) < 1.5
    # camera: the actor's pixels, lifted to 3D with their depth, lie in the moved box too
    checked = 0
    for cam in log.rig.cameras:
        mb = b.cameras[cam.name].instance == kb
        if mb.sum() < 30:
            continue
        v, u = np.nonzero(mb)
        k = cam.intrinsics
        rays = np.stack([(u + 0.5 - k[0, 2]) / k[0, 0], (v + 0.5 - k[1, 2]) / k[1, 1], np.ones(len(u))], 1)
        world = transform_points(log.T_world_camera(cam.name, FRAME), rays * b.cameras[cam.name].depth_m[mb][:, None])
        inside = points_in_box(
            transform_points(invert_pose(moved_poses[target]), world), log.track(target).size_m, 0.05
        )
        assert inside.mean() > 0.95, cam.name
        checked += 1
    assert checked > 0


def test_inserted_asset_appears_at_the_requested_pose(model, log, tiny_scene_dir: Path) -> None:
    source = _most_visible_actor(model, log)
    ego = log.ego_poses[FRAME]
    ahead = transform_points(ego, np.array([[9.0, 0.0, 0.0]]))[0]
    z = log.track(source).size_m[2] / 2
    pose = [float(ahead[0]), float(ahead[1]), float(z), 0.3]
    asset_file = str(tiny_scene_dir / "actors" / f"{source}.npz")  # an asset file, as from another scene
    edits = ActorEdits.model_validate({"insert": [{"id": "newcomer", "asset": asset_file, "pose": pose}]})
    edited = EditedActors(edits, log, model)
    poses = edited.poses_at(FRAME)
    np.testing.assert_allclose(poses["newcomer"], pose_xyz_yaw(*pose))
    placed, frame = _render(edited.scene, log, poses)
    k = placed.actor_ids.index("newcomer")
    assert (frame.cameras["front"].instance == k).sum() > 100
    pts = transform_points(log.T_world_lidar(FRAME), frame.lidar.sweep.xyz_m[frame.lidar.instance == k])
    assert len(pts) > 10
    assert points_in_box(transform_points(invert_pose(pose_xyz_yaw(*pose)), pts), log.track(source).size_m, 0.05).all()


def test_edits_file_errors_name_file_and_field(model, log, tmp_path: Path) -> None:
    path = tmp_path / "edits.yaml"
    path.write_text("remove: [nobody]\n")
    with pytest.raises(DataError, match=r"edits.yaml: field 'remove\[0\]': unknown actor id 'nobody'"):
        EditedActors.load(log, model, path)
    path.write_text("repose:\n  vehicle_000: {offset: [1, 2, 3, 0], trajectory: [[0, 0, 0, 0]]}\n")
    with pytest.raises(DataError, match="exactly one of"):
        ActorEdits.load(path)
    path.write_text("insert: [{id: x, asset: vehicle_000, pose: [1, 2, nan, 0]}]\n")
    with pytest.raises(DataError, match=r"insert\[0\]\.pose"):
        ActorEdits.load(path)
    path.write_text("remove: [a\n")
    with pytest.raises(DataError, match="not valid YAML"):
        ActorEdits.load(path)


def test_placing_rejects_unknown_actors_and_bad_poses(model, log) -> None:
    poses = {a: p for a, p in log.actor_poses_at(FRAME).items() if a in model.actors}
    actor = next(iter(poses))
    with pytest.raises(KeyError, match="unknown actor id"):
        SceneRenderer(model).place({"nobody": np.eye(4)})
    with pytest.raises(ValueError, match=actor):
        SceneRenderer(model).place(poses | {actor: np.full((4, 4), np.nan)})
    with pytest.raises(ValueError, match=actor):
        SceneRenderer(model).place(poses | {actor: np.eye(3)})


def test_realism_confidence_falls_with_extrapolation(model, log) -> None:
    renderer = SceneRenderer(model)
    placed = renderer.place({})
    scores = []
    for shift in (0.0, 2.0, 15.0):
        ego = log.ego_poses[model.meta.training_frames[0]] @ make_pose([0.0, shift, 0.0])
        scores.append(renderer.render_frame(placed, ego, log.rig.cameras[:1]).confidence)
    assert scores[0].distance_to_training_m < 1e-6 and scores[0].score > 0.5
    assert scores[0].score > scores[1].score > scores[2].score
    assert scores[2].unseen_pixel_share > scores[0].unseen_pixel_share


def test_render_cli_writes_images_lidar_and_confidence(
    tiny_scene_dir: Path, tiny_log_dir: Path, tmp_path: Path
) -> None:
    edits = tmp_path / "edits.yaml"
    edits.write_text("remove: [pedestrian_000]\n")
    out = tmp_path / "render"
    result = CliRunner().invoke(
        app,
        [
            "render",
            str(tiny_scene_dir),
            "--log",
            str(tiny_log_dir),
            "--frame",
            "3",
            "--lane-shift",
            "2",
            "--edit",
            str(edits),
            "--scale",
            "0.5",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    from PIL import Image

    assert Image.open(out / "front.png").size == (80, 45)
    ply = (out / "lidar.ply").read_bytes()
    n = int(ply.split(b"element vertex ")[1].split(b"\n")[0])
    assert n > 100 and len(ply.split(b"end_header\n", 1)[1]) == n * 16
    import json

    conf = json.loads((out / "confidence.json").read_text())
    assert abs(conf["distance_to_training_m"] - 2.0) < 1.0 and "pedestrian_000" not in conf["actors"]
    bad = CliRunner().invoke(
        app, ["render", str(tiny_scene_dir), "--log", str(tiny_log_dir), "--frame", "99", "--out", str(out)]
    )
    assert bad.exit_code == 2 and "--frame must lie in" in bad.output


def test_renderer_and_simulator_share_one_edit_model(model, log, tiny_log_dir: Path) -> None:
    """The same edits (a re-pose by offset, a re-pose by timed waypoints, inserts by pose and by
    waypoints without z) put every actor at the same pose in `neurodrive render` and in the simulator."""
    from neurodrive.scenarios.scenario import Scenario
    from neurodrive.sim.simulator import SimConfig, Simulator
    from neurodrive.sim.vehicle import Control

    ids = [t.actor_id for t in log.tracks if t.valid.all() and t.actor_id in model.actors]
    x0, y0 = (float(v) for v in log.ego_poses[0, :2, 3])
    actors = {
        "remove": [ids[0]],
        "repose": {
            ids[1]: {"offset": [1.0, 0.5, 0.0, 0.1]},
            ids[2]: {"trajectory": [[0.0, x0 + 5, y0 + 3, 0.0], [1.0, x0 + 9, y0 + 3, 0.2]]},
        },
        "insert": [
            {"id": "standing", "asset": ids[1], "pose": [x0 + 12, y0 - 3, 1.5]},
            {"id": "mover", "asset": ids[2], "trajectory": [[0.0, x0, y0 - 6, 0.0], [0.8, x0 + 8, y0 - 6, 0.0]]},
        ],
    }
    edited = EditedActors(ActorEdits.model_validate(actors), log, model)
    scenario = Scenario.parse({"log": str(tiny_log_dir), "actors": actors, "duration_s": 60.0})
    sim = Simulator(scenario, log, config=SimConfig(stop_on_collision=False))
    sim.reset()
    dt = float(np.diff(log.timestamps_s).mean())
    assert abs(dt - sim.config.dt_s) < 1e-6  # the tiny log runs at the simulator's 10 Hz
    for frame in range(log.num_frames - 1):
        rendered = edited.poses_at(frame)
        simulated = {aid: a.pose() for aid, a in sim.state.actors.items()}
        assert ids[0] not in rendered and ids[0] not in simulated
        for aid in (ids[1], ids[2], "standing", "mover"):
            np.testing.assert_allclose(rendered[aid], simulated[aid], atol=1e-6, err_msg=f"{aid} at frame {frame}")
        sim.step(Control(0.0, 0.0))
