"""PandaSet's pickled DataFrames read without pandas and without running code from the file."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from neurodrive.errors import DataError
from neurodrive.sources.datasets.pandas_pickle import read_dataframe_pickle
from tests.test_importers import REALDATA, need

PANDASET = REALDATA / "pandaset" / "002"


def test_lidar_and_cuboid_frames_of_the_sample_read_as_columns() -> None:
    lidar = read_dataframe_pickle(need(PANDASET / "lidar" / "00.pkl.gz"))
    assert list(lidar) == ["x", "y", "z", "i", "t", "d"]
    assert len({len(c) for c in lidar.values()}) == 1 and len(lidar["x"]) > 100_000
    assert set(np.unique(lidar["d"])) == {0, 1}  # Pandar64 and PandarGT in one file
    assert all(np.all(np.isfinite(lidar[k])) for k in "xyzit")
    cuboids = read_dataframe_pickle(need(PANDASET / "annotations" / "cuboids" / "00.pkl.gz"))
    assert {"uuid", "label", "yaw", "stationary", "position.x", "dimensions.z", "cuboids.sensor_id"} <= set(cuboids)
    assert all(isinstance(u, str) and len(u) == 36 for u in cuboids["uuid"])
    assert cuboids["stationary"].dtype == bool and np.all(cuboids["dimensions.x"] > 0)


def test_matches_pandas_where_it_is_installed() -> None:
    pd = pytest.importorskip(
        "pandas", reason="pandas not installed: optional cross-check (neurodrive does not need it)"
    )
    path = need(PANDASET / "annotations" / "cuboids" / "03.pkl.gz")
    frame, mine = pd.read_pickle(path), read_dataframe_pickle(path)  # the sample's own file, trusted here
    assert list(frame.columns) == list(mine)
    for name in frame.columns:
        np.testing.assert_array_equal(frame[name].to_numpy(dtype=object), mine[name].astype(object))


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _BuildsAnotherArray(np.ndarray):
    pass


def _write(path: Path, obj) -> Path:
    path.write_bytes(gzip.compress(pickle.dumps(obj, protocol=3)))
    return path


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    crafted = _write(tmp_path / "00.pkl.gz", {"x": _RunsACommand(marker)})
    with pytest.raises(DataError, match=r"00.pkl.gz: not loaded: refused to load '(posix|os|nt)\.system'"):
        read_dataframe_pickle(crafted)
    assert not marker.exists()
    subclass = _write(tmp_path / "01.pkl.gz", np.zeros(3).view(_BuildsAnotherArray))
    with pytest.raises(DataError, match="refused to load 'tests.test_pandas_pickle._BuildsAnotherArray'"):
        read_dataframe_pickle(subclass)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00.pkl.gz", "01.pkl.gz"]


def test_truncated_wrong_shape_and_missing_files_are_one_error(tmp_path: Path) -> None:
    data = need(PANDASET / "lidar" / "01.pkl.gz").read_bytes()
    (tmp_path / "cut.pkl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut.pkl.gz: corrupt or truncated"):
        read_dataframe_pickle(tmp_path / "cut.pkl.gz")
    raw = gzip.decompress(data)
    (tmp_path / "cut_pickle.pkl.gz").write_bytes(gzip.compress(raw[: len(raw) - 200]))
    with pytest.raises(DataError, match=r"cut_pickle.pkl.gz: corrupt or truncated pickle"):
        read_dataframe_pickle(tmp_path / "cut_pickle.pkl.gz")
    with pytest.raises(DataError, match=r"list.pkl.gz: expected a pickled pandas DataFrame, got list"):
        read_dataframe_pickle(_write(tmp_path / "list.pkl.gz", [1.0, 2.0]))
    with pytest.raises(DataError, match=r"missing.pkl.gz: missing file"):
        read_dataframe_pickle(tmp_path / "missing.pkl.gz")
    (tmp_path / "folder.pkl.gz").mkdir()
    with pytest.raises(DataError, match=r"folder.pkl.gz: is a folder"):
        read_dataframe_pickle(tmp_path / "folder.pkl.gz")
