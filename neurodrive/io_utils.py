"""Atomic file writes: a reader never sees a half-written file, a crash never loses an old one."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def atomic_write_npz(path: str | Path, **arrays: Any) -> None:
    """Save arrays as compressed ``.npz`` (no pickles) atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


@contextmanager
def staged_directory(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and move it into place only when complete.

    An existing ``final`` is kept unless ``overwrite``; it is replaced only after the new one is
    fully written, so an interrupted run leaves the previous result intact.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists (pass --overwrite to replace it)")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    staging.chmod(0o777 & ~_UMASK)  # mkdtemp makes owner-only folders; give the usual permissions
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)


SAFE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"  # ids that become file names: no separators, no '..'


def is_safe_name(name: str) -> bool:
    """True when ``name`` can be used as one file name inside a folder (letters, digits, ``_ . -``,
    not starting with a dot or dash, so never ``..``, a path separator or an absolute path)."""
    import re

    return bool(re.fullmatch(SAFE_NAME_PATTERN, name)) and len(name) <= 200


def inside(folder: str | Path, name: str, suffix: str = "") -> Path:
    """``folder / (name + suffix)``, refusing names that are not plain file names or that resolve
    outside ``folder`` (a defence for every id that becomes a path)."""
    folder = Path(folder)
    if not is_safe_name(name):
        raise ValueError(f"'{name}' cannot be used as a file name (letters, digits, '_', '.', '-' only)")
    path = folder / f"{name}{suffix}"
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"'{name}' would write outside {folder}")
    return path


def existing_output(path: str | Path) -> bool:
    """True when ``path`` is a file or a folder with anything in it (an output that would be replaced)."""
    path = Path(path)
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def check_apart(output: str | Path, inputs: Iterable[tuple[str, str | Path]]) -> None:
    """One DataError when ``output`` is, holds or lies inside one of ``inputs`` ((what, path) pairs,
    e.g. ("the log", LOG)): writing there could replace or delete what is being read. Paths are
    compared resolved (symbolic links followed), before anything is written or deleted."""
    from neurodrive.errors import DataError

    out = Path(output).resolve()
    for what, source in inputs:
        src = Path(source).resolve()
        if out == src:
            problem = f"is {what} ({source})"
        elif src.is_relative_to(out):
            problem = f"holds {what} ({source})"
        elif out.is_relative_to(src):
            problem = f"lies inside {what} ({source})"
        else:
            continue
        raise DataError(output, None, f"{problem}: an output must not be, hold or lie inside an input")


def check_output(
    path: str | Path,
    overwrite: bool,
    kind: Literal["file", "folder"],
    inputs: Iterable[tuple[str, str | Path]] = (),
) -> None:
    """One error when ``path`` holds an earlier output and ``overwrite`` is off (existing outputs are
    kept unless the user asks for them to be replaced), when a file stands where a folder goes or
    the reverse, or when ``path`` is, holds or lies inside one of ``inputs`` (``check_apart``)."""
    from neurodrive.errors import DataError

    path = Path(path)
    check_apart(path, inputs)
    if kind == "folder" and path.exists() and not path.is_dir():
        raise DataError(path, None, "is a file, expected an output folder")
    if kind == "file" and path.is_dir():
        raise DataError(path, None, "is a folder, expected an output file name")
    if existing_output(path) and not overwrite:
        raise FileExistsError(f"{path} already exists (pass --overwrite to replace it)")


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """A YAML file holding a mapping (``what`` names it in errors: 'scenario', 'edits'); one
    DataError naming the file for a folder, a missing, binary or malformed file."""
    import yaml

    from neurodrive.errors import DataError

    path = Path(path)
    if path.is_dir():
        raise DataError(path, None, f"is a folder, expected a {what} YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise DataError(path, None, "missing file") from e
    except UnicodeDecodeError as e:
        raise DataError(path, None, f"not a {what} YAML file (not UTF-8 text)") from e
    except OSError as e:
        raise DataError(path, None, f"cannot be read: {e.strerror}") from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise DataError(path, None, f"not valid YAML: {e}".replace("\n", " ")) from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DataError(path, None, f"expected a mapping of {what} fields, got {type(raw).__name__}")
    return raw


def path_in_root(
    root: str | Path, value: object, source: str | Path, field: str, base: str | Path | None = None
) -> Path:
    """``base / value`` (``base`` defaults to ``root``) for a relative path read from a data file
    (``source``, ``field``); one DataError when ``value`` is not a non-empty string, is absolute, or
    resolves (``..``, symbolic links) outside ``root``: nothing outside a dataset is read or copied."""
    from neurodrive.errors import DataError

    if not isinstance(value, str) or not value.strip():
        raise DataError(source, field, f"expected a relative file path, got {value!r}")
    relative = Path(value)
    if relative.is_absolute():
        raise DataError(source, field, f"'{value}' is an absolute path; paths in a dataset are relative to {root}")
    path = Path(base if base is not None else root) / relative
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise DataError(source, field, f"'{value}' leads outside the dataset folder {root}")
    return path


_FINGERPRINTS: dict[tuple, str] = {}


def content_fingerprint(path: str | Path, skip: tuple[str, ...] = ()) -> str:
    """SHA-256 (hex, 16 characters) of a file's bytes, or of a folder's files (relative names and
    bytes, in sorted order; top-level entries named in ``skip`` and hidden ones left out). A result
    that depends on ``path`` is reused only while this fingerprint is unchanged. Cached per process
    on (path, size, modification time) of every file, so a file rewritten in place is hashed again."""
    import hashlib

    path = Path(path)
    if path.is_file():
        files = [path]
    else:
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
            and p.relative_to(path).parts[0] not in skip
        )
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (str(path.resolve()), skip, stats)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        for p in files:
            digest.update((p.name if p == path else p.relative_to(path).as_posix()).encode() + b"\0")
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            digest.update(b"\0")
        _FINGERPRINTS[key] = digest.hexdigest()[:16]
    return _FINGERPRINTS[key]
