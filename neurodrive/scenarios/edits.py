"""Actor edits: one model for edits files (``neurodrive render --edit``), a scenario's ``actors:``
block and the simulator's live edits (viewer).

Poses are ``[x, y, yaw]`` or ``[x, y, z, yaw]`` (world frame, m and rad; ``z`` is the box centre;
without it the actor stands on the ground at the ego's height at the start). Trajectories are timed
waypoints ``[t, x, y, yaw]`` or ``[t, x, y, z, yaw]`` with ``t`` in seconds from the start (of the
episode in a scenario; of the log's first frame for ``neurodrive render``), linearly interpolated,
held before the first and continued at constant velocity after the last::

    behaviour: log                # logged actors: "log" (replay) or "idm" (reactive; simulator only)
    remove: [vehicle_003]
    repose:
      vehicle_000: {offset: [0.0, 3.5, 0.0, 0.0]}          # x, y, z (m), yaw (rad) in the box frame
      vehicle_002: {trajectory: [[0.0, 10.0, -5.25, 0.0], [2.0, 30.0, -5.25, 0.0]]}
    insert:
      - {id: parked, asset: vehicle_006, pose: [30.0, -8.2, 0.0]}
      - id: cutter
        asset: ../other_scene/actors/vehicle_001.npz   # an actor of the scene, or an asset .npz
        trajectory: [[0.0, 0.0, -1.8, 0.0], [1.5, 10.0, -5.25, 0.0]]
        # ... or: behaviour: {lane: main_east_1, start_s_m: 30.0, speed_mps: 4.0}  (simulator only)
        jitter: {time_s: 0.3, x_m: 1.0, y_m: 0.2, speed_scale: 0.1}  # uniform half-ranges (seeded)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from neurodrive.errors import DataError
from neurodrive.io_utils import read_yaml_mapping
from neurodrive.logs.schema import describe_validation_error

Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Pose = Annotated[list[Finite], Field(min_length=3, max_length=4)]  # [x, y, yaw] or [x, y, z, yaw]
Waypoint = Annotated[list[Finite], Field(min_length=4, max_length=5)]  # [t, x, y, yaw] or [t, x, y, z, yaw]
Offset = Annotated[list[Finite], Field(min_length=4, max_length=4)]  # [x, y, z, yaw] in the box frame


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_waypoints(trajectory: list[list[float]] | None) -> None:
    if trajectory is None:
        return
    if len({len(w) for w in trajectory}) > 1:
        raise ValueError("trajectory rows must all be [t, x, y, yaw] or all be [t, x, y, z, yaw]")
    if any(b[0] <= a[0] for a, b in zip(trajectory, trajectory[1:])):
        raise ValueError("trajectory times must increase")


class LaneBehaviour(_Schema):
    """Reactive IDM driving along a lane (or waypoints) from an arc length (simulator only)."""

    lane: str | None = None
    waypoints: list[Annotated[list[Finite], Field(min_length=2, max_length=2)]] | None = Field(
        default=None, min_length=2
    )
    start_s_m: Finite = 0.0
    speed_mps: NonNegative = 8.0
    start_time_s: NonNegative = 0.0

    @model_validator(mode="after")
    def _one_of(self) -> LaneBehaviour:
        if (self.lane is None) == (self.waypoints is None):
            raise ValueError("give exactly one of 'lane' or 'waypoints'")
        return self


class Jitter(_Schema):
    """Half-ranges of uniform noise drawn from the seed (safety-critical variants)."""

    time_s: NonNegative = 0.0
    x_m: NonNegative = 0.0
    y_m: NonNegative = 0.0
    yaw_rad: NonNegative = 0.0
    speed_scale: Annotated[float, Field(ge=0, lt=1)] = 0.0


class Repose(_Schema):
    """A logged actor moved: a constant offset in its box frame, or a new timed trajectory."""

    offset: Offset | None = None
    trajectory: list[Waypoint] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_of(self) -> Repose:
        if (self.offset is None) == (self.trajectory is None):
            raise ValueError("give exactly one of 'offset' or 'trajectory'")
        _check_waypoints(self.trajectory)
        return self


class InsertActor(_Schema):
    """A new actor from an asset: standing at a pose, along a timed trajectory, or driving a lane."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    asset: str = Field(min_length=1)  # an actor id of the scene, or a path to an asset .npz
    pose: Pose | None = None
    trajectory: list[Waypoint] | None = Field(default=None, min_length=1)
    behaviour: LaneBehaviour | None = None
    jitter: Jitter = Jitter()

    @model_validator(mode="after")
    def _one_of(self) -> InsertActor:
        if sum(v is not None for v in (self.pose, self.trajectory, self.behaviour)) != 1:
            raise ValueError("give exactly one of 'pose', 'trajectory' or 'behaviour'")
        _check_waypoints(self.trajectory)
        return self

    @property
    def waypoints(self) -> list[list[float]] | None:
        """The scripted path as timed waypoints (a pose is one waypoint at t = 0); None for a behaviour."""
        return [[0.0, *self.pose]] if self.pose is not None else self.trajectory


