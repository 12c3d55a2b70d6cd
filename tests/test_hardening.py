"""Bad input and stale results: each probe gives one clear error or the right result.

Each test is a probe a demanding user would try, with the clear error or the right result it must give.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodrive.app.cli import app
from neurodrive.app.evaluation import evaluate_scenarios
from neurodrive.app.replay import replay
from neurodrive.errors import DataError
from neurodrive.io_utils import inside
from neurodrive.logs.io import load_log, read_npz
from neurodrive.reconstruct.pipeline import reconstruct
from neurodrive.render.rendering import SceneRenderer
from neurodrive.scenarios.edits import ActorEdits
from neurodrive.scenarios.scenario import Scenario
from neurodrive.scene.model import SceneModel
from neurodrive.sim.edits import EditedActors
from neurodrive.sim.simulator import Simulator
from tests.conftest import FAST_RECON
from tests.helpers import REPO, copy_log, write_yaml

# ------------------------------------------------------------------ security and data loss


def test_track_ids_cannot_become_paths_outside_the_output(tiny_log_dir: Path, tmp_path: Path) -> None:
    for bad_id in ("../../victim_scene/scene", "/tmp/absolute", ".hidden", ".."):
        log = copy_log(tiny_log_dir, tmp_path / f"log{abs(hash(bad_id))}")
        meta = json.loads((log / "tracks.json").read_text())
        meta["tracks"][0]["id"] = bad_id
        (log / "tracks.json").write_text(json.dumps(meta))
        with pytest.raises(DataError, match=r"tracks.json: field 'tracks\[0\].id'"):
            load_log(log)
    # the writer's own guard, for ids that reach it by another way
    with pytest.raises(ValueError, match="file name"):
        inside(tmp_path, "../victim")
    assert inside(tmp_path, "vehicle_000", ".npz") == tmp_path / "vehicle_000.npz"


def test_scene_actor_ids_are_checked_before_reading_files(tiny_scene_dir: Path, tmp_path: Path) -> None:
    scene = tmp_path / "scene"
    shutil.copytree(tiny_scene_dir, scene)
    meta = json.loads((scene / "scene.json").read_text())
    (scene / "scene.json").write_text(json.dumps(meta | {"actors": ["../../etc/passwd"]}))
    with pytest.raises(DataError, match=r"field 'actors\[0\]'"):
        SceneModel.load(scene)


def test_reconstruct_keeps_a_finished_scene_and_invalidates_it_before_replacing(
    tiny_log_dir: Path, tiny_scene_dir: Path, tmp_path: Path
) -> None:
    log = load_log(tiny_log_dir)
    scene = tmp_path / "scene"
    shutil.copytree(tiny_scene_dir, scene)
    with pytest.raises(FileExistsError, match="--overwrite"):
        reconstruct(log, scene, FAST_RECON)
    SceneModel.load(scene)  # untouched

    def killer(stage: str, done: int, total: int) -> None:
        if stage == "background geometry" and done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reconstruct(log, scene, FAST_RECON, killer, overwrite=True)
    # the old scene was invalidated before anything was replaced: no mixed scene loads
    with pytest.raises(DataError, match="unfinished"):
        SceneModel.load(scene)
    other = tmp_path / "not_a_scene"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        reconstruct(log, other, FAST_RECON)
    with pytest.raises(FileExistsError, match="is a file"):
        reconstruct(log, other / "notes.txt", FAST_RECON)


def test_render_replay_and_evaluate_keep_existing_outputs(
    tiny_scene_dir: Path, tiny_log_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    out = tmp_path / "render"
    args = ["render", str(tiny_scene_dir), "--log", str(tiny_log_dir), "--scale", "0.25", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    before = (out / "front.png").stat().st_mtime_ns
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already exists" in again.output and "--overwrite" in again.output
    assert (out / "front.png").stat().st_mtime_ns == before
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0

    scenario = write_yaml(tmp_path / "s.yaml", {"log": str(tiny_log_dir), "duration_s": 0.5})
    rout = tmp_path / "replay"
    assert runner.invoke(app, ["replay", str(scenario), "--no-video", "--out", str(rout)]).exit_code == 0
    second = runner.invoke(app, ["replay", str(scenario), "--no-video", "--out", str(rout)])
    assert second.exit_code == 2 and "already holds a replay result" in second.output
    assert runner.invoke(app, ["replay", str(scenario), "--no-video", "--out", str(rout), "--overwrite"]).exit_code == 0

    metrics = tmp_path / "m.json"
    metrics.write_text("{}")
    ev = runner.invoke(app, ["evaluate-recon", str(tiny_scene_dir), str(tiny_log_dir), "--out", str(metrics)])
    assert ev.exit_code == 2 and "already exists" in ev.output and metrics.read_text() == "{}"
    folder_out = runner.invoke(app, ["evaluate-recon", str(tiny_scene_dir), str(tiny_log_dir), "--out", str(tmp_path)])
    assert folder_out.exit_code == 2 and "is a folder" in folder_out.output


def test_eval_reuses_results_only_for_the_same_agent_scenario_and_code(tiny_log_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    path = write_yaml(folder / "a.yaml", {"log": str(tiny_log_dir), "duration_s": 1.0})
    out = tmp_path / "eval"
    first = evaluate_scenarios(folder, "constant-velocity", out)
    assert first["results"]["a"]["agent"] == "constant-velocity" and first["reused"] == []
    told: list[tuple[list[str], list[str]]] = []
    second = evaluate_scenarios(folder, "expert", out, on_reuse=lambda r, s: told.append((r, s)))
    assert second["results"]["a"]["agent"] == "expert" and second["rerun_stale"] == ["a"] and told == [([], ["a"])]
    third = evaluate_scenarios(folder, "expert", out)
    assert third["reused"] == ["a"] and third["results"]["a"]["run_key"]["agent"] == "expert"
    write_yaml(path, {"log": str(tiny_log_dir), "duration_s": 0.5})  # the scenario changed
    fourth = evaluate_scenarios(folder, "expert", out)
    assert fourth["rerun_stale"] == ["a"]
    assert json.loads((out / "a" / "metrics.json").read_text())["run_key"] == fourth["results"]["a"]["run_key"]


# ------------------------------------------------------------------ crashes


def test_non_finite_poses_and_rays_are_refused_before_any_cast(
    tiny_scene_dir: Path, tiny_log_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    base = ["render", str(tiny_scene_dir), "--log", str(tiny_log_dir), "--scale", "0.25", "--out", str(tmp_path / "r")]
    for extra, message in (
        (["--lane-shift", "nan"], "--lane-shift must be a finite"),
        (["--pose", "nan,0,0"], "--pose must hold finite"),
        (["--pose", "1e9,0,0"], "outside the log"),
    ):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2 and message in result.output, result.output
    model = SceneModel.load(tiny_scene_dir)
    log = load_log(tiny_log_dir)
    renderer = SceneRenderer(model)
    placed = renderer.place({})
    bad = log.ego_poses[0].copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="T_world_ego"):
        renderer.render_camera(placed, log.rig.cameras[0], bad)
    with pytest.raises(ValueError, match="T_world_ego"):
        renderer.render_lidar(placed, log.rig.lidar, bad)
    dirs = np.array([[1.0, 0.0, 0.0], [np.nan, 0.0, 0.0]], np.float32)
    from neurodrive.raycast.embree import EmbreeBackend, native_built
    from neurodrive.raycast.open3d_caster import Open3dBackend

    backends = [Open3dBackend()] + ([EmbreeBackend()] if native_built() else [])
    casters = [b.placement([renderer.background_handle(b)], [np.eye(4)], [0.0]) for b in backends]
    for caster in casters:  # Embree would abort the process (assertion), open3d would hang
        with pytest.raises(ValueError, match="NaN or infinite"):
            caster.cast(np.zeros(3, np.float32), dirs)
    with pytest.raises(ValueError):
        renderer.place({"vehicle_000": bad})
    edits = write_yaml(
        tmp_path / "e.yaml", {"insert": [{"id": "x", "asset": "vehicle_000", "pose": [".nan", 0, 0, 0]}]}
    )
    edits.write_text(edits.read_text().replace("'.nan'", ".nan"))
    with pytest.raises(DataError, match=r"insert\[0\].pose"):
        ActorEdits.load(edits)


def test_env_refuses_a_non_finite_action(tiny_log_dir: Path) -> None:
    import gymnasium as gym

    import neurodrive  # noqa: F401 - registers the env

    env = gym.make("neurodrive/ClosedLoop-v0", log=str(tiny_log_dir), duration_s=1.0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(np.array([np.nan, 0.0], np.float32))
    env.close()


def test_self_intersecting_drivable_area_is_refused_at_load(tiny_log_dir: Path, tmp_path: Path) -> None:
    log = copy_log(tiny_log_dir, tmp_path / "log")
    meta = json.loads((log / "map.json").read_text())
    meta["drivable_areas"].append([[0, 0], [10, 10], [10, 0], [0, 10]])  # a bow tie
    (log / "map.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"map.json: field 'drivable_areas'.*(Self-intersection|not a valid)"):
        load_log(log)
    result = CliRunner().invoke(app, ["info", str(log)])
    assert result.exit_code == 2 and "drivable_areas" in result.output


def test_eval_records_a_scenario_failure_and_goes_on(tiny_log_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import neurodrive.app.replay as replay_module

    folder = tmp_path / "scenarios"
    folder.mkdir()
    write_yaml(folder / "good.yaml", {"log": str(tiny_log_dir), "duration_s": 0.5})
    write_yaml(folder / "crash.yaml", {"log": str(tiny_log_dir), "duration_s": 0.5})
    real = replay_module.replay

    def flaky(path, *args, **kwargs):
        if Path(path).stem == "crash":
            raise RuntimeError("TopologyException: side location conflict")  # what GEOS raised mid-episode
        return real(path, *args, **kwargs)

    monkeypatch.setattr(replay_module, "replay", flaky)
    summary = evaluate_scenarios(folder, "expert", tmp_path / "eval")
    assert summary["failed"] == ["crash"] and "TopologyException" in summary["results"]["crash"]["error"]
    assert "nuplan_score" in summary["results"]["good"]
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["failed"] == ["crash"]


# ------------------------------------------------------------------ one message instead of a traceback


def test_corrupt_npz_data_inside_an_intact_zip(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    np.savez_compressed(path, xyz_m=np.random.default_rng(0).random((5000, 3)))
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("xyz_m.npy")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data = bytearray(path.read_bytes())
    for k in range(start + 200, start + 260):
        data[k] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="a.npz: corrupt or truncated"):
        read_npz(path, {"xyz_m": (None, 3)})


def test_wrong_kinds_of_files_give_one_message(tiny_log_dir: Path, tiny_scene_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a folder, expected a scenario YAML"):
        Scenario.load(tmp_path)
    with pytest.raises(DataError, match="is a folder, expected a edits YAML"):
        ActorEdits.load(tmp_path)
    png = tmp_path / "picture.yaml"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(DataError, match="not a scenario YAML file"):
        Scenario.load(png)
    with pytest.raises(DataError, match="is a file, expected a log folder"):
        load_log(tiny_log_dir / "log.json")
    with pytest.raises(DataError, match="is a file, expected a reconstructed scene folder"):
        SceneModel.load(tiny_scene_dir / "scene.json")
    scene = tmp_path / "scene"
    shutil.copytree(tiny_scene_dir, scene)
    (scene / "scene.json").write_text("[1, 2, 3]")
    with pytest.raises(DataError, match="expected a JSON object"):
        SceneModel.load(scene)
    runner = CliRunner()
    result = runner.invoke(app, ["replay", str(tmp_path), "--no-video", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "is a folder" in result.output
    target = tmp_path / "afile"
    target.write_text("x")
    result = runner.invoke(app, ["render", str(tiny_scene_dir), "--log", str(tiny_log_dir), "--out", str(target)])
    assert result.exit_code == 2 and "is a file" in result.output


def test_corrupt_checkpoints_name_the_file_and_how_to_start_over(
    tiny_log_dir: Path, tiny_scene_dir: Path, tmp_path: Path
) -> None:
    log = load_log(tiny_log_dir)
    out = tmp_path / "scene"

    def killer(stage: str, done: int, total: int) -> None:
        if stage == "training appearance" and done == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reconstruct(log, out, FAST_RECON, killer)
    ckpt = out / "checkpoints"
    saved = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    for name, corrupt in (
        ("run.json", b"{not json"),
        ("appearance.json", b"[]"),
        ("appearance.safetensors", saved["appearance.safetensors"][:100]),
        ("background_geometry.npz", saved["background_geometry.npz"][:50]),
    ):
        (ckpt / name).write_bytes(corrupt)
        with pytest.raises(DataError, match=rf"{name}.*corrupt checkpoint.*--restart"):
            reconstruct(log, out, FAST_RECON)
        (ckpt / name).write_bytes(saved[name])
    (ckpt / "run.json").write_bytes(b"{not json")
    result = CliRunner().invoke(app, ["reconstruct", str(tiny_log_dir), "--out", str(out), "--steps", "40"])
    assert result.exit_code == 2 and "run.json" in result.output and "--restart" in result.output
    # resuming after the interruption gives the very same scene as an uninterrupted run (same seed)
    (ckpt / "run.json").write_bytes(saved["run.json"])
    reconstruct(log, out, FAST_RECON)
    for path in sorted(tiny_scene_dir.rglob("*")):
        if path.is_file() and path.name != "scene.json":
            assert (out / path.relative_to(tiny_scene_dir)).read_bytes() == path.read_bytes(), path.name
    # --restart discards the checkpoints
    (out / "scene.json").unlink()
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "run.json").write_text("{broken")
    calls: list[str] = []
    reconstruct(log, out, FAST_RECON, lambda s, d, n: calls.append(s), restart=True)
    assert "background geometry" in calls and (out / "scene.json").is_file()
    # every step of reconstruction reports progress (no silent stage)
    for stage in (
        "meshing the background (marching cubes)",
        "extruding wall tops, carving them by LiDAR",
        "fitting texel colours and exposures",
        "fitting LiDAR ray drop",
        "baking colours, writing the scene",
    ):
        assert stage in calls


# ------------------------------------------------------------------ silent wrong answers


def test_out_of_range_edits_and_starts_are_refused(tiny_scene_dir: Path, tiny_log_dir: Path, tmp_path: Path) -> None:
    model, log = SceneModel.load(tiny_scene_dir), load_log(tiny_log_dir)
    with pytest.raises(DataError, match=r"repose.vehicle_000.offset.*limited"):
        EditedActors(ActorEdits.model_validate({"repose": {"vehicle_000": {"offset": [1e6, 0, 0, 0]}}}), log, model)
    with pytest.raises(DataError, match=r"insert\[0\].pose.*outside the log's world"):
        EditedActors(
            ActorEdits.model_validate({"insert": [{"id": "x", "asset": "vehicle_000", "pose": [1e12, 0, 0.7, 0]}]}),
            log,
            model,
        )
    far = Scenario.parse({"log": str(tiny_log_dir), "start": {"pose": [1e6, 0, 0]}})
    with pytest.raises(DataError, match="start.pose.*outside the log"):
        Simulator.from_scenario(far, render_sensors=False)
    inserted = Scenario.parse(
        {
            "log": str(tiny_log_dir),
            "actors": {"insert": [{"id": "c", "asset": "vehicle_000", "trajectory": [[0, 5e5, 0, 0]]}]},
        }
    )
    with pytest.raises(DataError, match=r"actors.insert\[0\].trajectory"):
        Simulator.from_scenario(inserted, render_sensors=False)


def test_edits_file_asset_paths_resolve_against_the_file(
    tiny_scene_dir: Path, tiny_log_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    for suffix in (".npz", ".json"):
        shutil.copy(tiny_scene_dir / "actors" / f"vehicle_000{suffix}", assets / f"car{suffix}")
    sub = tmp_path / "edits"
    sub.mkdir()
    path = write_yaml(
        sub / "e.yaml", {"insert": [{"id": "extra", "asset": "../assets/car.npz", "pose": [0.0, 0.0, 0.7, 0.0]}]}
    )
    monkeypatch.chdir(REPO)  # elsewhere than the edits file
    edited = EditedActors.load(load_log(tiny_log_dir), SceneModel.load(tiny_scene_dir), path)
    assert "extra" in edited.scene.actors


def test_unknown_camera_is_refused_without_video_too(tiny_scene_dir: Path, tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "s.yaml", {"scene": str(tiny_scene_dir), "duration_s": 0.5, "sensors": {"cameras": ["rear"]}}
    )
    with pytest.raises(DataError, match=r"sensors.cameras\[0\].*unknown camera 'rear'"):
        replay(path, "constant-velocity", tmp_path / "out", video=False)
