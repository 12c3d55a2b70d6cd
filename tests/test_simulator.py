"""Simulator building blocks: dynamics, paths, collisions, metrics, scenario validation."""

from __future__ import annotations

import numpy as np
import pytest

from neurodrive.errors import DataError
from neurodrive.logs.model import Lane, RoadMap
from neurodrive.scenarios.scenario import Scenario
from neurodrive.sim.behaviours import IDMConfig, idm_acceleration
from neurodrive.sim.collisions import detect_collisions
from neurodrive.sim.controllers import PurePursuitController, Trajectory
from neurodrive.sim.metrics import (
    Comfort,
    DrivableAreaCompliance,
    DrivingDirectionCompliance,
    EpisodeRecord,
    neuroncap_score,
    time_to_collision_s,
)
from neurodrive.sim.paths import Polyline
from neurodrive.sim.state import ActorState, WorldState
from neurodrive.sim.vehicle import Control, EgoState, KinematicBicycleModel, VehicleParameters

PARAMS = VehicleParameters()


def test_bicycle_model_drives_straight_and_turns_on_its_radius() -> None:
    model = KinematicBicycleModel(PARAMS)
    s = EgoState(0.0, 0.0, 0.0, 10.0)
    for _ in range(10):
        s = model.propagate(s, Control(0.0, 0.0), 0.1)
    assert s.x_m == pytest.approx(10.0) and s.y_m == pytest.approx(0.0)
    steer = 0.1
    s = EgoState(0.0, 0.0, 0.0, 5.0, steering_rad=steer)
    yaws = []
    for _ in range(50):
        s = model.propagate(s, Control(0.0, steer), 0.1)
        yaws.append(s.yaw_rad)
    # yaw rate of the kinematic bicycle: v tan(delta) / L
    assert np.diff(np.unwrap(yaws)).mean() / 0.1 == pytest.approx(5.0 * np.tan(steer) / PARAMS.wheelbase_m, rel=1e-6)


def test_bicycle_model_lags_commands_and_never_reverses() -> None:
    model = KinematicBicycleModel(PARAMS)
    s = EgoState(0.0, 0.0, 0.0, 1.0)
    s1 = model.propagate(s, Control(-8.0, 0.0), 0.1)
    assert -8.0 < s1.accel_mps2 < 0.0  # first-order lag (tau 0.2 s)
    for _ in range(30):
        s1 = model.propagate(s1, Control(-8.0, 0.0), 0.1)
    assert s1.speed_mps == 0.0
    x_stop = s1.x_m
    s1 = model.propagate(s1, Control(-8.0, 0.0), 0.1)
    assert s1.x_m == pytest.approx(x_stop)


def test_pure_pursuit_converges_to_an_offset_lane() -> None:
    model, ctrl = KinematicBicycleModel(PARAMS), PurePursuitController(PARAMS)
    plan = Trajectory(np.stack([np.linspace(0, 200, 50), np.full(50, 3.5)], axis=1), np.full(50, 8.0))
    s = EgoState(0.0, 0.0, 0.0, 5.0)
    for _ in range(150):
        s = model.propagate(s, ctrl.control(s, plan), 0.1)
    assert abs(s.y_m - 3.5) < 0.1 and abs(s.yaw_rad) < 0.02 and abs(s.speed_mps - 8.0) < 0.2


def test_polyline_projection_round_trip() -> None:
    line = Polyline(np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]]))
    s, lat = line.project(np.array([[5.0, 1.0], [11.0, 5.0]]))
    np.testing.assert_allclose(s, [5.0, 15.0])
    np.testing.assert_allclose(lat, [1.0, -1.0])
    np.testing.assert_allclose(line.position(15.0), [10.0, 5.0])
    assert line.heading(15.0) == pytest.approx(np.pi / 2)


def _car(aid: str, x: float, y: float, yaw: float = 0.0, speed: float = 0.0) -> ActorState:
    return ActorState(aid, "car", x, y, 0.8, yaw, speed, (4.5, 1.9, 1.6))


