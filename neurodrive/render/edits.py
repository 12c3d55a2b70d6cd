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
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from neurodrive.errors import DataError
from neurodrive.geometry import pose_xyz_yaw
from neurodrive.render.scene_model import ActorAsset, SceneModel
from neurodrive.scenarios.log_schema import describe_validation_error

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
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError as e:
            raise DataError(path, None, "missing file") from e
        except yaml.YAMLError as e:
            raise DataError(path, None, f"not valid YAML: {e}".replace("\n", " ")) from e
        try:
            return SceneEdits.model_validate(raw)
        except ValidationError as e:
            field, problem = describe_validation_error(e)
            raise DataError(path, field, problem) from e


def _pose(p: list[float]) -> np.ndarray:
    return pose_xyz_yaw(*p)


class EditedScene:
    """A scene model with edits applied; gives the actor poses to render at each frame."""

    def __init__(self, model: SceneModel, edits: SceneEdits, source: str = "edits") -> None:
        known = set(model.actors)
        for i, aid in enumerate(edits.remove):
            if aid not in known:
                raise DataError(source, f"remove[{i}]", f"unknown actor id '{aid}'")
        for aid in edits.repose:
            if aid not in known:
                raise DataError(source, f"repose.{aid}", f"unknown actor id '{aid}'")
        assets = dict(model.actors)
        for i, ins in enumerate(edits.insert):
            if ins.id in assets:
                raise DataError(source, f"insert[{i}].id", f"actor id '{ins.id}' already exists")
            if ins.asset in model.actors:
                base = model.actors[ins.asset]
            elif Path(ins.asset).suffix == ".npz":
                base = ActorAsset.load(ins.asset)
            else:
                raise DataError(source, f"insert[{i}].asset", f"'{ins.asset}' is neither an actor of the scene nor an asset .npz")
            assets[ins.id] = ActorAsset(ins.id, base.category, base.size_m, base.mesh, source=base.source or ins.asset)
        self.model = SceneModel(model.background, assets, model.decoder, model.sky, model.lidar_intensity, model.meta)
        self.edits = edits

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
