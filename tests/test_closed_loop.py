"""Closed-loop episodes on the tiny log / scene: determinism, expert replay, cut-in, IDM actors, replay + eval."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v2 as imageio
import pytest
import yaml
from typer.testing import CliRunner

from neurodrive.agents import make_agent
from neurodrive.app.cli import app
from neurodrive.app.evaluation import evaluate_scenarios
from neurodrive.app.replay import run_episode
from neurodrive.errors import DataError
from neurodrive.scenarios.scenario import Scenario
from neurodrive.sim.simulator import Simulator

# the tiny log's ego starts at (-12, -5.25) heading east at ~8.7 m/s; vehicle_001 of the scene is inserted
CUT_IN = {
    "id": "cutter",
    "asset": "vehicle_001",
    "trajectory": [
        [0.0, 6.0, -1.75, 0.0],
        [1.0, 11.0, -1.75, 0.0],
        [2.5, 17.0, -5.25, -0.05],
        [4.0, 22.0, -5.25, 0.0],
        [8.0, 32.0, -5.25, 0.0],
    ],
}


def write_scenario(folder: Path, name: str, **fields) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **fields}))
    return path


def run(path: Path, agent: str, seed: int | None = None) -> tuple[dict, Simulator]:
    scenario = Scenario.load(path)
    ag = make_agent(agent)
    sim = Simulator.from_scenario(scenario, path, render_sensors=ag.needs_sensors)
    return run_episode(sim, ag, seed), sim


def test_expert_log_replay_has_no_collision(tiny_log_dir: Path, tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "replay", log=str(tiny_log_dir), duration_s=3.0)
    metrics, sim = run(path, "expert")
    assert metrics["collisions"] == []
    assert metrics["metrics"]["no_at_fault_collisions"]["score"] == 1.0
    assert metrics["metrics"]["drivable_area_compliance"]["score"] == 1.0
    assert metrics["metrics"]["ego_progress"]["score"] > 0.95
    assert metrics["nuplan_score"] > 0.9 and metrics["neuroncap_score"] == 5.0
    assert len(sim.record.times_s) == 31  # 10 Hz


def test_same_seed_same_metrics_and_jitter_follows_the_seed(tiny_log_dir: Path, tmp_path: Path) -> None:
    jittered = dict(CUT_IN, jitter={"time_s": 0.5, "x_m": 2.0, "speed_scale": 0.2})
    path = write_scenario(
        tmp_path, "jitter", log=str(tiny_log_dir), duration_s=4.0, actors={"behaviour": "idm", "insert": [jittered]}
    )
    a, _ = run(path, "idm", seed=3)
    b, _ = run(path, "idm", seed=3)
    c, _ = run(path, "idm", seed=4)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert json.dumps(a, sort_keys=True) != json.dumps(c, sort_keys=True)


def test_cut_in_hits_constant_velocity_but_not_lidar_emergency_braking(tiny_scene_dir: Path, tmp_path: Path) -> None:
    path = write_scenario(
        tmp_path,
        "cut_in",
        scene=str(tiny_scene_dir),
        duration_s=5.0,
        sensors={"cameras": [], "lidar": True},
        actors={"insert": [CUT_IN]},
    )
    cv, _ = run(path, "constant-velocity")
    assert [c["actor_id"] for c in cv["collisions"]] == ["cutter"]
    assert cv["metrics"]["no_at_fault_collisions"]["score"] == 0.0 and cv["nuplan_score"] == 0.0
    assert cv["neuroncap_score"] < 4.0
    aeb, sim = run(path, "lidar-aeb")
    assert aeb["collisions"] == [] and aeb["neuroncap_score"] == 5.0
    assert min(sim.record.ego_array()[:, 3]) < 3.0  # it braked, seeing the cutter only in its rendered LiDAR


def test_idm_actors_stop_for_a_standing_ego_log_replay_does_not(tiny_log_dir: Path, tmp_path: Path) -> None:
    # the ego stands in lane main_east_0 ahead of vehicle_001 (logged at x=-26 driving east)
    fields = dict(log=str(tiny_log_dir), duration_s=5.0, start={"pose": [-12.0, -1.75, 0.0], "speed_mps": 0.0})
    replayed, _ = run(
        write_scenario(tmp_path, "log_actors", **fields, actors={"behaviour": "log"}), "constant-velocity"
    )
    assert "vehicle_001" in [c["actor_id"] for c in replayed["collisions"]]
    assert not replayed["collisions"][0]["at_fault"]  # rear-ended while standing
    reactive, _ = run(
        write_scenario(tmp_path, "idm_actors", **fields, actors={"behaviour": "idm"}), "constant-velocity"
    )
    assert reactive["collisions"] == []


def test_scenario_ids_are_checked_against_the_log(tiny_log_dir: Path, tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "bad", log=str(tiny_log_dir), actors={"remove": ["vehicle_000", "nobody"]})
    with pytest.raises(DataError) as err:
        Simulator.from_scenario(Scenario.load(path), path)
    assert err.value.field == "actors.remove[1]" and "nobody" in str(err.value)
    path = write_scenario(tmp_path, "bad_lane", log=str(tiny_log_dir), route={"lanes": ["nowhere"]})
    with pytest.raises(DataError, match="route.lanes"):
        Simulator.from_scenario(Scenario.load(path), path)
    with pytest.raises(KeyError, match="available"):
        make_agent("no-such-agent")


def test_replay_cli_writes_video_metrics_and_plot(tiny_scene_dir: Path, tmp_path: Path) -> None:
    path = write_scenario(
        tmp_path,
        "short",
        scene=str(tiny_scene_dir),
        duration_s=1.0,
        actors={"remove": ["vehicle_000"], "insert": [CUT_IN]},
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["replay", str(path), "--agent", "idm", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["agent"] == "idm" and "nuplan_score" in metrics
    frames = imageio.mimread(out / "video.mp4")
    assert len(frames) == 11 and frames[0].shape[0] == 360
    assert (out / "plot.png").stat().st_size > 1000
    bad = CliRunner().invoke(app, ["replay", str(tmp_path / "missing.yaml"), "--out", str(out)])
    assert bad.exit_code == 2 and "missing file" in bad.output


def test_eval_runs_a_folder_in_parallel_and_resumes(tiny_log_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    for k in range(2):
        write_scenario(folder, f"s{k}", log=str(tiny_log_dir), duration_s=1.0 + k, seed=k)
    (folder / "broken.yaml").write_text("duration_s: [1\n")
    out = tmp_path / "eval"
    summary = evaluate_scenarios(folder, "expert", out, workers=2)
    assert summary["scenarios"] == 3 and summary["failed"] == ["broken"]
    assert summary["collision_rate"] == 0.0 and (out / "s1" / "metrics.json").is_file()
    before = (out / "s0" / "metrics.json").stat().st_mtime_ns
    evaluate_scenarios(folder, "expert", out, workers=1)
    assert (out / "s0" / "metrics.json").stat().st_mtime_ns == before  # kept, not re-run


def test_eval_on_a_local_ray_instance(tiny_log_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    for k in range(2):
        write_scenario(folder, f"r{k}", log=str(tiny_log_dir), duration_s=1.0, seed=k)
    summary = evaluate_scenarios(folder, "idm", tmp_path / "ray_eval", workers=2, ray_address="local")
    assert (
        summary["scenarios"] == 2
        and summary["failed"] == []
        and (tmp_path / "ray_eval" / "r1" / "metrics.json").is_file()
    )
    local, _ = run(folder / "r0.yaml", "idm")
    assert summary["results"]["r0"]["nuplan_score"] == local["nuplan_score"]  # same result as in this process
