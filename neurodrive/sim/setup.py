"""Setting up an episode from a scenario and its log, apart from stepping it (``simulator.py``): the
scenario checked against the log, the sensor rig, the ego's start, the route, the logged expert, and
each actor's behaviour (``ActorSetup``: one actor built on its own, e.g. after a live edit)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurodrive.errors import DataError
from neurodrive.geometry import wrap_angle, yaw_of
from neurodrive.logs.model import WORLD_MARGIN_M, DrivingLog, SensorRig
from neurodrive.scenarios.edits import InsertActor
from neurodrive.scenarios.scenario import Scenario
from neurodrive.scene.model import SceneModel
from neurodrive.sim.behaviours import ActorBehaviour, IDMConfig, IDMFollower, IDMStart, idm_from_track, log_replay
from neurodrive.sim.edits import actor_rng, check_edits, draw_jitter, insert_asset, reposed_track, scripted_actor
from neurodrive.sim.metrics import lane_under
from neurodrive.sim.paths import Polyline
from neurodrive.sim.types import ExpertPlan
from neurodrive.sim.vehicle import EgoState, VehicleParameters


def check_scenario(scenario: Scenario, log: DrivingLog, source: str) -> None:
    """Every id, lane, frame, camera and position the scenario names exists in (or lies near) the log;
    one DataError naming the scenario field otherwise."""
    check_edits(scenario.actors, log, source, prefix="actors.")
    lanes = {lane.lane_id for lane in log.road_map.lanes}
    for i, lane in enumerate(scenario.route.lanes or []):
        if lane not in lanes:
            raise DataError(source, f"route.lanes[{i}]", f"unknown lane '{lane}' (known: {', '.join(sorted(lanes))})")
    if scenario.start.frame is not None and scenario.start.frame >= log.num_frames:
        raise DataError(
            source, "start.frame", f"{scenario.start.frame} is past the log's last frame {log.num_frames - 1}"
        )
    names = set(log.rig.camera_names)
    for i, name in enumerate(scenario.sensors.cameras or []):
        if name not in names:
            raise DataError(
                source, f"sensors.cameras[{i}]", f"unknown camera '{name}' (known: {', '.join(sorted(names))})"
            )
    lo, hi = log.extent_xy_m
    where = (
        f"outside the log's world x in [{lo[0]:.0f}, {hi[0]:.0f}], y in [{lo[1]:.0f}, {hi[1]:.0f}] m "
        f"by more than {WORLD_MARGIN_M:.0f} m"
    )
    checks: list[tuple[str, list]] = []
    if scenario.start.pose is not None:
        checks.append(("start.pose", [scenario.start.pose[:2]]))
    if scenario.route.goal is not None:
        checks.append(("route.goal", [scenario.route.goal]))
    for field_name, xy in checks:
        if log.outside_extent(np.asarray(xy, float)):
            raise DataError(source, field_name, f"{np.asarray(xy, float).reshape(-1, 2)[0].tolist()}... lies {where}")


def sensor_rig(scenario: Scenario, log: DrivingLog) -> SensorRig:
    """The cameras (named ones, scaled) and LiDARs (unless turned off) the scenario renders."""
    s = scenario.sensors
    cams = log.rig.cameras
    if s.cameras is not None:  # names checked in check_scenario
        cams = tuple(c for c in cams if c.name in s.cameras)
    if s.camera_scale != 1.0:
        cams = tuple(c.scaled(s.camera_scale) for c in cams)
    return SensorRig(cams, log.rig.lidars if s.lidar else ())


def logged_speed(log: DrivingLog, frame: int) -> float:
    """The logged ego's speed at ``frame`` (m/s), from its positions."""
    ts, poses = log.timestamps_s, log.ego_poses
    a, b = (frame, frame + 1) if frame + 1 < len(ts) else (frame - 1, frame)
    if a < 0:
        return 0.0
    return float(np.linalg.norm(poses[b, :2, 3] - poses[a, :2, 3]) / (ts[b] - ts[a]))


def start_state(scenario: Scenario, log: DrivingLog) -> tuple[int, EgoState]:
    """(log frame, ego state) the episode starts from: the scenario's pose, else a logged frame."""
    st = scenario.start
    if st.pose is not None:
        x, y, yaw = st.pose
        return 0, EgoState(x, y, yaw, st.speed_mps or 0.0, z_m=float(log.ego_poses[0, 2, 3]))
    f = st.frame or 0
    pose = log.ego_poses[f]
    speed = st.speed_mps if st.speed_mps is not None else logged_speed(log, f)
    return f, EgoState(float(pose[0, 3]), float(pose[1, 3]), float(yaw_of(pose)), speed, z_m=float(pose[2, 3]))


def route_of(
    scenario: Scenario, log: DrivingLog, ego: EgoState, params: VehicleParameters
) -> tuple[Polyline, float | None]:
    """The route (the scenario's lanes, else the lane under the ego, else straight ahead), extended
    50 m back and 300 m on, and the goal's arc length on it (None without a goal)."""
    rm = log.road_map
    r = scenario.route
    if r.lanes:
        line = Polyline(np.vstack([rm.lane(lane).centerline_m for lane in r.lanes]))
    else:
        k, _, heading = lane_under(rm, ego.centre_xy(params))
        if k is not None and abs(wrap_angle(heading - ego.yaw_rad)) < np.pi / 2:
            line = Polyline(rm.lanes[k].centerline_m)
        else:
            d = np.array([np.cos(ego.yaw_rad), np.sin(ego.yaw_rad)])
            line = Polyline(np.stack([[ego.x_m, ego.y_m], [ego.x_m, ego.y_m] + 200.0 * d]))
    line = line.extended(50.0, 300.0)
    goal_s = float(line.project(np.asarray(r.goal, float))[0]) if r.goal is not None else None
    return line, goal_s


