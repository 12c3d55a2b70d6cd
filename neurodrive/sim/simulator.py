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
from neurodrive.logs.io import load_log
from neurodrive.logs.model import DrivingLog
from neurodrive.render.rendering import SceneRenderer
from neurodrive.render.results import FrameRender
from neurodrive.scenarios.edits import ActorEdits, InsertActor
from neurodrive.scenarios.scenario import Scenario
from neurodrive.scene.meta import SceneMeta
from neurodrive.scene.model import SceneModel
from neurodrive.scene.tracks import log_with_scene_tracks
from neurodrive.sim.behaviours import ActorBehaviour, IDMFollower
from neurodrive.sim.collisions import detect_collisions
from neurodrive.sim.controllers import PurePursuitController, Trajectory
from neurodrive.sim.edits import (
    insert_asset,
    scene_with_inserts,
)
from neurodrive.sim.metrics import (
    DrivableAreaCompliance,
    EpisodeRecord,
    distance_outside_m,
    drivable_area,
    evaluate_episode,
    lane_under,
)
from neurodrive.sim.setup import (
    ActorSetup,
    check_scenario,
    expert_plan,
    expert_progress_m,
    route_of,
    sensor_rig,
    start_state,
)
from neurodrive.sim.state import WorldState, box_corners_xy
from neurodrive.sim.types import AgentContext, Observation, StepInfo
from neurodrive.sim.vehicle import Control, EgoState, KinematicBicycleModel, VehicleParameters


@dataclass(frozen=True)
class SimConfig:
    dt_s: float = 0.1  # 10 Hz
    collision_substeps: int = 4
    stop_on_collision: bool = True  # the episode ends at the first collision (as NeuroNCAP)
    goal_tolerance_m: float = 2.0


class Simulator:
    """One scenario, stepped by an agent's actions."""

    @staticmethod
    def _renderer(scene: SceneModel | None, scenario: Scenario, source: str) -> SceneRenderer | None:
        if scene is None:
            return None
        try:
            return SceneRenderer(scene, appearance=scenario.sensors.appearance)
        except ValueError as e:
            raise DataError(source, "sensors.appearance", str(e)) from e

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
        check_scenario(scenario, log, self.source)
        self.scene = (
            scene_with_inserts(scene, scenario.actors, scenario.base_dir, self.source, "actors.")
            if scene is not None
            else None
        )
        self.renderer = self._renderer(self.scene, scenario, self.source)
        self.rig = sensor_rig(scenario, log) if self.scene is not None else None
        self.start_frame, start_ego = start_state(scenario, log)
        self.route, self.goal_s_m = route_of(scenario, log, start_ego, params)
        self.expert = expert_plan(log, self.start_frame)
        self._start_ego = start_ego
        self.state: WorldState | None = None
        self.record: EpisodeRecord | None = None
        self.behaviours: dict[str, ActorBehaviour] = {}
        self.want_sensors = self.scene is not None  # set with set_sensors()
        self._seed = scenario.seed  # the episode's; set by reset()

    def _actor_setup(self) -> ActorSetup:
        return ActorSetup(self.scenario, self.log, self.scene, self.source, self.start_frame, self._start_ego.z_m)

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
        scene, meta = None, SceneMeta()
        if scenario.scene is not None:
            scene_dir = scenario.resolve_path(scenario.scene)
            scene = SceneModel.load(scene_dir) if render_sensors else None
            if scene is not None:
                meta = scene.meta
            elif scenario.log is None or (scene_dir / "scene.json").is_file():
                meta = SceneMeta.read(scene_dir)
        if scenario.log is not None:
            log = load_log(scenario.resolve_path(scenario.log))
        else:
            scene_dir = scenario.resolve_path(scenario.scene)
            log_path = Path(meta.log.path)
            if not (log_path / "log.json").is_file():
                raise DataError(
                    scene_dir / "scene.json",
                    "log.path",
                    f"the source log {log_path} is not there; give 'log:' in the scenario {source}",
                )
            log = load_log(log_path)
        log = log_with_scene_tracks(log, meta)  # moving objects the reconstruction found without labels
        return cls(scenario, log, scene, source, params, config)

    # ------------------------------------------------------------------ running

    def agent_context(self) -> AgentContext:
        k, _, _ = lane_under(self.log.road_map, self._start_ego.centre_xy(self.params))
        limit = self.log.road_map.lanes[k].speed_limit_mps if k is not None else 13.9
        return AgentContext(self.params, self.config.dt_s, self.route, limit, self.expert, self.rig)

    def reset(self, seed: int | None = None) -> Observation:
        self._seed = self.scenario.seed if seed is None else seed
        self.behaviours = self._actor_setup().behaviours(self._seed)
        actors = {aid: s for aid, b in self.behaviours.items() if (s := b.state_at_start(0.0)) is not None}
        self.state = WorldState(0, 0.0, self._start_ego, actors)
        self.record = EpisodeRecord(
            self.config.dt_s,
            self.params,
            self.route,
            self.log.road_map,
            expert_progress_m(self.expert, self.route, self.scenario.duration_s, self.config.dt_s, self.params),
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

    def _edit(self, actors: ActorEdits) -> None:
        self.scenario = self.scenario.model_copy(update={"actors": actors})

    def remove_actor(self, actor_id: str) -> None:
        """Removes an actor now and records the edit in ``self.scenario``."""
        if actor_id not in self.behaviours:
            raise KeyError(f"unknown actor id '{actor_id}'")
        del self.behaviours[actor_id]
        self.state.actors.pop(actor_id, None)
        self._edit(self.scenario.actors.removing(actor_id))

    def move_actor(self, actor_id: str, dx_m: float, dy_m: float, dyaw_rad: float = 0.0) -> None:
        """Shifts an actor's whole path by a world-frame offset (a re-pose) and records the edit."""
        if actor_id not in self.behaviours:
            raise KeyError(f"unknown actor id '{actor_id}'")
        yaw = self.state.actors[actor_id].yaw_rad if actor_id in self.state.actors else 0.0
        self._edit(self.scenario.actors.moving(actor_id, dx_m, dy_m, dyaw_rad, yaw))
        self._rebuild_actor(actor_id)

    def insert_actor(self, actor_id: str, asset: str, x_m: float, y_m: float, yaw_rad: float) -> None:
        """Inserts an actor standing at a pose (from an asset of the scene) and records the edit."""
        ins = InsertActor(id=actor_id, asset=asset, pose=[x_m, y_m, yaw_rad])
        before = self.scenario.actors
        self._edit(before.inserting(ins))
        try:
            check_scenario(self.scenario, self.log, self.source)
            if self.scene is not None:
                field = f"actors.insert[{len(self.scenario.actors.insert) - 1}].asset"
                base = insert_asset(ins, self.scene, self.scenario.base_dir, self.source, field)
                self.scene.actors[actor_id] = base.renamed(actor_id, asset)
        except (DataError, KeyError):
            self._edit(before)
            raise
        self._rebuild_actor(actor_id)

    def _rebuild_actor(self, actor_id: str) -> None:
        """The behaviour of one edited actor rebuilt (with its own jitter stream), placed at the current time."""
        rebuilt = self._actor_setup().behaviour(actor_id, self._seed)
        self.behaviours[actor_id] = rebuilt
        if isinstance(rebuilt, IDMFollower):
            state = rebuilt.state_at_start(self.state.time_s)
        else:
            state = rebuilt.at(self.state.time_s)  # type: ignore[attr-defined]  # log replay / timed trajectory
        if state is not None:
            self.state.actors[actor_id] = state
