from __future__ import annotations

from pathlib import Path

import pytest

from neurodrive.logs.io import load_log
from neurodrive.reconstruct.config import AppearanceConfig, ReconConfig
from neurodrive.reconstruct.pipeline import reconstruct
from neurodrive.sources.synthetic.generate import generate_log
from neurodrive.sources.synthetic.presets import get_preset


@pytest.fixture(scope="session")
def tiny_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated log shared by the tests (read-only: copy it before corrupting)."""
    out = tmp_path_factory.mktemp("logs") / "tiny"
    generate_log(get_preset("tiny"), out)
    return out


FAST_RECON = ReconConfig(appearance=AppearanceConfig(train_steps=40, checkpoint_every=10, batch_size=4096))


@pytest.fixture(scope="session")
def tiny_scene_dir(tiny_log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny log reconstructed with few training steps (read-only)."""
    out = tmp_path_factory.mktemp("scenes") / "tiny"
    reconstruct(load_log(tiny_log_dir), out, FAST_RECON)
    return out
