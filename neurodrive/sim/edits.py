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

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from neurodrive.errors import DataError
from neurodrive.geometry import pose_xyz_yaw
from neurodrive.io_utils import read_yaml_mapping
from neurodrive.logs.model import WORLD_MARGIN_M, ActorTrack, DrivingLog
from neurodrive.logs.schema import describe_validation_error
from neurodrive.scene.model import SceneModel
from neurodrive.scene.surface import ActorAsset, resolve_asset
from neurodrive.sim.behaviours import TimedTrajectory

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


def _fail(source: str, field: str, problem: str) -> None:
    raise DataError(source, field, problem)


def check_edits(edits: ActorEdits, log: DrivingLog, source: str, prefix: str = "") -> None:
    """Actor ids, lanes and positions an edit names exist / lie near the log's world."""
    known = {t.actor_id for t in log.tracks}
    for i, aid in enumerate(edits.remove):
        if aid not in known:
            _fail(source, f"{prefix}remove[{i}]", f"unknown actor id '{aid}' (known: {', '.join(sorted(known))})")
    for aid in edits.repose:
        if aid not in known:
            _fail(source, f"{prefix}repose.{aid}", f"unknown actor id '{aid}'")
    lanes = {lane.lane_id for lane in log.road_map.lanes}
    for i, ins in enumerate(edits.insert):
        if ins.id in known or ins.id == "ego" or ins.id in {x.id for x in edits.insert[:i]}:
            _fail(source, f"{prefix}insert[{i}].id", f"actor id '{ins.id}' already exists")
        if ins.behaviour is not None and ins.behaviour.lane is not None and ins.behaviour.lane not in lanes:
            _fail(source, f"{prefix}insert[{i}].behaviour.lane", f"unknown lane '{ins.behaviour.lane}'")
    _check_positions(edits, log, source, prefix)


def _check_positions(edits: ActorEdits, log: DrivingLog, source: str, prefix: str) -> None:
    lo, hi = log.extent_xy_m
    where = (
        f"outside the log's world x in [{lo[0]:.0f}, {hi[0]:.0f}], y in [{lo[1]:.0f}, {hi[1]:.0f}] m "
        f"by more than {WORLD_MARGIN_M:.0f} m"
    )
    checks: list[tuple[str, list]] = []
    for i, ins in enumerate(edits.insert):
        if ins.waypoints is not None:
            checks.append((f"insert[{i}].{'pose' if ins.pose else 'trajectory'}", [w[1:3] for w in ins.waypoints]))
        elif ins.behaviour is not None and ins.behaviour.waypoints is not None:
            checks.append((f"insert[{i}].behaviour.waypoints", ins.behaviour.waypoints))
    for aid, rep in edits.repose.items():
        if rep.trajectory is not None:
            checks.append((f"repose.{aid}.trajectory", [w[1:3] for w in rep.trajectory]))
        elif max(abs(v) for v in rep.offset[:3]) > WORLD_MARGIN_M:
            _fail(
                source,
                f"{prefix}repose.{aid}.offset",
                f"offsets are limited to {WORLD_MARGIN_M:.0f} m, got {rep.offset[:3]}",
            )
    for field, xy in checks:
        if log.outside_extent(np.asarray(xy, float)):
            _fail(source, prefix + field, f"{np.asarray(xy, float).reshape(-1, 2)[0].tolist()}... lies {where}")


def insert_asset(
    ins: InsertActor, scene: SceneModel | None, base_dir: str | Path | None, source: str, field: str
) -> ActorAsset | None:
    """The asset an insert names (a scene actor or an asset .npz); with a scene it must exist."""
    asset = resolve_asset(ins.asset, scene.actors if scene is not None else {}, base_dir)
    if asset is None and scene is not None:
        _fail(source, field, f"'{ins.asset}' is neither an actor of the scene nor an asset .npz")
    return asset


def scene_with_inserts(
    scene: SceneModel, edits: ActorEdits, base_dir: str | Path | None, source: str, prefix: str = ""
) -> SceneModel:
    """``scene`` with every inserted actor's asset added under its new id (meshes shared)."""
    assets = dict(scene.actors)
    for i, ins in enumerate(edits.insert):
        assets[ins.id] = insert_asset(ins, scene, base_dir, source, f"{prefix}insert[{i}].asset").renamed(
            ins.id, ins.asset
        )
    return scene.with_actors(assets)


