"""The closed-loop simulator: ego dynamics, actor behaviours, collisions, sensors, records.

Stepped at 10 Hz. Each step the ego's action (a ``Control`` or a ``Trajectory`` tracked by pure
pursuit) moves it through the kinematic bicycle model, every actor behaviour advances (reactive
ones see the ego as a box), collisions are checked on sub-steps, and - when sensors are wanted -
the reconstructed scene renders the cameras and the LiDAR with the actors where they now are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import shapely

from neurodrive.errors import DataError
from neurodrive.geometry import wrap_angle, yaw_of
from neurodrive.logs.io import load_log
from neurodrive.logs.model import WORLD_MARGIN_M, DrivingLog, SensorRig
from neurodrive.render.rendering import SceneRenderer
from neurodrive.render.results import FrameRender
from neurodrive.scenarios.edits import InsertActor, Repose
from neurodrive.scenarios.scenario import Scenario
from neurodrive.scene.model import SceneModel, read_scene_meta
from neurodrive.scene.tracks import log_with_scene_tracks
from neurodrive.sim.behaviours import ActorBehaviour, IDMFollower, idm_from_track, log_replay
from neurodrive.sim.collisions import detect_collisions
from neurodrive.sim.controllers import PurePursuitController, Trajectory
from neurodrive.sim.edits import (
    check_edits,
    draw_jitter,
    insert_asset,
    reposed_track,
    scene_with_inserts,
    scripted_actor,
)
from neurodrive.sim.metrics import (
    DrivableAreaCompliance,
    EpisodeRecord,
    distance_outside_m,
    drivable_area,
    evaluate_episode,
    lane_under,
)
from neurodrive.sim.paths import Polyline
from neurodrive.sim.state import WorldState, box_corners_xy
from neurodrive.sim.types import AgentContext, ExpertPlan, Observation, StepInfo
from neurodrive.sim.vehicle import Control, EgoState, KinematicBicycleModel, VehicleParameters


def _size3(size_m: np.ndarray) -> tuple[float, float, float]:
    return float(size_m[0]), float(size_m[1]), float(size_m[2])


@dataclass(frozen=True)
class SimConfig:
    dt_s: float = 0.1  # 10 Hz
    collision_substeps: int = 4
    stop_on_collision: bool = True  # the episode ends at the first collision (as NeuroNCAP)
    goal_tolerance_m: float = 2.0


class Simulator:
    """One scenario, stepped by an agent's actions."""

    def __init__(
        self,
        scenario: Scenario,
        log: DrivingLog,
        scene: SceneModel | None = None,
        source: str | Path = "<scenario>",
        params: VehicleParameters = VehicleParameters(),
        config: SimConfig = SimConfig(),
    ) -> None:
        """A simulator of loaded objects: the scenario, its log and (for sensors) its scene.
        ``Simulator.from_scenario`` loads them from the paths the scenario names."""
        self.scenario, self.source, self.params, self.config = scenario, str(source), params, config
        self.log = log
        self.dynamics = KinematicBicycleModel(params)
        self.controller = PurePursuitController(params)
        self._check_ids()
        self.scene = (
            scene_with_inserts(scene, scenario.actors, scenario.base_dir, self.source, "actors.")
            if scene is not None
            else None
        )
        self.renderer = SceneRenderer(self.scene) if self.scene is not None else None
        self.rig = self._sensor_rig() if self.scene is not None else None
        self.start_frame, start_ego = self._start()
        self.route, self.goal_s_m = self._route(start_ego)
        self.expert = self._expert()
        self._start_ego = start_ego
        self.state: WorldState | None = None
        self.record: EpisodeRecord | None = None
        self.behaviours: dict[str, ActorBehaviour] = {}
        self.want_sensors = self.scene is not None  # set with set_sensors()

    @classmethod
    def from_scenario(
        cls,
        scenario: Scenario,
        source: str | Path = "<scenario>",
        params: VehicleParameters = VehicleParameters(),
        config: SimConfig = SimConfig(),
        render_sensors: bool = True,
    ) -> Simulator:
        """Loads the log and (with ``render_sensors``) the scene that ``scenario`` names: its ``log:``,
        else the source log recorded in its scene's scene.json."""
        scene, meta = None, {}
        if scenario.scene is not None:
            scene_dir = scenario.resolve_path(scenario.scene)
            scene = SceneModel.load(scene_dir) if render_sensors else None
            if scene is not None:
                meta = scene.meta
            elif scenario.log is None or (scene_dir / "scene.json").is_file():
                meta = read_scene_meta(scene_dir)
        if scenario.log is not None:
            log = load_log(scenario.resolve_path(scenario.log))
        else:
            scene_dir = scenario.resolve_path(scenario.scene)
            log_path = Path(meta["log"]["path"])
            if not (log_path / "log.json").is_file():
                raise DataError(
                    scene_dir / "scene.json",
                    "log.path",
                    f"the source log {log_path} is not there; give 'log:' in the scenario {source}",
                )
            log = load_log(log_path)
        log = log_with_scene_tracks(log, meta)  # moving objects the reconstruction found without labels
        return cls(scenario, log, scene, source, params, config)

    # ------------------------------------------------------------------ set-up

    def _fail(self, field: str, problem: str) -> None:
        raise DataError(self.source, field, problem)

    def _check_ids(self) -> None:
        check_edits(self.scenario.actors, self.log, self.source, prefix="actors.")
        lanes = {lane.lane_id for lane in self.log.road_map.lanes}
        for i, lane in enumerate(self.scenario.route.lanes or []):
            if lane not in lanes:
                self._fail(f"route.lanes[{i}]", f"unknown lane '{lane}' (known: {', '.join(sorted(lanes))})")
        if self.scenario.start.frame is not None and self.scenario.start.frame >= self.log.num_frames:
            self._fail(
                "start.frame", f"{self.scenario.start.frame} is past the log's last frame {self.log.num_frames - 1}"
            )
        self._check_cameras()
        self._check_extent()

    def _check_cameras(self) -> None:
        names = set(self.log.rig.camera_names)
        for i, name in enumerate(self.scenario.sensors.cameras or []):
            if name not in names:
                self._fail(f"sensors.cameras[{i}]", f"unknown camera '{name}' (known: {', '.join(sorted(names))})")

    def _check_extent(self) -> None:
        """Every position the scenario gives lies near the log's world (within WORLD_MARGIN_M)."""
        lo, hi = self.log.extent_xy_m
        where = (
            f"outside the log's world x in [{lo[0]:.0f}, {hi[0]:.0f}], y in [{lo[1]:.0f}, {hi[1]:.0f}] m "
            f"by more than {WORLD_MARGIN_M:.0f} m"
        )
        sc = self.scenario
        checks: list[tuple[str, list]] = []
        if sc.start.pose is not None:
            checks.append(("start.pose", [sc.start.pose[:2]]))
        if sc.route.goal is not None:
            checks.append(("route.goal", [sc.route.goal]))
        for field_name, xy in checks:
            if self.log.outside_extent(np.asarray(xy, float)):
                self._fail(field_name, f"{np.asarray(xy, float).reshape(-1, 2)[0].tolist()}... lies {where}")

    def _insert_size(self, i: int, ins: InsertActor) -> tuple[str, tuple[float, float, float]]:
        # an inserted actor already placed in the scene (at set-up or by insert_actor) needs no asset read
        placed = self.scene.actors.get(ins.id) if self.scene is not None else None
        field = f"actors.insert[{i}].asset"
        asset = placed or insert_asset(ins, self.scene, self.scenario.base_dir, self.source, field)
        if asset is not None:
            return asset.category, _size3(asset.size_m)
        track = next((t for t in self.log.tracks if t.actor_id == ins.asset), None)
        if track is None:
            self._fail(field, f"'{ins.asset}' is neither a logged actor nor an asset .npz")
        return track.category, _size3(track.size_m)

    def _sensor_rig(self) -> SensorRig:
        s = self.scenario.sensors
        cams = self.log.rig.cameras
        if s.cameras is not None:  # names checked in _check_cameras
            cams = tuple(c for c in cams if c.name in s.cameras)
        if s.camera_scale != 1.0:
            cams = tuple(c.scaled(s.camera_scale) for c in cams)
        return SensorRig(cams, self.log.rig.lidars if s.lidar else ())

    def _logged_speed(self, frame: int) -> float:
        ts, poses = self.log.timestamps_s, self.log.ego_poses
        a, b = (frame, frame + 1) if frame + 1 < len(ts) else (frame - 1, frame)
        if a < 0:
            return 0.0
        return float(np.linalg.norm(poses[b, :2, 3] - poses[a, :2, 3]) / (ts[b] - ts[a]))

    def _start(self) -> tuple[int, EgoState]:
        st = self.scenario.start
        if st.pose is not None:
            x, y, yaw = st.pose
            return 0, EgoState(x, y, yaw, st.speed_mps or 0.0, z_m=float(self.log.ego_poses[0, 2, 3]))
        f = st.frame or 0
        pose = self.log.ego_poses[f]
        speed = st.speed_mps if st.speed_mps is not None else self._logged_speed(f)
        return f, EgoState(float(pose[0, 3]), float(pose[1, 3]), float(yaw_of(pose)), speed, z_m=float(pose[2, 3]))

    def _route(self, ego: EgoState) -> tuple[Polyline, float | None]:
        rm = self.log.road_map
        r = self.scenario.route
        if r.lanes:
            line = Polyline(np.vstack([rm.lane(lane).centerline_m for lane in r.lanes]))
        else:
            k, _, heading = lane_under(rm, ego.centre_xy(self.params))
            if k is not None and abs(wrap_angle(heading - ego.yaw_rad)) < np.pi / 2:
                line = Polyline(rm.lanes[k].centerline_m)
            else:
                d = np.array([np.cos(ego.yaw_rad), np.sin(ego.yaw_rad)])
                line = Polyline(np.stack([[ego.x_m, ego.y_m], [ego.x_m, ego.y_m] + 200.0 * d]))
        line = line.extended(50.0, 300.0)
        goal_s = float(line.project(np.asarray(r.goal, float))[0]) if r.goal is not None else None
        return line, goal_s

    def _expert(self) -> ExpertPlan:
        f = self.start_frame
        ts = self.log.timestamps_s[f:] - self.log.timestamps_s[f]
        xy = self.log.ego_poses[f:, :2, 3]
        speeds = np.array([self._logged_speed(k) for k in range(f, self.log.num_frames)])
        if len(ts) < 2:
            ts, xy, speeds = np.array([0.0, 1.0]), np.vstack([xy, xy]), np.zeros(2)
        return ExpertPlan(ts, xy, speeds)

    def _expert_progress_m(self) -> float:
        plan = self.expert.trajectory_from(0.0, self.scenario.duration_s, self.config.dt_s)
        r = self.params.rear_axle_to_centre_m
        heading = np.arctan2(*(plan.xy_m[-1] - plan.xy_m[0])[::-1]) if len(plan.xy_m) > 1 else 0.0
        ends = np.array([plan.xy_m[0], plan.xy_m[-1]]) + r * np.array([np.cos(heading), np.sin(heading)])
        s, _ = self.route.project(ends)
        return float(s[1] - s[0])

    def _behaviours(self, rng: np.random.Generator) -> dict[str, ActorBehaviour]:
        a = self.scenario.actors
        t0 = float(self.log.timestamps_s[self.start_frame])
        ground_z = self._start_ego.z_m
        out: dict[str, ActorBehaviour] = {}
        for track in self.log.tracks:
            if track.actor_id in a.remove or not track.valid.any():
                continue
            if track.actor_id in a.repose:
                track = reposed_track(track, a.repose[track.actor_id], self.log.timestamps_s - t0, ground_z)
            if a.behaviour == "idm":
                out[track.actor_id] = idm_from_track(track, self.log.timestamps_s, self.start_frame, time_offset_s=t0)
            else:
                out[track.actor_id] = log_replay(track, self.log.timestamps_s, t0)
        for i, ins in enumerate(a.insert):
            category, size = self._insert_size(i, ins)
            if ins.behaviour is None:
                out[ins.id] = scripted_actor(ins.id, category, size, ins, ground_z, rng)
                continue
            b = ins.behaviour
            dt, dx, _, _, scale = draw_jitter(ins.jitter, rng)
            line = Polyline(
                self.log.road_map.lane(b.lane).centerline_m if b.lane else np.asarray(b.waypoints, float)
            ).extended(0.0, 300.0)
            out[ins.id] = IDMFollower(
                ins.id,
                category,
                size,
                line,
                b.start_s_m + dx,
                b.speed_mps * scale,
                b.speed_mps * scale,
                ground_z + size[2] / 2,
                start_time_s=max(0.0, b.start_time_s + dt),
            )
        return out

    # ------------------------------------------------------------------ running

    def agent_context(self) -> AgentContext:
        k, _, _ = lane_under(self.log.road_map, self._start_ego.centre_xy(self.params))
        limit = self.log.road_map.lanes[k].speed_limit_mps if k is not None else 13.9
        return AgentContext(self.params, self.config.dt_s, self.route, limit, self.expert, self.rig)

    def reset(self, seed: int | None = None) -> Observation:
        rng = np.random.default_rng(self.scenario.seed if seed is None else seed)
        self.behaviours = self._behaviours(rng)
        actors = {aid: s for aid, b in self.behaviours.items() if (s := b.state_at_start(0.0)) is not None}
        self.state = WorldState(0, 0.0, self._start_ego, actors)
        self.record = EpisodeRecord(
            self.config.dt_s,
            self.params,
            self.route,
            self.log.road_map,
            self._expert_progress_m(),
            self._start_ego.speed_mps,
        )
        self._record(self.state)
        self.done = False
        return self.observe()

    def _record(self, state: WorldState) -> None:
        e = state.ego
        self.record.times_s.append(state.time_s)
        self.record.ego.append(np.array([e.x_m, e.y_m, e.yaw_rad, e.speed_mps, e.accel_mps2, e.steering_rad]))
        self.record.actors.append(list(state.actors.values()))

    def render(self, state: WorldState | None = None) -> FrameRender | None:
        """Cameras and LiDAR of the scene with the actors at their current poses."""
        state = state or self.state
        if self.renderer is None:
            return None
        placed = self.renderer.place(
            {aid: a.pose() for aid, a in state.actors.items() if aid in self.renderer.scene.actors}
        )
        return self.renderer.render_frame(placed, state.ego.pose(), self.rig.cameras, self.rig.lidars)

    def set_sensors(self, enabled: bool) -> None:
        """Render cameras and LiDAR into each observation (only possible with a scene)."""
        if enabled and self.scene is None:
            raise ValueError("sensors need a scenario with a reconstructed scene ('scene:')")
        self.want_sensors = enabled

    def end_episode(self) -> None:
        """Ends the episode now (e.g. an environment terminating it on its own rule)."""
        self.done = True

    def observe(self) -> Observation:
        sensors = self.render() if self.want_sensors else None
        return Observation(
            self.state.step, self.state.time_s, self.state.ego, dict(self.state.actors), self.route, sensors
        )

    def step(self, action: Control | Trajectory) -> tuple[Observation, StepInfo]:
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        if self.done:
            raise RuntimeError("the episode is over; call reset()")
        s, dt = self.state, self.config.dt_s
        control = self.controller.control(s.ego, action) if isinstance(action, Trajectory) else action
        if not (math.isfinite(control.accel_mps2) and math.isfinite(control.steering_rad)):
            raise ValueError(f"action: acceleration and steering must be finite, got {control}")
        ego = self.dynamics.propagate(s.ego, control, dt)
        agents = list(s.actors.values()) + [s.ego_box(self.params)]
        actors = {aid: a for aid, b in self.behaviours.items() if (a := b.step(s.time_s, agents, dt)) is not None}
        new = WorldState(s.step + 1, round(s.time_s + dt, 9), ego, actors)
        hit_before = {c.actor_id for c in self.record.collisions}
        events = detect_collisions(s, new, self.params, self.config.collision_substeps, ignore=hit_before)
        self.record.collisions.extend(events)
        self.state = new
        self._record(new)
        progress = float(self.route.project(ego.centre_xy(self.params))[0])
        goal = self.goal_s_m is not None and progress >= self.goal_s_m - self.config.goal_tolerance_m
        off_road = not self._on_road(ego)
        self.done = bool(
            new.time_s >= self.scenario.duration_s - 1e-9 or goal or (events and self.config.stop_on_collision)
        )
        return self.observe(), StepInfo(events, off_road, goal, self.done)

    @cached_property
    def _drivable(self) -> shapely.Geometry:
        return drivable_area(self.log.road_map)

    def _on_road(self, ego: EgoState) -> bool:
        """The same test as the drivable-area metric, for the current state."""
        box = WorldState(0, 0.0, ego).ego_box(self.params)
        corners = box_corners_xy(box.x_m, box.y_m, box.yaw_rad, box.size_m[0], box.size_m[1])[0]
        return bool(distance_outside_m(self._drivable, corners).max() <= DrivableAreaCompliance.max_violation_m)

    def metrics(self) -> dict:
        return evaluate_episode(self.record)

    # ------------------------------------------------------------------ live edits (viewer)

    def _edit_scenario(self, **actors_update) -> None:
        actors = self.scenario.actors.model_copy(update=actors_update)
        self.scenario = self.scenario.model_copy(update={"actors": actors})

    def remove_actor(self, actor_id: str) -> None:
        """Removes an actor now and records the edit in ``self.scenario``."""
        if actor_id not in self.behaviours:
            raise KeyError(f"unknown actor id '{actor_id}'")
        del self.behaviours[actor_id]
        self.state.actors.pop(actor_id, None)
        inserted = [i for i in self.scenario.actors.insert if i.id != actor_id]
        if len(inserted) != len(self.scenario.actors.insert):
            self._edit_scenario(insert=inserted)
        else:
            self._edit_scenario(
                remove=[*self.scenario.actors.remove, actor_id],
                repose={k: v for k, v in self.scenario.actors.repose.items() if k != actor_id},
            )

    def move_actor(self, actor_id: str, dx_m: float, dy_m: float, dyaw_rad: float = 0.0) -> None:
        """Shifts an actor's whole path by a world-frame offset (a re-pose) and records the edit."""
        if actor_id not in self.behaviours:
            raise KeyError(f"unknown actor id '{actor_id}'")
        ins = next((i for i in self.scenario.actors.insert if i.id == actor_id), None)
        if ins is not None:
            if ins.waypoints is not None:
                key = "pose" if ins.pose is not None else "trajectory"
                rows = [ins.pose] if ins.pose is not None else ins.trajectory
                start = 0 if ins.pose is not None else 1  # waypoints lead with their time
                shifted = [
                    [*r[:start], r[start] + dx_m, r[start + 1] + dy_m, *r[start + 2 : -1], r[-1] + dyaw_rad]
                    for r in rows
                ]
                new = ins.model_copy(update={key: shifted[0] if ins.pose is not None else shifted})
            else:
                new = ins.model_copy(
                    update={"behaviour": ins.behaviour.model_copy(update={"start_s_m": ins.behaviour.start_s_m + dx_m})}
                )
            self._edit_scenario(insert=[new if i.id == actor_id else i for i in self.scenario.actors.insert])
        else:
            yaw = self.state.actors[actor_id].yaw_rad if actor_id in self.state.actors else 0.0
            c, s = np.cos(yaw), np.sin(yaw)  # the offset is in the box frame
            old = self.scenario.actors.repose.get(actor_id)
            base = old.offset if old is not None and old.offset is not None else [0.0, 0.0, 0.0, 0.0]
            offset = [base[0] + c * dx_m + s * dy_m, base[1] - s * dx_m + c * dy_m, base[2], base[3] + dyaw_rad]
            self._edit_scenario(repose={**self.scenario.actors.repose, actor_id: Repose(offset=offset)})
        self._rebuild_actor(actor_id)

    def insert_actor(self, actor_id: str, asset: str, x_m: float, y_m: float, yaw_rad: float) -> None:
        """Inserts an actor standing at a pose (from an asset of the scene) and records the edit."""
        ins = InsertActor(id=actor_id, asset=asset, pose=[x_m, y_m, yaw_rad])
        self._edit_scenario(insert=[*self.scenario.actors.insert, ins])
        try:
            self._check_ids()
            if self.scene is not None:
                field = f"actors.insert[{len(self.scenario.actors.insert) - 1}].asset"
                base = insert_asset(ins, self.scene, self.scenario.base_dir, self.source, field)
                self.scene.actors[actor_id] = base.renamed(actor_id, asset)
        except (DataError, KeyError):
            self._edit_scenario(insert=self.scenario.actors.insert[:-1])
            raise
        self._rebuild_actor(actor_id)

    def _rebuild_actor(self, actor_id: str) -> None:
        rebuilt = self._behaviours(np.random.default_rng(self.scenario.seed))[actor_id]
        self.behaviours[actor_id] = rebuilt
        if isinstance(rebuilt, IDMFollower):
            state = rebuilt.state_at_start(self.state.time_s)
        else:
            state = rebuilt.at(self.state.time_s)  # type: ignore[attr-defined]  # log replay / timed trajectory
        if state is not None:
            self.state.actors[actor_id] = state
