"""``neurodrive demo``: generate a town log, reconstruct it, run a cut-in scenario in closed loop.

Each stage is skipped when its output is already complete, so an interrupted demo resumes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import yaml

from neurodrive.errors import DataError
from neurodrive.io_utils import atomic_write_bytes, atomic_write_text

Progress = Callable[[str, int, int], None]

CUT_IN_SCENARIO = {
    "name": "demo-cut-in",
    "start": {"frame": 0},
    "duration_s": 6.0,
    "seed": 0,
    "actors": {
        "behaviour": "idm",
        "insert": [
            {
                "id": "cutter",
                "asset": "vehicle_001",
                "trajectory": [
                    [0.0, 8.0, -1.75, 0.0],
                    [1.0, 13.0, -1.75, 0.0],
                    [2.5, 19.0, -5.25, -0.05],
                    [4.0, 24.0, -5.25, 0.0],
                    [8.0, 34.0, -5.25, 0.0],
                ],
            }
        ],
    },
    "sensors": {"cameras": ["front_left", "front", "front_right"], "lidar": True, "camera_scale": 0.75},
}


def _log_complete(path: Path) -> bool:
    from neurodrive.logs.io import load_log

    try:
        load_log(path)
        return True
    except (DataError, FileNotFoundError):
        return False


def _scene_current(scene_dir: Path) -> bool:
    from neurodrive.scene.meta import SceneMeta

    try:
        SceneMeta.read(scene_dir)
    except DataError:
        return False
    return True


def _silent(stage: str, done: int, total: int) -> None:
    """A progress callback that shows nothing."""


def run_demo(
    out: str | Path,
    preset: str = "town-small",
    agents: tuple[str, ...] = ("lidar-aeb", "constant-velocity"),
    progress: Progress | None = None,
    log_only: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Writes OUT/log, OUT/scene, OUT/scenario.yaml, OUT/replay/<agent>/{video.mp4, metrics.json, plot.png}
    and OUT/report.md; returns the metrics per agent."""
    from neurodrive.app.replay import replay
    from neurodrive.logs.io import load_log
    from neurodrive.reconstruct.pipeline import ReconConfig, reconstruct
    from neurodrive.sources.synthetic.generate import generate_log
    from neurodrive.sources.synthetic.presets import get_preset

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log_dir, scene_dir = out / "log", out / "scene"
    step: Progress = progress or _silent
    if _log_complete(log_dir):
        log_only(f"log: reusing {log_dir}")
    else:
        cfg = get_preset(preset)
        generate_log(cfg, log_dir, overwrite=True, progress=lambda d, t: step(f"1/3 generating {cfg.name}", d, t))
    if _scene_current(scene_dir):
        log_only(f"scene: reusing {scene_dir}")
    else:  # missing, unfinished (resumes from its checkpoints) or of an older scene format
        reconstruct(
            load_log(log_dir), scene_dir, ReconConfig(), lambda stage, d, t: step(f"2/3 {stage}", d, t), overwrite=True
        )
    scenario = dict(CUT_IN_SCENARIO, scene="scene")
    scenario_path = out / "scenario.yaml"
    atomic_write_bytes(scenario_path, yaml.safe_dump(scenario, sort_keys=False).encode())
    results = {}
    for agent in agents:
        results[agent] = replay(
            scenario_path,
            agent,
            out / "replay" / agent,
            video=True,
            overwrite=True,
            progress=functools.partial(step, f"3/3 closed loop: {agent}"),
        )
    atomic_write_text(out / "report.md", report(results))
    return results


def report(results: dict[str, dict]) -> str:
    lines = [
        "# neurodrive demo: cut-in scenario",
        "",
        "| agent | collisions | NeuroNCAP (of 5) | nuPlan-style score | progress (m) | min TTC (s) | video |",
        "|---|---|---|---|---|---|---|",
    ]
    for agent, m in results.items():
        ttc = "-" if m["min_time_to_collision_s"] is None else f"{m['min_time_to_collision_s']:.1f}"
        hits = ", ".join(f"{c['actor_id']} at {c['relative_speed_mps']:.1f} m/s" for c in m["collisions"]) or "none"
        lines.append(
            f"| {agent} | {hits} | {m['neuroncap_score']:.2f} | {m['nuplan_score']:.3f} | "
            f"{m['progress_m']:.1f} | {ttc} | "
            f"replay/{agent}/video.mp4 |"
        )
    lines += ["", "Metric definitions: docs/metrics.md. Per-metric details: replay/<agent>/metrics.json."]
    return "\n".join(lines) + "\n"
