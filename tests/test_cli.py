"""The command line: generate and info, including their error messages."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from neurodrive.app.cli import app

runner = CliRunner()


def test_generate_then_info(tmp_path: Path) -> None:
    out = tmp_path / "log"
    result = runner.invoke(app, ["generate", "--preset", "tiny", "--frames", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "camera" / "front" / "000001.png").is_file()
    result = runner.invoke(app, ["info", str(out)])
    assert result.exit_code == 0, result.output
    assert "32 beams x 512 azimuths" in result.output
    # a second run refuses to clobber the log
    result = runner.invoke(app, ["generate", "--preset", "tiny", "--frames", "2", "--out", str(out)])
    assert result.exit_code == 2 and "already exists" in result.output


def test_bad_arguments_give_one_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["generate", "--preset", "metropolis", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown preset 'metropolis'" in result.output
    result = runner.invoke(app, ["generate", "--preset", "tiny", "--frames", "0", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "num_frames must be positive" in result.output
    assert not (tmp_path / "x").exists()


def test_info_names_file_and_field_of_a_bad_log(tiny_log_dir: Path, tmp_path: Path) -> None:
    import shutil

    log = tmp_path / "log"
    shutil.copytree(tiny_log_dir, log)
    meta = json.loads((log / "log.json").read_text())
    meta["rig"]["lidars"][0]["azimuth_bins"] = -1
    (log / "log.json").write_text(json.dumps(meta))
    result = runner.invoke(app, ["info", str(log)])
    assert result.exit_code == 2
    assert "log.json: field 'rig.lidars[0].azimuth_bins'" in " ".join(result.output.split())
