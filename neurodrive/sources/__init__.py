"""Where logs come from: the synthetic town generator, the ScenarioNet import (sensor-free), and
dataset importers. A source writes a log folder in the format of docs/log_format.md.

Third-party sources register a factory (returning a ``LogSource``) under the entry-point group
``neurodrive.sources``, as agents do under ``neurodrive.agents``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol


class LogSource(Protocol):
    """Writes a log folder from some input (a dataset folder, a seed ...)."""

    name: str
    description: str

    def write_log(self, src: Path | None, out: Path, **options: Any) -> Path:
        """Writes the log to ``out`` (atomically: nothing half-written) and returns it."""
        ...


class SyntheticTown:
    """The procedural town (options: ``preset``, ``seed``, ``frames``, ``overwrite``); no input."""

    name = "synthetic"
    description = "procedurally generated town log with cameras, LiDAR, tracks and map"

    def write_log(self, src: Path | None, out: Path, **options: Any) -> Path:
        from neurodrive.sources.synthetic.generate import generate_log
        from neurodrive.sources.synthetic.presets import get_preset

        if src is not None:
            raise ValueError("the synthetic source takes no input (give --preset / --seed instead)")
        cfg = get_preset(
            options.get("preset", "town-small"), seed=options.get("seed"), num_frames=options.get("frames")
        )
        return generate_log(cfg, out, overwrite=bool(options.get("overwrite", False)))


def _dataset(module: str) -> Callable[[], LogSource]:
    """A dataset importer (``SOURCE`` of its module in ``sources/datasets/``), imported only when used."""

    def make() -> LogSource:
        from importlib import import_module

        return import_module(f"neurodrive.sources.datasets.{module}").SOURCE

    return make


BUILTIN_SOURCES: dict[str, Callable[[], LogSource]] = {
    SyntheticTown.name: SyntheticTown,
    "kitti-raw": _dataset("kitti_raw"),
    "nuscenes": _dataset("nuscenes"),
    "av2": _dataset("av2"),
    "dgp": _dataset("dgp"),
    "pandaset": _dataset("pandaset"),
}


def available_sources() -> dict[str, Callable[[], LogSource]]:
    """Built-in sources and those registered under the entry-point group ``neurodrive.sources``."""
    found: dict[str, Callable[[], LogSource]] = {
        ep.name: _plugin_factory(ep.load) for ep in entry_points(group="neurodrive.sources")
    }
    return {**found, **BUILTIN_SOURCES}


def get_source(name: str) -> LogSource:
    sources = available_sources()
    if name not in sources:
        raise KeyError(f"unknown source '{name}' (available: {', '.join(sorted(sources))})")
    return sources[name]()


def _plugin_factory(load: Callable[[], Callable[[], LogSource]]) -> Callable[[], LogSource]:
    return lambda: load()()


__all__ = ["LogSource", "SyntheticTown", "available_sources", "get_source"]
