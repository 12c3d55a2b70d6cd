"""Actor editing: remove actors, re-pose them, insert actor assets (from this or another scene).

Edits never touch the background: actors are separate meshes ray-cast in the same scene at their
(edited) poses, nearest hit wins, so moving one never rebuilds the background's acceleration
structure. What a removed actor hid is rendered from the background reconstruction (the ground
under a parked actor is closed by a patch at the surrounding ground height and textured from the
nearest observed ground; see docs/design_reconstruction.md).

An edits file (YAML)::

    remove: [vehicle_003, pedestrian_001]
    repose:
      vehicle_000: {offset: [0.0, 3.5, 0.0, 0.0]}            # x, y, z (m), yaw (rad) in the box frame
      vehicle_002: {trajectory: [[10.0, -5.25, 0.75, 0.0], ...]}  # world x, y, z, yaw per frame
    insert:
      - {id: parked_extra, asset: vehicle_006, pose: [30.0, -8.2, 0.74, 0.0]}
      - {id: cutter, asset: /path/to/other_scene/actors/vehicle_001.npz, trajectory: [[...], ...]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from neurodrive.errors import DataError
from neurodrive.geometry import pose_xyz_yaw
from neurodrive.io_utils import read_yaml_mapping
from neurodrive.logs.model import WORLD_MARGIN_M
from neurodrive.logs.schema import describe_validation_error
from neurodrive.scene.model import SceneModel
from neurodrive.scene.surface import resolve_asset

PoseXYZYaw = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=4, max_length=4)]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _PoseOrTrajectory(_Schema):
    """One fixed pose (field named by ``_single``) or a trajectory: exactly one of them."""

    _single: str = "pose"
    trajectory: list[PoseXYZYaw] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_of(self) -> _PoseOrTrajectory:
        if (getattr(self, self._single) is None) == (self.trajectory is None):
            raise ValueError(f"give exactly one of '{self._single}' or 'trajectory'")
        return self


class Repose(_PoseOrTrajectory):
    _single: str = "offset"
    offset: PoseXYZYaw | None = None


class Insert(_PoseOrTrajectory):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    asset: str = Field(min_length=1)  # an actor id of the scene, or a path to an asset .npz
    pose: PoseXYZYaw | None = None


class SceneEdits(_Schema):
    remove: list[str] = Field(default_factory=list)
    repose: dict[str, Repose] = Field(default_factory=dict)
    insert: list[Insert] = Field(default_factory=list)

    @staticmethod
    def load(path: str | Path) -> SceneEdits:
        path = Path(path)
        raw = read_yaml_mapping(path, "edits")
        try:
            return SceneEdits.model_validate(raw)
        except ValidationError as e:
            field, problem = describe_validation_error(e)
            raise DataError(path, field, problem) from e


def _check_edit_extent(model: SceneModel, edits: SceneEdits, source: str) -> None:
    v = model.background.vertices
    lo, hi = (v.min(axis=0), v.max(axis=0)) if len(v) else (np.zeros(3), np.zeros(3))
    lo, hi = lo - WORLD_MARGIN_M, hi + WORLD_MARGIN_M
    where = (
        f"outside the scene (x in [{lo[0]:.0f}, {hi[0]:.0f}], y in [{lo[1]:.0f}, {hi[1]:.0f}], "
        f"z in [{lo[2]:.0f}, {hi[2]:.0f}] m, its extent plus {WORLD_MARGIN_M:.0f} m)"
    )
    poses: list[tuple[str, list[float]]] = []
    for aid, rep in edits.repose.items():
        if rep.offset is not None:
            if max(abs(c) for c in rep.offset[:3]) > WORLD_MARGIN_M:
                raise DataError(
                    source,
                    f"repose.{aid}.offset",
                    f"offsets are limited to {WORLD_MARGIN_M:.0f} m, got {rep.offset[:3]}",
                )
        else:
            poses += [(f"repose.{aid}.trajectory[{k}]", p) for k, p in enumerate(rep.trajectory)]
    for i, ins in enumerate(edits.insert):
        if ins.pose is not None:
            poses.append((f"insert[{i}].pose", ins.pose))
        else:
            poses += [(f"insert[{i}].trajectory[{k}]", p) for k, p in enumerate(ins.trajectory)]
    for field, p in poses:
        if np.any(np.asarray(p[:3]) < lo) or np.any(np.asarray(p[:3]) > hi):
            raise DataError(source, field, f"position {p[:3]} lies {where}")


def _pose(p: list[float]) -> np.ndarray:
    return pose_xyz_yaw(*p)


class EditedScene:
    """A scene model with edits applied; gives the actor poses to render at each frame.

    Relative asset paths resolve against ``base_dir`` (the edits file's folder). Poses must lie
    near the scene (within WORLD_MARGIN_M of its extent) and offsets be at most WORLD_MARGIN_M:
    an actor sent 1e6 m away would silently vanish from every view.
    """

    def __init__(
        self, model: SceneModel, edits: SceneEdits, source: str = "edits", base_dir: str | Path | None = None
    ) -> None:
        known = set(model.actors)
        for i, aid in enumerate(edits.remove):
            if aid not in known:
                raise DataError(source, f"remove[{i}]", f"unknown actor id '{aid}'")
        for aid in edits.repose:
            if aid not in known:
                raise DataError(source, f"repose.{aid}", f"unknown actor id '{aid}'")
        _check_edit_extent(model, edits, source)
        assets = dict(model.actors)
        for i, ins in enumerate(edits.insert):
            if ins.id in assets:
                raise DataError(source, f"insert[{i}].id", f"actor id '{ins.id}' already exists")
            base = resolve_asset(ins.asset, model.actors, base_dir)
            if base is None:
                raise DataError(
                    source, f"insert[{i}].asset", f"'{ins.asset}' is neither an actor of the scene nor an asset .npz"
                )
            assets[ins.id] = base.renamed(ins.id, ins.asset)
        self.model = model.with_actors(assets)
        self.edits = edits

    @staticmethod
    def load(model: SceneModel, path: str | Path) -> EditedScene:
        """The edits of a YAML file applied to ``model`` (asset paths relative to the file)."""
        return EditedScene(model, SceneEdits.load(path), str(path), Path(path).parent)

    def actor_poses(self, logged: dict[str, np.ndarray], frame: int) -> dict[str, np.ndarray]:
        """Poses at ``frame`` given the logged poses of the actors valid there."""
        poses = {a: p for a, p in logged.items() if a in self.model.actors and a not in self.edits.remove}
        for aid, rep in self.edits.repose.items():
            if rep.trajectory is not None:
                poses[aid] = _pose(rep.trajectory[min(frame, len(rep.trajectory) - 1)])
            elif aid in poses:
                poses[aid] = poses[aid] @ _pose(rep.offset)
        for ins in self.edits.insert:
            traj = ins.trajectory if ins.trajectory is not None else [ins.pose]
            poses[ins.id] = _pose(traj[min(frame, len(traj) - 1)])
        return poses