def test_collisions_are_found_on_substeps() -> None:
    # the ego passes straight through a thin crossing actor within one step: only sub-steps see it
    ego0 = EgoState(0.0, 0.0, 0.0, 60.0)
    ego1 = EgoState(6.0, 0.0, 0.0, 60.0)
    thin = ActorState("pole", "static", 4.45, 0.0, 1.0, 0.0, 0.0, (0.2, 0.2, 2.0))  # between the two footprints
    before = WorldState(0, 0.0, ego0, {"pole": thin})
    after = WorldState(1, 0.1, ego1, {"pole": thin})
    assert detect_collisions(before, after, PARAMS, substeps=1) == []
    events = detect_collisions(before, after, PARAMS, substeps=8)
    assert [e.actor_id for e in events] == ["pole"]
    assert events[0].contact == "front" and events[0].at_fault


def test_rear_end_by_another_actor_is_not_the_egos_fault() -> None:
    ego = EgoState(0.0, 0.0, 0.0, 0.0)
    before = WorldState(0, 0.0, ego, {"car": _car("car", -5.0, 0.0, speed=5.0)})
    after = WorldState(1, 0.1, ego, {"car": _car("car", -3.0, 0.0, speed=5.0)})
    events = detect_collisions(before, after, PARAMS)
    assert len(events) == 1 and events[0].contact == "rear" and not events[0].at_fault


def test_idm_brakes_for_a_stopped_leader_and_cruises_when_free() -> None:
    cfg = IDMConfig()
    assert idm_acceleration(10.0, 10.0, None, 0.0, cfg) == pytest.approx(0.0)
    assert idm_acceleration(5.0, 10.0, None, 0.0, cfg) > 0
    assert idm_acceleration(10.0, 10.0, 8.0, 10.0, cfg) < -5.0


def _record(xs, ys, yaws, speeds, dt=0.1) -> EpisodeRecord:
    lane = Lane("l0", np.array([[-100.0, 0.0], [300.0, 0.0]]), 3.5, 15.0)
    road = RoadMap((np.array([[-100.0, -5.0], [300.0, -5.0], [300.0, 5.0], [-100.0, 5.0]]),), (lane,))
    rec = EpisodeRecord(dt, PARAMS, Polyline(lane.centerline_m), road, 50.0, float(speeds[0]))
    for k, (x, y, yaw, v) in enumerate(zip(xs, ys, yaws, speeds)):
        rec.times_s.append(k * dt)
        rec.ego.append(np.array([x, y, yaw, v, 0.0, 0.0]))
        rec.actors.append([])
    return rec


def test_comfort_flags_harsh_braking_only() -> None:
    n = 40
    smooth = _record(np.arange(n) * 1.0, np.zeros(n), np.zeros(n), np.full(n, 10.0))
    assert Comfort().compute(smooth).score == 1.0
    speeds = np.concatenate([np.full(20, 10.0), np.maximum(10.0 - 0.9 * np.arange(1, 21), 0)])  # -9 m/s^2
    harsh = _record(np.cumsum(speeds) * 0.1, np.zeros(n), np.zeros(n), speeds)
    result = Comfort().compute(harsh)
    assert result.score == 0.0 and "lon_accel_mps2" in result.details["violated"]


def test_drivable_area_and_driving_direction() -> None:
    n = 30
    on_road = _record(np.arange(n) * 0.5, np.zeros(n), np.zeros(n), np.full(n, 5.0))
    assert DrivableAreaCompliance().compute(on_road).score == 1.0
    off = _record(np.arange(n) * 0.5, np.linspace(0, 8, n), np.zeros(n), np.full(n, 5.0))
    assert DrivableAreaCompliance().compute(off).score == 0.0
    wrong_way = _record(-np.arange(n) * 1.0, np.zeros(n), np.full(n, np.pi), np.full(n, 10.0))
    result = DrivingDirectionCompliance().compute(wrong_way)
    assert result.score == 0.0 and result.value > 6.0


def test_time_to_collision_and_neuroncap_score() -> None:
    ego = ActorState("ego", "car", 0.0, 0.0, 0.0, 0.0, 10.0, (5.0, 2.0, 1.7))
    assert time_to_collision_s(ego, [_car("a", 10.0, 0.0)]) == pytest.approx(0.6)
    assert time_to_collision_s(ego, [_car("a", 10.0, 6.0)]) == float("inf")
    rec = _record(np.arange(5.0), np.zeros(5), np.zeros(5), np.full(5, 10.0))
    assert neuroncap_score(rec) == 5.0
    from neurodrive.sim.collisions import CollisionEvent

    rec.collisions.append(CollisionEvent(0.3, "a", "car", 5.0, 0.0, 5.0, "front", True))
    assert neuroncap_score(rec) == pytest.approx(4.0 * (1 - 5.0 / 10.0))


