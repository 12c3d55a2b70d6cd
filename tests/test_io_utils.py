"""Atomic writes keep old results when a write fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurodrive.io_utils import atomic_write_npz, atomic_write_text, staged_directory


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    atomic_write_npz(tmp_path / "b.npz", x=np.arange(3))
    with np.load(tmp_path / "b.npz") as d:
        np.testing.assert_array_equal(d["x"], np.arange(3))


def test_staged_directory_keeps_previous_result_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with staged_directory(final) as d:
        (d / "f.txt").write_text("v1")
    with pytest.raises(RuntimeError):
        with staged_directory(final, overwrite=True) as d:
            (d / "f.txt").write_text("v2 partial")
            raise RuntimeError("killed")
    assert (final / "f.txt").read_text() == "v1"
    with staged_directory(final, overwrite=True) as d:
        (d / "f.txt").write_text("v2")
    assert (final / "f.txt").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