def draw_jitter(jitter: Jitter, rng: np.random.Generator) -> tuple[float, float, float, float, float]:
    """(dt_s, dx_m, dy_m, dyaw_rad, speed factor); a zero half-range draws nothing (same stream)."""
    dt, dx, dy, dyaw = (
        rng.uniform(-h, h) if h > 0 else 0.0 for h in (jitter.time_s, jitter.x_m, jitter.y_m, jitter.yaw_rad)
    )
    scale = 1.0 + (rng.uniform(-jitter.speed_scale, jitter.speed_scale) if jitter.speed_scale > 0 else 0.0)
    return dt, dx, dy, dyaw, scale


def _waypoint_arrays(
    waypoints: list[list[float]], ground_z_m: float, height_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times (K,), xyz (K, 3), yaw (K,)); rows without z stand on the ground."""
    w = np.asarray(waypoints, float)
    z = w[:, 3] if w.shape[1] == 5 else np.full(len(w), ground_z_m + height_m / 2)
    return w[:, 0], np.column_stack([w[:, 1], w[:, 2], z]), w[:, -1]


def scripted_actor(
    actor_id: str,
    category: str,
    size_m: tuple[float, float, float],
    ins: InsertActor,
    ground_z_m: float,
    rng: np.random.Generator,
) -> TimedTrajectory:
    """An inserted actor following its pose / waypoints, with its jitter drawn from ``rng``."""
    dt, dx, dy, dyaw, scale = draw_jitter(ins.jitter, rng)
    times, xyz, yaw = _waypoint_arrays(ins.waypoints, ground_z_m, size_m[2])
    times = times[0] + (times - times[0]) / scale + dt
    return TimedTrajectory(actor_id, category, size_m, times, xyz + [dx, dy, 0.0], yaw + dyaw)


def reposed_track(track: ActorTrack, rep: Repose, times_s: np.ndarray, ground_z_m: float) -> ActorTrack:
    """A logged track moved by a repose; ``times_s`` are the log frames' times from the start."""
    if rep.offset is not None:
        return replace(track, poses=track.poses @ pose_xyz_yaw(*rep.offset))
    t, xyz, yaw = _waypoint_arrays(rep.trajectory, ground_z_m, float(track.size_m[2]))
    path = TimedTrajectory(track.actor_id, track.category, tuple(track.size_m), t, xyz, yaw)
    poses = np.stack([path.at(float(k)).pose() for k in times_s])
    return replace(track, poses=poses, valid=np.ones(len(poses), bool))


class EditedActors:
    """Actor poses at each log frame with edits applied (the offline renderer's view of an edit):
    logged actors where the log has them, re-posed ones moved, inserted ones on their paths."""

    def __init__(
        self,
        edits: ActorEdits,
        log: DrivingLog,
        scene: SceneModel,
        source: str = "edits",
        base_dir: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        if edits.behaviour != "log":
            _fail(source, "behaviour", "reactive actors ('idm') need the simulator: use a scenario and replay")
        check_edits(edits, log, source)
        self.scene = scene_with_inserts(scene, edits, base_dir, source)
        self.log, self.edits = log, edits
        self._times_s = log.timestamps_s - log.timestamps_s[0]
        ground_z = float(log.ego_poses[0, 2, 3])
        rng = np.random.default_rng(seed)
        self._tracks = {
            t.actor_id: reposed_track(t, edits.repose[t.actor_id], self._times_s, ground_z)
            for t in log.tracks
            if t.actor_id in edits.repose
        }
        self._inserted: dict[str, TimedTrajectory] = {}
        for i, ins in enumerate(edits.insert):
            if ins.behaviour is not None:
                _fail(source, f"insert[{i}].behaviour", "lane behaviours need the simulator: use a scenario and replay")
            asset = self.scene.actors[ins.id]
            size = (float(asset.size_m[0]), float(asset.size_m[1]), float(asset.size_m[2]))
            self._inserted[ins.id] = scripted_actor(ins.id, asset.category, size, ins, ground_z, rng)

    @staticmethod
    def load(log: DrivingLog, scene: SceneModel, path: str | Path) -> EditedActors:
        """The edits of a YAML file (asset paths relative to the file)."""
        return EditedActors(ActorEdits.load(path), log, scene, str(path), Path(path).parent)

    def poses_at(self, frame: int) -> dict[str, np.ndarray]:
        """T_world_box of every rendered actor at log frame ``frame``."""
        poses = {
            a: p
            for a, p in self.log.actor_poses_at(frame).items()
            if a in self.scene.actors and a not in self.edits.remove and a not in self._tracks
        }
        for aid, track in self._tracks.items():
            if track.valid[frame] and aid in self.scene.actors:
                poses[aid] = track.poses[frame]
        for aid, path in self._inserted.items():
            poses[aid] = path.at(float(self._times_s[frame])).pose()
        return poses