@pytest.mark.parametrize(
    "text, field",
    [
        ("log: x\nduration_s: -1\n", "duration_s"),
        ("log: x\nstart: {frame: 0, pose: [0, 0, 0]}\n", "start"),
        ("log: x\nactors: {insert: [{id: a, asset: b}]}\n", "actors.insert[0]"),
        (
            "log: x\nactors: {insert: [{id: a, asset: b, trajectory: [[1, 0, 0, 0], [0, 1, 0, 0]]}]}\n",
            "actors.insert[0]",
        ),
        ("log: x\nstart: {pose: [0, .nan, 0]}\n", "start.pose[1]"),
        ("log: x\nunknown_field: 1\n", "unknown_field"),
        ("duration_s: 3\n", "<root>"),
    ],
)
def test_scenario_errors_name_file_and_field(tmp_path, text: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        Scenario.load(path)
    assert err.value.file == str(path) and err.value.field == field


def test_scenario_rejects_broken_yaml(tmp_path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("log: [unclosed\n")
    with pytest.raises(DataError, match="not valid YAML"):
        Scenario.load(path)


def _scenarionet(stopped_x_m: float = 40.0) -> dict:
    steps = 51
    t = np.arange(steps) * 0.1
    ego = np.stack([10.0 * t, np.zeros(steps), np.zeros(steps)], axis=1)  # 10 m/s along x
    lead = np.tile([stopped_x_m, 0.0, 0.0], (steps, 1))  # a car standing in the lane

    def state(pos: np.ndarray) -> dict:
        return {
            "position": pos,
            "heading": np.zeros(steps),
            "length": np.full(steps, 4.6),
            "width": np.full(steps, 1.9),
            "height": np.full(steps, 1.6),
            "valid": np.ones(steps, bool),
        }

    return {
        "id": "sn-test",
        "metadata": {"sdc_id": "ego"},
        "tracks": {"ego": {"type": "VEHICLE", "state": state(ego)}, "lead": {"type": "VEHICLE", "state": state(lead)}},
        "map_features": {
            "lane_1": {
                "type": "LANE_SURFACE_STREET",
                "polyline": [[-20.0, 0.0, 0.0], [120.0, 0.0, 0.0]],
                "speed_limit_kmh": 50.0,
            },
            "edge": {"type": "ROAD_EDGE_BOUNDARY", "polyline": [[-20.0, 3.0], [120.0, 3.0]]},
        },
    }


def test_scenarionet_import_runs_in_closed_loop() -> None:
    from neurodrive.agents import make_agent
    from neurodrive.app.replay import run_episode
    from neurodrive.sim.simulator import Simulator
    from neurodrive.sources.scenarionet import scenario_from_scenarionet

    scenario, log = scenario_from_scenarionet(_scenarionet(), duration_s=5.0)
    assert log.road_map.lanes[0].speed_limit_mps == pytest.approx(50 / 3.6)
    assert [t.actor_id for t in log.tracks] == ["lead"] and log.rig.lidar is None
    np.testing.assert_allclose(log.ego_poses[0, :2, 3], [-PARAMS.rear_axle_to_centre_m, 0.0])
    results = {}
    for agent in ("constant-velocity", "idm"):
        results[agent] = run_episode(Simulator(scenario, log), make_agent(agent))
    assert [c["actor_id"] for c in results["constant-velocity"]["collisions"]] == ["lead"]
    assert results["idm"]["collisions"] == [] and results["idm"]["metrics"]["drivable_area_compliance"]["score"] == 1.0


def test_scenarionet_import_names_bad_fields() -> None:
    from neurodrive.sources.scenarionet import log_from_scenarionet

    bad = _scenarionet()
    bad["metadata"]["sdc_id"] = "nobody"
    with pytest.raises(DataError, match="metadata.sdc_id"):
        log_from_scenarionet(bad, "s.pkl.json")
    bad = _scenarionet()
    bad["tracks"]["lead"]["state"]["heading"] = np.zeros(3)
    with pytest.raises(DataError) as err:
        log_from_scenarionet(bad, "s.json")
    assert err.value.field == "tracks.lead.state.heading"
    bad = _scenarionet()
    bad["tracks"]["ego"]["state"]["position"][4, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        log_from_scenarionet(bad, "s.json")