class ActorEdits(_Schema):
    behaviour: Literal["log", "idm"] = "log"
    remove: list[str] = Field(default_factory=list)
    repose: dict[str, Repose] = Field(default_factory=dict)
    insert: list[InsertActor] = Field(default_factory=list)

    @staticmethod
    def load(path: str | Path) -> ActorEdits:
        """An edits file (YAML) validated; errors name the file and field."""
        path = Path(path)
        raw = read_yaml_mapping(path, "edits")
        try:
            return ActorEdits.model_validate(raw)
        except ValidationError as e:
            field, problem = describe_validation_error(e)
            raise DataError(path, field, problem) from e

    # the viewer's live edits, each a new ActorEdits (the simulator applies it)

    def removing(self, actor_id: str) -> ActorEdits:
        """Without ``actor_id``: an inserted actor's insert dropped, a logged one removed (and un-posed)."""
        inserted = [i for i in self.insert if i.id != actor_id]
        if len(inserted) != len(self.insert):
            return self.model_copy(update={"insert": inserted})
        return self.model_copy(
            update={
                "remove": [*self.remove, actor_id],
                "repose": {k: v for k, v in self.repose.items() if k != actor_id},
            }
        )

    def moving(self, actor_id: str, dx_m: float, dy_m: float, dyaw_rad: float, yaw_rad: float) -> ActorEdits:
        """``actor_id``'s whole path shifted by a world-frame offset (m, rad): an inserted actor's
        waypoints or lane start, a logged actor's re-pose offset (box frame; ``yaw_rad``: its heading now)."""
        ins = next((i for i in self.insert if i.id == actor_id), None)
        if ins is None:
            c, s = float(np.cos(yaw_rad)), float(np.sin(yaw_rad))  # the offset is in the box frame
            old = self.repose.get(actor_id)
            base = old.offset if old is not None and old.offset is not None else [0.0, 0.0, 0.0, 0.0]
            offset = [base[0] + c * dx_m + s * dy_m, base[1] - s * dx_m + c * dy_m, base[2], base[3] + dyaw_rad]
            return self.model_copy(update={"repose": {**self.repose, actor_id: Repose(offset=offset)}})
        if ins.waypoints is not None:
            key = "pose" if ins.pose is not None else "trajectory"
            rows = [ins.pose] if ins.pose is not None else ins.trajectory
            start = 0 if ins.pose is not None else 1  # waypoints lead with their time
            shifted = [
                [*r[:start], r[start] + dx_m, r[start + 1] + dy_m, *r[start + 2 : -1], r[-1] + dyaw_rad] for r in rows
            ]
            new = ins.model_copy(update={key: shifted[0] if ins.pose is not None else shifted})
        else:
            lane = ins.behaviour
            new = ins.model_copy(update={"behaviour": lane.model_copy(update={"start_s_m": lane.start_s_m + dx_m})})
        return self.model_copy(update={"insert": [new if i.id == actor_id else i for i in self.insert]})

    def inserting(self, ins: InsertActor) -> ActorEdits:
        return self.model_copy(update={"insert": [*self.insert, ins]})
