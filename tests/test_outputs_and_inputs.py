"""Outputs never destroy inputs, reused results are keyed on content, interruptions leave nothing
half-written, and option values out of range are one error naming the option."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodrive.app.cli import app
from neurodrive.app.evaluation import evaluate_scenarios
from neurodrive.app.replay import replay
from neurodrive.errors import DataError
from neurodrive.logs.io import load_log
from neurodrive.reconstruct.checkpoints import CheckpointStage
from neurodrive.reconstruct.pipeline import reconstruct
from neurodrive.scene.model import SceneModel
from tests.conftest import FAST_RECON
from tests.helpers import copy_log, write_yaml


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ an output is never an input


def test_commands_refuse_outputs_that_are_hold_or_lie_inside_their_inputs(
    tiny_log_dir: Path, tiny_scene_dir: Path, tmp_path: Path
) -> None:
    log = copy_log(tiny_log_dir, tmp_path / "log")
    scene = Path(shutil.copytree(tiny_scene_dir, tmp_path / "scene"))
    folder = tmp_path / "scenarios"
    folder.mkdir()
    scenario = folder / "scenario.yaml"
    scenario.write_text(f"# my notes, kept\nlog: {log}\nduration_s: 0.5\n")
    viewed = write_yaml(folder / "view.yaml", {"scene": str(scene), "log": str(log), "duration_s": 1.0})
    inputs = {name: _tree(p) for name, p in (("log", log), ("scene", scene), ("scenarios", folder))}
    runner = CliRunner()
    for args, problem in (
        (["export", str(log), "--out", str(log), "--overwrite"], "is the log"),
        (["export", str(log), "--out", str(tmp_path), "--overwrite"], "holds the log"),
        (["render", str(scene), "--log", str(log), "--out", str(scene), "--overwrite"], "is the scene"),
        (["render", str(scene), "--log", str(log), "--out", str(log / "renders")], "lies inside the log"),
        (
            ["evaluate-recon", str(scene), str(log), "--out", str(log / "log.json"), "--overwrite"],
            "lies inside the log",
        ),
        (["evaluate-recon", str(scene), str(log), "--figures", str(scene / "figs")], "lies inside the scene"),
        (["replay", str(scenario), "--no-video", "--out", str(folder), "--overwrite"], "holds the scenario"),
        (["replay", str(scenario), "--no-video", "--out", str(log / "replay")], "lies inside the log"),
        (["replay", str(scenario), "--no-video", "--rerun", str(log / "x.rrd")], "lies inside the log"),
        (["eval", str(folder), "--out", str(folder / "results")], "lies inside the scenario folder"),
        (["reconstruct", str(log), "--out", str(log / "scene"), "--overwrite"], "lies inside the log"),
        (["info", str(log), "--overlay", str(log / "overlays")], "lies inside the log"),
        (["info", str(log), "--rerun", str(log / "log.rrd")], "lies inside the log"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert problem in result.output and "must not be, hold or lie inside an input" in result.output, result.output
    from neurodrive.app.viewer import Viewer, headless

    headless()
    with pytest.raises(DataError, match="is the scenario"):
        Viewer(viewed, save_path=viewed)  # S in the viewer would have replaced it
    for name, p in (("log", log), ("scene", scene), ("scenarios", folder)):
        assert _tree(p) == inputs[name], f"the {name} changed"
    assert scenario.read_text().startswith("# my notes, kept")
    load_log(log)
    SceneModel.load(scene)


# ------------------------------------------------------------------ results keyed on content


def _move_first_track(log: Path, dx_m: float) -> None:
    with np.load(log / "tracks.npz") as data:
        poses, valid = data["poses"].copy(), data["valid"]
    poses[0, :, 0, 3] += dx_m
    np.savez_compressed(log / "tracks.npz", poses=poses, valid=valid)


def test_checkpoints_of_a_regenerated_log_with_the_same_name_are_not_reused(tiny_log_dir: Path, tmp_path: Path) -> None:
    log_dir = copy_log(tiny_log_dir, tmp_path / "log")
    folder = tmp_path / "scene" / "checkpoints"
    stage = CheckpointStage(folder, load_log(log_dir), FAST_RECON)
    stage.save_mesh("background_geometry", np.zeros((3, 3)), np.zeros((1, 3), np.int64))
    assert CheckpointStage(folder, load_log(log_dir), FAST_RECON).load_mesh("background_geometry") is not None
    _move_first_track(log_dir, 0.5)  # same name, same frame count, other content
    assert CheckpointStage(folder, load_log(log_dir), FAST_RECON).load_mesh("background_geometry") is None


def test_eval_runs_a_log_only_scenario_again_when_its_tracks_change(tiny_log_dir: Path, tmp_path: Path) -> None:
    log_dir = copy_log(tiny_log_dir, tmp_path / "log")
    folder = tmp_path / "scenarios"
    folder.mkdir()
    write_yaml(folder / "a.yaml", {"log": str(log_dir), "duration_s": 1.0})
    out = tmp_path / "eval"
    evaluate_scenarios(folder, "constant-velocity", out)
    assert evaluate_scenarios(folder, "constant-velocity", out)["reused"] == ["a"]
    _move_first_track(log_dir, 0.5)  # log.json unchanged
    again = evaluate_scenarios(folder, "constant-velocity", out)
    assert again["reused"] == [] and again["rerun_stale"] == ["a"]


# ------------------------------------------------------------------ scene and checkpoint files


def test_scene_and_checkpoint_files_of_the_wrong_kind_are_one_error(tiny_scene_dir: Path, tmp_path: Path) -> None:
    from neurodrive.reconstruct.appearance import _load_training_checkpoint

    scene = Path(shutil.copytree(tiny_scene_dir, tmp_path / "scene"))
    (scene / "appearance.safetensors").unlink()
    (scene / "appearance.safetensors").mkdir()
    with pytest.raises(DataError, match=r"appearance.safetensors: is a folder"):
        SceneModel.load(scene)
    meta = tmp_path / "appearance.json"
    for step in (-5, 2.5, "7", True):
        meta.write_text(json.dumps({"step": step}))
        with pytest.raises(DataError, match=r"appearance.json: field 'step': corrupt checkpoint.*whole number"):
            _load_training_checkpoint(tmp_path / "appearance.safetensors", meta, None, None, None, None, {})


# ------------------------------------------------------------------ option values


def test_lane_shift_far_outside_the_world_names_the_option(tiny_scene_dir: Path, tiny_log_dir: Path, tmp_path: Path):
    runner = CliRunner()
    for value in ("1e300", "1e6", "-150"):
        out = tmp_path / f"r{value}"
        args = ["render", str(tiny_scene_dir), "--log", str(tiny_log_dir), "--lane-shift", value, "--out", str(out)]
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "--lane-shift must lie within ±100 m" in result.output, result.output
        assert "Warning" not in result.output and not out.exists()


# ------------------------------------------------------------------ interruptions


def test_ctrl_c_after_the_episode_leaves_no_recording_video_or_partial_file(
    tiny_scene_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    pytest.importorskip("rerun")
    import neurodrive.app.replay as replay_module

    path = write_yaml(tmp_path / "s.yaml", {"scene": str(tiny_scene_dir), "duration_s": 0.5})
    out, rrd = tmp_path / "out", tmp_path / "ep.rrd"
    real_plot = replay_module.write_plot

    def interrupted_plot(*args, **kwargs):
        raise KeyboardInterrupt  # the episode has ended; metrics.json is not written yet

    monkeypatch.setattr(replay_module, "write_plot", interrupted_plot)
    with pytest.raises(KeyboardInterrupt):
        replay(path, "constant-velocity", out, video=True, rerun_path=rrd)
    assert list(out.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.yaml"]

    monkeypatch.setattr(replay_module, "write_plot", real_plot)
    replay(path, "constant-velocity", out, video=True, rerun_path=rrd)  # no "already exists"
    before = _tree(out) | {"ep.rrd": rrd.read_bytes()}
    monkeypatch.setattr(replay_module, "write_plot", interrupted_plot)
    with pytest.raises(KeyboardInterrupt):
        replay(path, "constant-velocity", out, video=True, rerun_path=rrd, overwrite=True)
    assert _tree(out) | {"ep.rrd": rrd.read_bytes()} == before  # the previous result, whole


def test_ctrl_c_in_import_export_and_info_rerun_prints_one_line(tiny_log_dir: Path, tmp_path: Path, monkeypatch):
    import neurodrive.interop.nerfstudio_export as nerfstudio_export
    import neurodrive.interop.rerun_recording as rerun_recording
    import neurodrive.sources as sources

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    class Interrupted:
        write_log = staticmethod(interrupted)

    monkeypatch.setattr(sources, "get_source", lambda name: Interrupted())
    monkeypatch.setattr(nerfstudio_export, "export_nerfstudio", interrupted)
    monkeypatch.setattr(rerun_recording, "record_log", interrupted)
    (tmp_path / "dataset").mkdir()
    runner = CliRunner()
    for args in (
        ["import", "kitti-raw", str(tmp_path / "dataset"), "--out", str(tmp_path / "log")],
        ["export", str(tiny_log_dir), "--out", str(tmp_path / "ns")],
        ["info", str(tiny_log_dir), "--rerun", str(tmp_path / "log.rrd")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 130, (args, result.output)
        lines = [ln for ln in result.output.splitlines() if "interrupted:" in ln]
        assert len(lines) == 1 and "written" in lines[0] and "Traceback" not in result.output, result.output


def test_reconstruct_refuses_an_output_inside_its_log_before_writing(tiny_log_dir: Path, tmp_path: Path) -> None:
    log_dir = copy_log(tiny_log_dir, tmp_path / "log")
    before = _tree(log_dir)
    with pytest.raises(DataError, match="lies inside the log"):
        reconstruct(load_log(log_dir), log_dir / "scene", FAST_RECON)
    assert _tree(log_dir) == before
