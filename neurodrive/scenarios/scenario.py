"""Closed-loop scenarios: a YAML file naming the scene, the start, the route and the actor edits.

Example (all lengths in m, angles in rad, times in s)::

    name: cut-in
    scene: ../scenes/town         # reconstructed scene, relative to this file (needed for sensors)
    log: null                     # default: the scene's source log
    start: {frame: 0}             # or {pose: [x, y, yaw], speed_mps: 8.0}
    route: {lanes: [main_east_1]} # or {goal: [x, y]}; default: the lane under the start pose
    duration_s: 6.0
    seed: 0
    actors:
      behaviour: log              # logged actors: "log" (replay) or "idm" (reactive, along their path)
      remove: [vehicle_000]
      repose: {vehicle_002: {offset: [0.0, 3.5, 0.0, 0.0]}}
      insert:
        - id: cutter
          asset: vehicle_001      # an actor of the scene, or a path to an asset .npz
          trajectory:             # timed waypoints [t, x, y, yaw] ...
            - [0.0, 0.0, -1.8, 0.0]
            - [1.5, 10.0, -5.25, 0.0]
          # ... or: behaviour: {lane: main_east_1, start_s_m: 30.0, speed_mps: 4.0, start_time_s: 0.0}
          jitter: {time_s: 0.3, x_m: 1.0, y_m: 0.2, speed_scale: 0.1}   # uniform half-ranges (seeded)
    sensors: {cameras: [front], lidar: true, camera_scale: 1.0}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from neurodrive.errors import DataError
from neurodrive.io_utils import read_yaml_mapping
from neurodrive.logs.schema import describe_validation_error
from neurodrive.render.edits import Repose

Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Start(_Schema):
    frame: int | None = Field(default=None, ge=0)
    pose: Annotated[list[Finite], Field(min_length=3, max_length=3)] | None = None  # x, y (rear axle), yaw
    speed_mps: NonNegative | None = None  # default: the logged speed at the start frame (0 with a pose)

    @model_validator(mode="after")
    def _one_of(self) -> Start:
        if self.frame is not None and self.pose is not None:
            raise ValueError("give either 'frame' or 'pose', not both")
        return self


class Route(_Schema):
    lanes: list[str] | None = Field(default=None, min_length=1)
    goal: Annotated[list[Finite], Field(min_length=2, max_length=2)] | None = None


class LaneBehaviour(_Schema):
    """Reactive IDM driving along a lane (or waypoints) from an arc length."""

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
    """Half-ranges of uniform noise drawn from the scenario seed (safety-critical variants)."""

    time_s: NonNegative = 0.0
    x_m: NonNegative = 0.0
    y_m: NonNegative = 0.0
    yaw_rad: NonNegative = 0.0
    speed_scale: Annotated[float, Field(ge=0, lt=1)] = 0.0


class InsertActor(_Schema):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    asset: str = Field(min_length=1)
    trajectory: list[Annotated[list[Finite], Field(min_length=4, max_length=4)]] | None = Field(
        default=None, min_length=1
    )
    behaviour: LaneBehaviour | None = None
    jitter: Jitter = Jitter()

    @model_validator(mode="after")
    def _one_of(self) -> InsertActor:
        if (self.trajectory is None) == (self.behaviour is None):
            raise ValueError("give exactly one of 'trajectory' or 'behaviour'")
        if self.trajectory is not None and any(b[0] <= a[0] for a, b in zip(self.trajectory, self.trajectory[1:])):
            raise ValueError("trajectory times must increase")
        return self


class Actors(_Schema):
    behaviour: Literal["log", "idm"] = "log"
    remove: list[str] = Field(default_factory=list)
    repose: dict[str, Repose] = Field(default_factory=dict)
    insert: list[InsertActor] = Field(default_factory=list)


class Sensors(_Schema):
    cameras: list[str] | None = None  # None: every camera of the log's rig
    lidar: bool = True
    camera_scale: Annotated[float, Field(gt=0, le=4)] = 1.0


class Scenario(_Schema):
    name: str = "scenario"
    scene: str | None = None
    log: str | None = None
    start: Start = Start(frame=0)
    route: Route = Route()
    duration_s: Annotated[float, Field(gt=0, le=600)] = 8.0
    seed: int = 0
    actors: Actors = Actors()
    sensors: Sensors = Sensors()
    base_dir: str = Field(default=".", exclude=True)  # folder that relative paths are read from

    @model_validator(mode="after")
    def _needs_data(self) -> Scenario:
        if self.scene is None and self.log is None:
            raise ValueError("give 'scene' (a reconstructed scene) or 'log'")
        return self

    def resolve_path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    @staticmethod
    def load(path: str | Path) -> Scenario:
        path = Path(path)
        raw = read_yaml_mapping(path, "scenario")
        if not raw:
            raise DataError(path, None, "empty scenario file")
        return Scenario.parse(raw, path)

    @staticmethod
    def parse(raw: dict, source: str | Path = "<scenario>", base_dir: str | Path | None = None) -> Scenario:
        base = base_dir if base_dir is not None else (Path(source).parent if str(source) != "<scenario>" else Path("."))
        try:
            return Scenario.model_validate({**raw, "base_dir": str(base)})
        except ValidationError as e:
            field, problem = describe_validation_error(e)
            raise DataError(source, field, problem) from e

    def dump_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)
