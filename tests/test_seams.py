"""The extension seams: metric registry and score definitions, reward terms, observation / action
types, ray-caster selection, agent-facing types without the renderer."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from neurodrive.envs.rewards import RewardConfig
from neurodrive.sim.metrics import METRICS, NUPLAN_SCORE, Metric, MetricResult, ScoreDefinition, register_metric


def test_metric_registry_and_score_definitions(tiny_log_dir: Path) -> None:
    from neurodrive.agents import make_agent
    from neurodrive.app.replay import run_episode
    from neurodrive.scenarios.scenario import Scenario
    from neurodrive.sim.metrics import evaluate_episode
    from neurodrive.sim.simulator import Simulator

    assert set(NUPLAN_SCORE.metric_names()) <= set(METRICS)
    with pytest.raises(ValueError, match="unknown metric"):
        ScoreDefinition(multipliers=("no_such_metric",), weights=(("ego_progress", 1.0),))
    with pytest.raises(ValueError, match="unique name"):

        @register_metric
        class Duplicate(Metric):
            name = NUPLAN_SCORE.multipliers[0]

            def compute(self, record) -> MetricResult:
                return MetricResult(self.name, 1.0, 0.0)

    sim = Simulator.from_scenario(Scenario.parse({"log": str(tiny_log_dir), "duration_s": 1.0}), render_sensors=False)
    run_episode(sim, make_agent("expert"))
    weighted = NUPLAN_SCORE.weights[0][0]
    only = ScoreDefinition(multipliers=(), weights=((weighted, 1.0),))
    result = evaluate_episode(sim.record, only)
    assert list(result["metrics"]) == [weighted]
    assert result["nuplan_score"] == pytest.approx(result["metrics"][weighted]["score"])


def test_env_reports_each_weighted_reward_term(tiny_log_dir: Path) -> None:
    import gymnasium as gym

    import neurodrive  # noqa: F401 - registers the env
    from neurodrive.envs.closed_loop import EnvConfig

    env = gym.make(
        "neurodrive/ClosedLoop-v0", log=str(tiny_log_dir), duration_s=1.0, config=EnvConfig(action_type="waypoints")
    )
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.tile([[5.0, 0.0]], (5, 1)).astype(np.float32) * np.arange(1, 6)[:, None])
    assert set(info["rewards"]) == {f.name for f in fields(RewardConfig)}
    assert reward == pytest.approx(sum(info["rewards"].values()))
    assert info["rewards"]["progress_per_m"] > 0  # driving along the route
    env.close()


def test_caster_backend_is_chosen_by_argument_and_overridden_by_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from neurodrive.raycast import ENV_VAR, select_backend

    monkeypatch.delenv(ENV_VAR, raising=False)
    assert select_backend("open3d").name == "open3d"
    with pytest.raises(ValueError, match="caster="):
        select_backend("cuda")
    monkeypatch.setenv(ENV_VAR, "open3d")
    assert select_backend("embree").name == "open3d"  # the variable overrides the argument


def test_agents_import_without_the_renderer() -> None:
    code = (
        "import sys, neurodrive.agents; "
        "bad = [m for m in sys.modules if m.startswith(('neurodrive.render', 'neurodrive.raycast', 'open3d'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sources_registry_writes_a_log(tmp_path: Path) -> None:
    from neurodrive.logs import load_log
    from neurodrive.sources import available_sources, get_source

    assert "synthetic" in available_sources()
    out = get_source("synthetic").write_log(None, tmp_path / "log", preset="tiny", frames=3)
    assert load_log(out).num_frames == 3
    with pytest.raises(KeyError, match="available: .*synthetic"):
        get_source("kitti-raw-missing")
