"""Interrupted runs, the viewer, videos and plots, the first install: each probe gives the right result.

Each test is a probe a demanding user would try, with the result it must give.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurodrive.app.cli import app
from neurodrive.app.evaluation import evaluate_scenarios
from neurodrive.app.replay import replay
from neurodrive.logs.io import load_log
from neurodrive.scenarios.scenario import Scenario
from neurodrive.sim.simulator import Simulator
from neurodrive.viz.frames import driver_order
from tests.helpers import REPO, write_yaml

# ------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_in_reconstruct_says_what_was_kept(tiny_log_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "scene"
    cmd = [
        sys.executable,
        "-m",
        "neurodrive.app.cli",
        "reconstruct",
        str(tiny_log_dir),
        "--out",
        str(out),
        "--steps",
        "1000000",  # appearance training that cannot end before the signal, on any machine
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = out / "checkpoints" / "background_geometry.npz"
    while not checkpoint.is_file():  # written once geometry is done, long before training could end
        assert proc.poll() is None, proc.communicate()
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


def test_ctrl_c_in_eval_stops_the_workers_before_it_reports(tiny_scene_dir: Path, tmp_path: Path) -> None:
    import multiprocessing

    from neurodrive.app.evaluation import EvalInterrupted

    folder = tmp_path / "scenarios"
    folder.mkdir()
    for k in range(6):  # episodes with rendered LiDAR: more than the two workers can take at once
        write_yaml(folder / f"s{k}.yaml", {"scene": str(tiny_scene_dir), "duration_s": 6.0, "seed": k})
    out = tmp_path / "eval"

    def interrupt(name: str, result: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(EvalInterrupted) as stopped:
        evaluate_scenarios(folder, "lidar-aeb", out, workers=2, on_done=interrupt)
    # when it returns, every worker has exited: nothing can be written any more
    assert multiprocessing.active_children() == []
    complete = sorted(p.parent.name for p in out.glob("*/metrics.json"))
    assert complete == sorted(stopped.value.finished) and 1 <= len(complete) < 6  # the last queued never ran
    assert not [p for p in out.rglob("*") if p.name.startswith(".")], "a stopped scenario left a partial file"
    assert not (out / "summary.json").exists()


# ------------------------------------------------------------------ viewer, videos and plots


def test_viewer_fits_the_screen_orders_panels_and_shows_state(
    tiny_scene_dir: Path, tiny_log_dir: Path, monkeypatch
) -> None:
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
    from neurodrive.app.replay import run_episode
    from neurodrive.viz.frames import compose_frame
    from neurodrive.viz.plots import plot_figure

    crash = {"id": "blocker", "asset": "vehicle_001", "trajectory": [[0.0, -2.0, -5.25, 0.0]]}
    path = write_yaml(
        tmp_path / "s.yaml",
        {"name": "blocked", "scene": str(tiny_scene_dir), "duration_s": 2.0, "actors": {"insert": [crash]}},
    )
    sim = Simulator.from_scenario(Scenario.load(path), path)
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


def test_ctrl_c_in_replay_and_eval_commands_print_one_line(tiny_log_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import neurodrive.app.evaluation as evaluation
    import neurodrive.app.replay as replay_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(replay_module, "replay", interrupted)
    monkeypatch.setattr(evaluation, "evaluate_scenarios", interrupted)
    scenario = write_yaml(tmp_path / "s.yaml", {"log": str(tiny_log_dir), "duration_s": 0.5})
    runner = CliRunner()
    for args, kept in (
        (["replay", str(scenario), "--out", str(tmp_path / "r")], "no partial result"),
        (["eval", str(tmp_path), "--out", str(tmp_path / "e")], "queued and running scenarios were stopped"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 130, result.output
        assert "interrupted:" in result.output and kept in result.output and "again" in result.output
