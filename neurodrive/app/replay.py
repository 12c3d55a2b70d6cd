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
) -> dict:
    """Runs the episode, handing each frame to the video ``writer`` (closed here) and to a Rerun
    recording at ``rerun_path`` (kept only when the episode completes); returns the metrics."""
    from contextlib import ExitStack

    total = int(round(sim.scenario.duration_s / sim.config.dt_s))
    recorder = None

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

            recorder = EpisodeRecorder(stack.enter_context(RerunRecording(rerun_path, name)), sim)
        metrics = run_episode(sim, agent, seed, on_frame)
        if recorder is not None:
            recorder.finish(sim)
        if progress:
            progress(total, total)  # an episode may end early (collision, goal)
    return metrics


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
    from neurodrive.io_utils import check_output

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
    out.mkdir(parents=True, exist_ok=True)
    writer, tmp_video = None, None
    if video and sim.scene is not None:
        tmp_video = out / ".video.partial.mp4"
        writer = imageio.get_writer(
            tmp_video, format="FFMPEG", fps=round(1 / sim.config.dt_s), codec="libx264", macro_block_size=1
        )

    try:
        metrics = _run_and_record(sim, agent, seed, writer, rerun_path, f"{scenario.name} - {agent_name}", progress)
    except BaseException:
        if tmp_video is not None:
            tmp_video.unlink(missing_ok=True)
        raise
    if tmp_video is not None:
        os.replace(tmp_video, out / "video.mp4")
    else:
        (out / "video.mp4").unlink(missing_ok=True)  # an old video never stands beside new metrics
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
    write_plot(sim, out / "plot.png", agent_name)
    atomic_write_bytes(out / "scenario.yaml", scenario.dump_yaml().encode())
    atomic_write_json(out / "metrics.json", metrics)  # last: marks the result complete
    return metrics
