"""The ground-truth world of a synthetic log: triangle meshes with per-triangle materials.

Saved beside the log in ``ground_truth/`` (world.npz + world.json) so exact ground truth can be
rendered from any pose later (evaluation of novel views, e.g. a 2 m lane shift).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from neurodrive.errors import DataError
from neurodrive.io_utils import atomic_write_json, atomic_write_npz


@dataclass(frozen=True)
class MeshPart:
    """A triangle mesh whose triangles each carry a material index."""

    vertices: np.ndarray  # (V, 3) float32, metres
    triangles: np.ndarray  # (F, 3) int32
    material_ids: np.ndarray  # (F,) int32 into World.materials

    @staticmethod
    def empty() -> MeshPart:
        return MeshPart(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros((0,), np.int32))

    @staticmethod
    def concatenate(parts: list[MeshPart]) -> MeshPart:
        parts = [p for p in parts if len(p.triangles)]
        if not parts:
            return MeshPart.empty()
        offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
        return MeshPart(
            np.concatenate([p.vertices for p in parts]).astype(np.float32),
            np.concatenate([p.triangles + o for p, o in zip(parts, offsets)]).astype(np.int32),
            np.concatenate([p.material_ids for p in parts]).astype(np.int32),
        )

    def transformed(self, pose: np.ndarray) -> MeshPart:
        v = self.vertices.astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]
        return MeshPart(v.astype(np.float32), self.triangles, self.material_ids)


@dataclass(frozen=True)
class Material:
    """A procedural material. ``kind`` selects the shader; ``params`` are its numbers."""

    kind: str
    color: tuple[float, float, float]  # linear RGB albedo
    params: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RoadSpec:
    """A straight road along the world ``axis`` ('x' or 'y') centred at ``center_m``."""

    axis: str
    center_m: float
    lanes_per_direction: int
    lane_width_m: float
    parking_width_m: float
    start_m: float
    end_m: float

    @property
    def half_width_m(self) -> float:
        return self.lanes_per_direction * self.lane_width_m + self.parking_width_m


@dataclass(frozen=True)
class Lighting:
    sun_direction: tuple[float, float, float]  # unit vector towards the sun (world)
    sun_radiance: float
    sky_radiance: float
    seed: int


@dataclass(frozen=True)
class World:
    static: MeshPart
    actor_meshes: dict[str, MeshPart]  # actor id -> mesh in its box frame
    materials: tuple[Material, ...]
    roads: tuple[RoadSpec, ...]
    lighting: Lighting

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        arrays = {
            "static_vertices": self.static.vertices,
            "static_triangles": self.static.triangles,
            "static_material_ids": self.static.material_ids,
        }
        ids = list(self.actor_meshes)
        for i, aid in enumerate(ids):
            m = self.actor_meshes[aid]
            arrays |= {
                f"actor{i}_vertices": m.vertices,
                f"actor{i}_triangles": m.triangles,
                f"actor{i}_material_ids": m.material_ids,
            }
        atomic_write_npz(folder / "world.npz", **arrays)
        atomic_write_json(
            folder / "world.json",
            {
                "actor_ids": ids,
                "materials": [asdict(m) for m in self.materials],
                "roads": [asdict(r) for r in self.roads],
                "lighting": asdict(self.lighting),
            },
        )

    @staticmethod
    def load(folder: str | Path) -> World:
        import json

        folder = Path(folder)
        meta_path, npz_path = folder / "world.json", folder / "world.npz"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(meta_path, None, f"cannot read ground-truth world: {e}") from e
        from neurodrive.logs.io import read_npz

        arrays = read_npz(npz_path, {})

        def part(prefix: str) -> MeshPart:
            try:
                return MeshPart(
                    arrays[f"{prefix}_vertices"], arrays[f"{prefix}_triangles"], arrays[f"{prefix}_material_ids"]
                )
            except KeyError as e:
                raise DataError(npz_path, str(e), "missing array") from e

        try:
            materials = tuple(Material(m["kind"], tuple(m["color"]), dict(m["params"])) for m in meta["materials"])
            roads = tuple(RoadSpec(**r) for r in meta["roads"])
            lighting = Lighting(**{**meta["lighting"], "sun_direction": tuple(meta["lighting"]["sun_direction"])})
            actor_ids = list(meta["actor_ids"])
        except (KeyError, TypeError) as e:
            raise DataError(meta_path, str(e), "missing or malformed entry") from e
        return World(
            static=part("static"),
            actor_meshes={aid: part(f"actor{i}") for i, aid in enumerate(actor_ids)},
            materials=materials,
            roads=roads,
            lighting=lighting,
        )
