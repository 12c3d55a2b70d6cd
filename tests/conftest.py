from __future__ import annotations

from pathlib import Path

import pytest

from neurodrive.scenarios.synthetic.generate import generate_log
from neurodrive.scenarios.synthetic.presets import get_preset


@pytest.fixture(scope="session")
def tiny_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated log shared by the tests (read-only: copy it before corrupting)."""
    out = tmp_path_factory.mktemp("logs") / "tiny"
    generate_log(get_preset("tiny"), out)
    return out
