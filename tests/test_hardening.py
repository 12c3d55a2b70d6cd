"""Bad input, interrupted runs and stale results: each probe gives one clear error or the right result.

One test per defect found by probing the commands as a demanding user would (issue 12).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from neurodrive.app.cli import app
from neurodrive.errors import DataError
from neurodrive.app.evaluation import evaluate_scenarios
from neurodrive.io_utils import inside
from neurodrive.render.edits import EditedScene, SceneEdits
from neurodrive.reconstruct.pipeline import reconstruct
from neurodrive.scene.model import SceneModel
from neurodrive.app.replay import driver_order, replay
from neurodrive.logs.io import load_log, read_npz
from neurodrive.scenarios.scenario import Scenario
from neurodrive.sim.simulator import Simulator
from tests.conftest import FAST_RECON

REPO = Path(__file__).resolve().parents[1]


def copy_log(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


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


def test_render_replay_and_evaluate_keep_existing_outputs(tiny_scene_dir: Path, tiny_log_dir: Path, tmp_path: Path) -> None:
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
    for extra, message in ((["--lane-shift", "nan"], "--lane-shift must be a finite"),
                           (["--pose", "nan,0,0"], "--pose must hold finite"),
                           (["--pose", "1e9,0,0"], "outside the log")):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2 and message in result.output, result.output
    model = SceneModel.load(tiny_scene_dir)
    log = load_log(tiny_log_dir)
    placed = model.place({})
    bad = log.ego_poses[0].copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="T_world_ego"):
        model.render_camera(placed, log.rig.cameras[0], bad)
    with pytest.raises(ValueError, match="T_world_ego"):
        model.render_lidar(placed, log.rig.lidar, bad)
    dirs = np.array([[1.0, 0.0, 0.0], [np.nan, 0.0, 0.0]], np.float32)
    from neurodrive.raycast.embree import EmbreeBackend, native_built
    from neurodrive.raycast.open3d_caster import Open3dBackend

    backends = [Open3dBackend()] + ([EmbreeBackend()] if native_built() else [])
    casters = [b.placement([model.background_handle(b)], [np.eye(4)], [0.0]) for b in backends]
    for caster in casters:  # Embree would abort the process (assertion), open3d would hang
        with pytest.raises(ValueError, match="NaN or infinite"):
            caster.cast(np.zeros(3, np.float32), dirs)
    with pytest.raises(ValueError):
        model.place({"vehicle_000": bad})
    edits = write_yaml(tmp_path / "e.yaml", {"insert": [{"id": "x", "asset": "vehicle_000", "pose": [".nan", 0, 0, 0]}]})
    edits.write_text(edits.read_text().replace("'.nan'", ".nan"))
    with pytest.raises(DataError, match=r"insert\[0\].pose"):
        SceneEdits.load(edits)


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
        SceneEdits.load(tmp_path)
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


def test_corrupt_checkpoints_name_the_file_and_how_to_start_over(tiny_log_dir: Path, tiny_scene_dir: Path, tmp_path: Path) -> None:
    log = load_log(tiny_log_dir)
    out = tmp_path / "scene"

    def killer(stage: str, done: int, total: int) -> None:
        if stage == "training appearance" and done == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reconstruct(log, out, FAST_RECON, killer)
    ckpt = out / "checkpoints"
    saved = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    for name, corrupt in (("run.json", b"{not json"), ("appearance.json", b"[]"),
                          ("appearance.safetensors", saved["appearance.safetensors"][:100]),
                          ("background_geometry.npz", saved["background_geometry.npz"][:50])):
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
    for stage in ("meshing the background (marching cubes)", "extruding wall tops, carving them by LiDAR",
                  "fitting texel colours and exposures", "fitting LiDAR ray drop", "baking colours, writing the scene"):
        assert stage in calls


# ------------------------------------------------------------------ silent wrong answers


def test_out_of_range_edits_and_starts_are_refused(tiny_scene_dir: Path, tiny_log_dir: Path, tmp_path: Path) -> None:
    model = SceneModel.load(tiny_scene_dir)
    with pytest.raises(DataError, match=r"repose.vehicle_000.offset.*limited"):
        EditedScene(model, SceneEdits.model_validate({"repose": {"vehicle_000": {"offset": [1e6, 0, 0, 0]}}}))
    with pytest.raises(DataError, match=r"insert\[0\].pose.*outside the scene"):
        EditedScene(model, SceneEdits.model_validate({"insert": [{"id": "x", "asset": "vehicle_000", "pose": [1e12, 0, 0.7, 0]}]}))
    far = Scenario.parse({"log": str(tiny_log_dir), "start": {"pose": [1e6, 0, 0]}})
    with pytest.raises(DataError, match="start.pose.*outside the log"):
        Simulator(far, render_sensors=False)
    inserted = Scenario.parse({"log": str(tiny_log_dir), "actors": {"insert": [
        {"id": "c", "asset": "vehicle_000", "trajectory": [[0, 5e5, 0, 0]]}]}})
    with pytest.raises(DataError, match=r"actors.insert\[0\].trajectory"):
        Simulator(inserted, render_sensors=False)


def test_edits_file_asset_paths_resolve_against_the_file(tiny_scene_dir: Path, tmp_path: Path, monkeypatch) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    for suffix in (".npz", ".json"):
        shutil.copy(tiny_scene_dir / "actors" / f"vehicle_000{suffix}", assets / f"car{suffix}")
    sub = tmp_path / "edits"
    sub.mkdir()
    path = write_yaml(sub / "e.yaml", {"insert": [{"id": "extra", "asset": "../assets/car.npz", "pose": [0.0, 0.0, 0.7, 0.0]}]})
    monkeypatch.chdir(REPO)  # elsewhere than the edits file
    edited = EditedScene.load(SceneModel.load(tiny_scene_dir), path)
    assert "extra" in edited.model.actors


def test_unknown_camera_is_refused_without_video_too(tiny_scene_dir: Path, tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "s.yaml", {"scene": str(tiny_scene_dir), "duration_s": 0.5, "sensors": {"cameras": ["rear"]}})
    with pytest.raises(DataError, match=r"sensors.cameras\[0\].*unknown camera 'rear'"):
        replay(path, "constant-velocity", tmp_path / "out", video=False)


# ------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_in_reconstruct_says_what_was_kept(tiny_log_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "scene"
    cmd = [sys.executable, "-m", "neurodrive.app.cli", "reconstruct", str(tiny_log_dir), "--out", str(out), "--steps", "400"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "background_geometry.npz").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    text = " ".join((stdout + stderr).split())
    assert "interrupted:" in text and "checkpoints" in text and "resume" in text and "Traceback" not in text
    assert not (out / "scene.json").exists()


def test_ctrl_c_in_replay_leaves_no_partial_files(tiny_scene_dir: Path, tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "s.yaml", {"scene": str(tiny_scene_dir), "duration_s": 2.0})
    out = tmp_path / "out"

    def interrupt(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replay(path, "constant-velocity", out, video=True, progress=interrupt)
    assert sorted(p.name for p in out.iterdir()) == []


def test_ctrl_c_in_eval_cancels_queued_scenarios(tiny_scene_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    for k in range(16):  # episodes with rendered LiDAR: long enough that the queue cannot drain at once
        write_yaml(folder / f"s{k}.yaml", {"scene": str(tiny_scene_dir), "duration_s": 6.0, "seed": k})
    out = tmp_path / "eval"

    def interrupt(name: str, result: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_scenarios(folder, "lidar-aeb", out, workers=2, on_done=interrupt)
    time.sleep(8.0)  # anything still queued would have started (and finished) by now
    started = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
    # the two running and the few already handed to the workers' queue may finish; the rest never start
    assert 1 <= len(started) <= 8, started


# ------------------------------------------------------------------ viewer, videos and plots


def test_viewer_fits_the_screen_orders_panels_and_shows_state(tiny_scene_dir: Path, tiny_log_dir: Path, monkeypatch) -> None:
    from neurodrive.app.viewer import Viewer, headless

    log = load_log(tiny_log_dir)
    assert driver_order([(c.name, c.T_ego_camera) for c in log.rig.cameras]) == ["front_left", "front", "front_right"]
    headless()
    viewer = Viewer(tiny_scene_dir, max_size_px=(1000, 700))
    try:
        assert viewer.screen.get_width() <= 1000 and viewer.screen.get_height() <= 700
        viewer.run(max_frames=3)
        hud = " ".join(text for text, _ in viewer.hud_lines())
        assert "km/h" in hud and "frames/s" in hud and "realism" in hud and "Esc quit" in hud
    finally:
        viewer.close()
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = CliRunner().invoke(app, ["view", str(tiny_scene_dir)])
    assert result.exit_code == 2 and "no display" in result.output
    bad = CliRunner().invoke(app, ["view", str(tiny_scene_dir), "--size", "huge"])
    assert bad.exit_code == 2 and "--size" in bad.output


def test_video_panels_plot_labels_and_file_modes(tiny_scene_dir: Path, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurodrive.agents import make_agent
    from neurodrive.app.replay import compose_frame, plot_figure, run_episode

    crash = {"id": "blocker", "asset": "vehicle_001", "trajectory": [[0.0, -2.0, -5.25, 0.0]]}
    path = write_yaml(tmp_path / "s.yaml", {"name": "blocked", "scene": str(tiny_scene_dir), "duration_s": 2.0,
                                            "actors": {"insert": [crash]}})
    sim = Simulator(Scenario.load(path), path)
    frames = []
    run_episode(sim, make_agent("constant-velocity"), on_frame=lambda obs: frames.append(compose_frame(sim, obs, 90)))
    assert sim.record.collisions, "the blocker should be hit"
    fig = plot_figure(sim, "constant-velocity")
    assert fig._suptitle.get_text() == "blocked - agent constant-velocity"
    legend = fig.axes[0].get_legend()
    assert legend is not None and any("collision with blocker" in t.get_text() for t in legend.get_texts())
    plt.close(fig)
    out = tmp_path / "out"
    replay(path, "constant-velocity", out, video=False)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert len(set(modes.values())) == 1, modes  # plot.png like the rest


# ------------------------------------------------------------------ first run


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_install_prefers_the_cpu_wheel_index_when_it_answers(tmp_path: Path) -> None:
    env = dict(os.environ, NEURODRIVE_INSTALL_PLAN="1", TORCH_CPU_INDEX="http://127.0.0.1:9/whl/cpu")
    start = time.time()
    plan = subprocess.run(["bash", str(REPO / "install.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0 and plan.stdout.strip() == "torch: configured" and time.time() - start < 15

    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "index.html").write_text("<html></html>")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env["TORCH_CPU_INDEX"] = f"http://127.0.0.1:{server.server_address[1]}"
        plan = subprocess.run(["bash", str(REPO / "install.sh")], env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert plan.returncode == 0 and plan.stdout.strip() == "torch: cpu-index"
