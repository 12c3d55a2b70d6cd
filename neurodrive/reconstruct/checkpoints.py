"""The output folder and the resumable checkpoints of a reconstruction run."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from neurodrive.errors import DataError
from neurodrive.io_utils import atomic_write_json, atomic_write_npz, check_apart, content_fingerprint
from neurodrive.logs.io import read_npz
from neurodrive.logs.model import DrivingLog
from neurodrive.reconstruct.config import ReconConfig

SCENE_FILES = (
    "scene.json",
    "background.npz",
    "appearance.safetensors",
    "actors",
)  # scene.json first: it marks completeness


def prepare_scene_folder(out: Path, overwrite: bool, restart: bool, log_root: Path) -> None:
    """Checks that ``out`` may receive a scene (and is not, does not hold and does not lie inside the
    log at ``log_root``) and clears what must go before anything is written."""
    check_apart(out, [("the log", log_root)])
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, expected a folder for the reconstructed scene")
    if (out / "scene.json").exists():
        if not overwrite:
            raise FileExistsError(f"{out} already holds a reconstructed scene (pass --overwrite to replace it)")
        for name in SCENE_FILES:  # invalidate first: scene.json goes before any array is touched
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    elif out.is_dir() and any(out.iterdir()) and not (out / "checkpoints").is_dir() and not overwrite:
        raise FileExistsError(
            f"{out} is not empty and holds no scene or unfinished reconstruction "
            "(choose another --out, or pass --overwrite)"
        )
    if restart:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)


class CheckpointStage:
    """Checkpoint files of one reconstruction run."""

    def __init__(self, folder: Path, log: DrivingLog, cfg: ReconConfig) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        # keyed on the log's content, not its name: a log regenerated under the same name and frame
        # count does not resume from the old one's geometry
        signature = {
            "log": log.name,
            "log_sha256": content_fingerprint(log.root),
            "num_frames": log.num_frames,
            "config": asdict(cfg),
        }
        sig_path = folder / "run.json"
        if sig_path.is_file():
            try:
                previous = json.loads(sig_path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise DataError(sig_path, None, f"{self.corrupt_hint} ({e})") from e
            if previous != signature:
                shutil.rmtree(folder)  # a different log or config: start over
                folder.mkdir(parents=True)
        atomic_write_json(sig_path, signature)

    @property
    def corrupt_hint(self) -> str:
        return f"corrupt checkpoint: delete {self.folder} (or run `neurodrive reconstruct --restart`) to start over"

    def load_mesh(self, name: str):
        path = self.folder / f"{name}.npz"
        if not path.is_file():
            return None
        try:
            a = read_npz(path, {"vertices": (None, 3), "triangles": (None, 3)})
        except DataError as e:
            raise DataError(path, e.field, f"{self.corrupt_hint} ({e.problem})") from e
        return a["vertices"], a["triangles"], a

    def save_mesh(self, name: str, vertices: np.ndarray, triangles: np.ndarray, **extra: np.ndarray) -> None:
        atomic_write_npz(self.folder / f"{name}.npz", vertices=vertices, triangles=triangles, **extra)
