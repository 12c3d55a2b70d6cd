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
      insert:                     # the actor-edit model of neurodrive.scenarios.edits (as edits files)
        - id: cutter
          asset: vehicle_001      # an actor of the scene, or a path to an asset .npz
          trajectory:             # timed waypoints [t, x, y, yaw] (or [t, x, y, z, yaw]) ...
            - [0.0, 0.0, -1.8, 0.0]
            - [1.5, 10.0, -5.25, 0.0]
          # ... or: pose: [x, y, yaw]
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
from neurodrive.scenarios.edits import ActorEdits

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


class Sensors(_Schema):
    cameras: list[str] | None = None  # None: every camera of the log's rig
    lidar: bool = True
    camera_scale: Annotated[float, Field(gt=0, le=4)] = 1.0
    # camera appearance: photos (blended training photos), texels, or auto (photos when the scene has them)
    appearance: Literal["auto", "photos", "texels"] = "auto"


class Scenario(_Schema):
    name: str = "scenario"
    scene: str | None = None
    log: str | None = None
    start: Start = Start(frame=0)
    route: Route = Route()
    duration_s: Annotated[float, Field(gt=0, le=600)] = 8.0
    seed: int = 0
    actors: ActorEdits = ActorEdits()  # see neurodrive.scenarios.edits
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
