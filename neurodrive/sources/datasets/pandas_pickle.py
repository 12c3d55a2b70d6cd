"""Reading pickled pandas DataFrames (PandaSet's ``.pkl.gz`` files) without pandas and without
running code from the file.

A pickle names the classes and functions it wants called; plain ``pickle.load`` (and
``pandas.read_pickle``) calls whatever it names, so a crafted file runs any command. Here an
unpickler admits only what a DataFrame of numeric and string columns is built from:

- numpy's array reconstruction (``numpy.core.multiarray._reconstruct`` for ``numpy.ndarray`` only),
  ``numpy.ndarray``, ``numpy.dtype`` and ``builtins.slice``;
- pandas' ``DataFrame``, ``BlockManager``, ``Index`` / ``RangeIndex`` / numeric index classes and
  ``_new_Index``, which are mapped to small stand-ins here that only keep the state they are given:
  no pandas code runs (pandas is not needed at all).

Anything else is refused with one :class:`DataError` naming the file and the class. The stand-ins'
state is then turned into columns: ``{name: 1-D numpy array}``.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from neurodrive.errors import DataError

MAX_PICKLE_BYTES = 2 << 30  # a decompressed file larger than this is refused before unpickling


class _Stand_in:
    """Keeps what the pickle hands to a pandas object (``NEWOBJ`` args, then ``BUILD`` state)."""

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _DataFrame(_Stand_in):
    pass


class _BlockManager(_Stand_in):
    pass


class _IndexClass:
    """Marks which pandas index class ``_new_Index`` was asked to build."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Index:
    def __init__(self, kind: _IndexClass, state: Any) -> None:
        self.kind, self.state = kind, state


def _new_index(kind: Any, state: Any) -> _Index:
    if not isinstance(kind, _IndexClass) or not isinstance(state, dict):
        raise _Refused("pandas index with an unexpected layout")
    return _Index(kind, state)


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise _Refused(f"array of type {subtype!r} (only numpy.ndarray)")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


_INDEX_CLASSES = {
    ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.range", "RangeIndex"),
    ("pandas.core.indexes.numeric", "Int64Index"),
    ("pandas.core.indexes.numeric", "UInt64Index"),
    ("pandas.core.indexes.numeric", "Float64Index"),
}
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("builtins", "slice"): slice,
    ("pandas.core.frame", "DataFrame"): _DataFrame,
    ("pandas.core.internals.managers", "BlockManager"): _BlockManager,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
}


class _Refused(pickle.UnpicklingError):
    """A class or layout outside what a DataFrame is built from."""


class _DataFrameUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if (module, name) in _INDEX_CLASSES:
            return _IndexClass(name)
        raise _Refused(
            f"refused to load '{module}.{name}': only the pandas and numpy classes of a DataFrame are admitted"
        )


def read_dataframe_pickle(path: Path) -> dict[str, np.ndarray]:
    """The columns of a (gzip-compressed) pickled pandas DataFrame: ``{name: 1-D array}`` in column
    order. One DataError naming ``path`` for a missing, truncated or corrupt file, a class outside the
    DataFrame's own, or a pickle that is not a DataFrame of that layout."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "missing file" if not path.exists() else "is a folder, expected a .pkl.gz file")
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            raw = f.read(MAX_PICKLE_BYTES + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(path, None, f"corrupt or truncated file: {e}") from e
    if len(raw) > MAX_PICKLE_BYTES:
        raise DataError(path, None, f"larger than {MAX_PICKLE_BYTES >> 30} GiB once decompressed")
    try:
        frame = _DataFrameUnpickler(io.BytesIO(raw)).load()
    except _Refused as e:
        raise DataError(path, None, f"not loaded: {e}") from e
    except Exception as e:  # noqa: BLE001 - whatever a damaged pickle makes the unpickler raise is one error
        raise DataError(path, None, f"corrupt or truncated pickle: {type(e).__name__}: {e}") from e
    return _columns(frame, path)


def _columns(frame: Any, path: Path) -> dict[str, np.ndarray]:
    """Columns from the stand-ins' state: the DataFrame's block manager holds its axes (columns,
    rows) and blocks (a 2-D array of some columns and the positions of those columns)."""
    if not isinstance(frame, _DataFrame) or not isinstance(frame.state, dict):
        raise DataError(path, None, f"expected a pickled pandas DataFrame, got {type(frame).__name__}")
    manager = frame.state.get("_data", frame.state.get("_mgr"))
    state = manager.state if isinstance(manager, _BlockManager) else None
    layout = (
        state[3].get("0.14.1") if isinstance(state, tuple) and len(state) == 4 and isinstance(state[3], dict) else None
    )
    if not isinstance(layout, dict) or not isinstance(layout.get("axes"), list) or len(layout["axes"]) != 2:
        raise DataError(path, "_data", "a DataFrame whose block layout is not pandas' (axes, blocks)")
    names = _index_values(layout["axes"][0], path, "columns")
    columns: dict[int, np.ndarray] = {}
    for b, block in enumerate(layout.get("blocks") or []):
        values, locs = (block.get("values"), block.get("mgr_locs")) if isinstance(block, dict) else (None, None)
        if not isinstance(values, np.ndarray) or values.ndim != 2:
            raise DataError(path, f"blocks[{b}].values", "expected a 2-D array")
        try:
            positions = [int(p) for p in (range(len(names))[locs] if isinstance(locs, slice) else np.ravel(locs))]
        except (TypeError, ValueError) as e:
            raise DataError(path, f"blocks[{b}].mgr_locs", f"expected column positions: {e}") from e
        if len(positions) != values.shape[0] or any(not 0 <= p < len(names) for p in positions):
            raise DataError(path, f"blocks[{b}].mgr_locs", "does not match the block's columns")
        for row, position in zip(values, positions):
            columns[position] = row
    if sorted(columns) != list(range(len(names))) or len({len(c) for c in columns.values()}) > 1:
        raise DataError(path, "blocks", "columns missing or of different lengths")
    return {str(names[i]): columns[i] for i in range(len(names))}


def _index_values(index: Any, path: Path, field: str) -> list:
    if not isinstance(index, _Index):
        raise DataError(path, field, "expected a pandas Index")
    if index.kind.name == "RangeIndex":
        return list(range(index.state.get("start", 0), index.state.get("stop", 0), index.state.get("step", 1)))
    data = index.state.get("data")
    if not isinstance(data, np.ndarray) or data.ndim != 1:
        raise DataError(path, field, "expected a 1-D array of labels")
    return data.tolist()
