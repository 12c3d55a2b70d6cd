"""Running an agent through a scenario and recording it: mp4 (cameras + LiDAR bird's-eye view),
metrics.json and a plot. Used by ``neurodrive replay`` / ``neurodrive eval`` and the demo."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from neurodrive.agents import Agent, make_agent
from neurodrive.errors import DataError
from neurodrive.io_utils import atomic_write_bytes, atomic_write_json
from neurodrive.scenarios.scenario import Scenario
from neurodrive.sim.simulator import Observation, SimConfig, Simulator
from neurodrive.viz.frames import compose_frame
from neurodrive.viz.plots import write_plot


def json_safe(value):
    """Infinite / NaN floats become None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return json_safe(value.item())
    return value


def run_episode(
    sim: Simulator,
    agent: Agent,
    seed: int | None = None,
    on_frame: Callable[[Observation], None] | None = None,
) -> dict:
    """Runs one episode to its end; returns the metrics."""
    sim.set_sensors(sim.scene is not None and (agent.needs_sensors or on_frame is not None))
    agent.reset(sim.agent_context())
    obs = sim.reset(seed)
    if on_frame:
        on_frame(obs)
    while not sim.done:
        obs, _ = sim.step(agent.act(obs))
        if on_frame:
            on_frame(obs)
    return json_safe(sim.metrics())


def _run_and_record(
    sim: Simulator,
    agent: Agent,
    seed: int | None,
    writer,
    rerun_path: str | Path | None,
    name: str,
    progress: Callable[[int, int], None] | None,
) -> tuple[dict, Path | None]:
    """Runs the episode, handing each frame to the video ``writer`` (closed here) and to a Rerun
    recording of ``rerun_path``; returns the metrics and the finished recording's partial file (the
    caller renames it into place with the rest of the result), None without one."""
    from contextlib import ExitStack

    total = int(round(sim.scenario.duration_s / sim.config.dt_s))
    recorder = None
    partial = None

    def on_frame(obs: Observation) -> None:
        if writer is not None:
            writer.append_data(compose_frame(sim, obs))
        if recorder is not None:
            recorder.on_frame(sim, obs)
        if progress:
            progress(obs.step, total)

    with ExitStack() as stack:
        if writer is not None:
            stack.callback(writer.close)
        if rerun_path is not None:
            from neurodrive.interop.rerun_recording import EpisodeRecorder, RerunRecording

            recording = stack.enter_context(RerunRecording(rerun_path, name, publish_on_exit=False))
            partial = recording.partial_path
            recorder = EpisodeRecorder(recording, sim)
        metrics = run_episode(sim, agent, seed, on_frame)
        if recorder is not None:
            recorder.finish(sim)
        if progress:
            progress(total, total)  # an episode may end early (collision, goal)
    return metrics, partial


def scenario_inputs(scenario_path: Path, scenario: Scenario, sim: Simulator) -> list[tuple[str, Path]]:
    """What a replay reads: the scenario file, its scene folder and the log (no output may be, hold
    or lie inside one of them)."""
    inputs = [("the scenario", scenario_path), ("the log", sim.log.root)]
    if scenario.scene is not None:
        inputs.append(("the scene", scenario.resolve_path(scenario.scene)))
    return inputs


def replay(
    scenario_path: str | Path,
    agent_name: str,
    out_dir: str | Path,
    video: bool = True,
    seed: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
    rerun_path: str | Path | None = None,
) -> dict:
    """``neurodrive replay``: writes OUT/video.mp4, OUT/metrics.json and OUT/plot.png (and a Rerun
    recording at ``rerun_path``).

    An earlier result in OUT is kept unless ``overwrite``; an interrupted run leaves no partial file.
    """
    from neurodrive.app.evaluation import run_key
    from neurodrive.io_utils import check_apart, check_output

    scenario_path, out = Path(scenario_path), Path(out_dir)
    scenario = Scenario.load(scenario_path)
    agent = make_agent(agent_name)
    if out.exists() and not out.is_dir():
        raise DataError(out, None, "is a file, expected an output folder")
    if (out / "metrics.json").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a replay result (pass --overwrite to replace it)")
    if rerun_path is not None:
        check_output(rerun_path, overwrite, "file")
    sim = Simulator.from_scenario(
        scenario,
        scenario_path,
        config=SimConfig(),
        render_sensors=video or agent.needs_sensors or rerun_path is not None,
    )
    inputs = scenario_inputs(scenario_path, scenario, sim)
    check_apart(out, inputs)
    if rerun_path is not None:
        check_apart(rerun_path, inputs)
    out.mkdir(parents=True, exist_ok=True)
    # every file of the result is written under a partial name and renamed into place together,
    # metrics.json last: an interruption at any point leaves the previous result as it was
    staged: list[tuple[Path, Path]] = []  # (partial file, final name)
    try:
        writer = None
        if video and sim.scene is not None:
            staged.append((out / ".video.partial.mp4", out / "video.mp4"))
            writer = imageio.get_writer(
                staged[-1][0], format="FFMPEG", fps=round(1 / sim.config.dt_s), codec="libx264", macro_block_size=1
            )
        metrics, recording = _run_and_record(
            sim, agent, seed, writer, rerun_path, f"{scenario.name} - {agent_name}", progress
        )
        if recording is not None:
            staged.append((recording, Path(rerun_path)))
        metrics = {
            "scenario": scenario.name,
            "agent": agent_name,
            "seed": scenario.seed if seed is None else seed,
            "map": "log map"
            if sim.log.has_map
            else "none: route and off-road checks use a corridor around the logged ego path",
            **metrics,
            "run_key": run_key(scenario_path, agent_name, video, rerun=rerun_path is not None),
        }
        staged.append((out / ".plot.partial.png", out / "plot.png"))
        write_plot(sim, staged[-1][0], agent_name)
        staged.append((out / ".scenario.partial.yaml", out / "scenario.yaml"))
        atomic_write_bytes(staged[-1][0], scenario.dump_yaml().encode())
        (out / "metrics.json").unlink(missing_ok=True)  # the old result stops being complete first
        if not video or sim.scene is None:
            (out / "video.mp4").unlink(missing_ok=True)  # an old video never stands beside new metrics
        for partial, final in staged:
            os.replace(partial, final)
        atomic_write_json(out / "metrics.json", metrics)  # last: marks the result complete
    except BaseException:
        for partial, _ in staged:
            partial.unlink(missing_ok=True)
        raise
    return metrics