def expert_plan(log: DrivingLog, start_frame: int) -> ExpertPlan:
    """The logged ego from ``start_frame`` on: times from the start, positions, speeds."""
    f = start_frame
    ts = log.timestamps_s[f:] - log.timestamps_s[f]
    xy = log.ego_poses[f:, :2, 3]
    speeds = np.array([logged_speed(log, k) for k in range(f, log.num_frames)])
    if len(ts) < 2:
        ts, xy, speeds = np.array([0.0, 1.0]), np.vstack([xy, xy]), np.zeros(2)
    return ExpertPlan(ts, xy, speeds)


def expert_progress_m(
    expert: ExpertPlan, route: Polyline, duration_s: float, dt_s: float, params: VehicleParameters
) -> float:
    """How far along the route the logged ego's centre gets within ``duration_s``."""
    plan = expert.trajectory_from(0.0, duration_s, dt_s)
    r = params.rear_axle_to_centre_m
    heading = np.arctan2(*(plan.xy_m[-1] - plan.xy_m[0])[::-1]) if len(plan.xy_m) > 1 else 0.0
    ends = np.array([plan.xy_m[0], plan.xy_m[-1]]) + r * np.array([np.cos(heading), np.sin(heading)])
    s, _ = route.project(ends)
    return float(s[1] - s[0])


def _size3(size_m: np.ndarray) -> tuple[float, float, float]:
    return float(size_m[0]), float(size_m[1]), float(size_m[2])


@dataclass
class ActorSetup:
    """Builds the behaviour of each actor of a scenario: logged actors replayed (or IDM) unless removed,
    re-posed ones shifted, inserted ones scripted or on a lane; jitter drawn per actor."""

    scenario: Scenario
    log: DrivingLog
    scene: SceneModel | None
    source: str
    start_frame: int
    ground_z_m: float

    def actor_ids(self) -> list[str]:
        a = self.scenario.actors
        logged = [t.actor_id for t in self.log.tracks if t.actor_id not in a.remove and t.valid.any()]
        return logged + [ins.id for ins in a.insert]

    def behaviours(self, seed: int) -> dict[str, ActorBehaviour]:
        return {aid: self.behaviour(aid, seed) for aid in self.actor_ids()}

    def behaviour(self, actor_id: str, seed: int) -> ActorBehaviour:
        """The behaviour of one actor (KeyError for one the scenario does not hold)."""
        a = self.scenario.actors
        t0 = float(self.log.timestamps_s[self.start_frame])
        for i, ins in enumerate(a.insert):
            if ins.id == actor_id:
                return self._inserted(i, ins, actor_rng(seed, actor_id))
        track = next((t for t in self.log.tracks if t.actor_id == actor_id), None)
        if track is None or actor_id in a.remove or not track.valid.any():
            raise KeyError(f"unknown actor id '{actor_id}'")
        if actor_id in a.repose:
            track = reposed_track(track, a.repose[actor_id], self.log.timestamps_s - t0, self.ground_z_m)
        if a.behaviour == "idm":
            return idm_from_track(track, self.log.timestamps_s, self.start_frame, time_offset_s=t0)
        return log_replay(track, self.log.timestamps_s, t0)

    def _inserted(self, i: int, ins: InsertActor, rng: np.random.Generator) -> ActorBehaviour:
        category, size = self.insert_size(i, ins)
        if ins.behaviour is None:
            return scripted_actor(ins.id, category, size, ins, self.ground_z_m, rng)
        b = ins.behaviour
        dt, dx, _, _, scale = draw_jitter(ins.jitter, rng)
        line = Polyline(
            self.log.road_map.lane(b.lane).centerline_m if b.lane else np.asarray(b.waypoints, float)
        ).extended(0.0, 300.0)
        start = IDMStart(
            line,
            b.start_s_m + dx,
            b.speed_mps * scale,
            b.speed_mps * scale,
            self.ground_z_m + size[2] / 2,
            max(0.0, b.start_time_s + dt),
        )
        return IDMFollower(ins.id, category, size, start, IDMConfig())

    def insert_size(self, i: int, ins: InsertActor) -> tuple[str, tuple[float, float, float]]:
        """(category, size) of inserted actor ``i``: from its asset (the scene's, or a file), else the
        logged track it names."""
        # an inserted actor already placed in the scene (at set-up or by a live insert) needs no asset read
        placed = self.scene.actors.get(ins.id) if self.scene is not None else None
        field = f"actors.insert[{i}].asset"
        asset = placed or insert_asset(ins, self.scene, self.scenario.base_dir, self.source, field)
        if asset is not None:
            return asset.category, _size3(asset.size_m)
        track = next((t for t in self.log.tracks if t.actor_id == ins.asset), None)
        if track is None:
            raise DataError(self.source, field, f"'{ins.asset}' is neither a logged actor nor an asset .npz")
        return track.category, _size3(track.size_m)
