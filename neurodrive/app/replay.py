"""Running an agent through a scenario and recording it: mp4 (cameras + LiDAR bird's-eye view),
metrics.json and a plot. Used by ``neurodrive replay`` / ``neurodrive eval`` and the demo."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw

from neurodrive.agents import Agent, make_agent
from neurodrive.errors import DataError
from neurodrive.geometry import transform_points
from neurodrive.io_utils import atomic_write_bytes, atomic_write_json
from neurodrive.scenarios.scenario import Scenario
from neurodrive.sim.simulator import Observation, SimConfig, Simulator
from neurodrive.sim.state import box_corners_xy


@dataclass(frozen=True)
class BevStyle:
    size_px: int = 360
    range_m: float = 40.0  # metres from the ego to the top edge
    ego_row_share: float = 0.7  # the ego sits this far down the image


class BevProjection:
    """World xy <-> pixels of an ego-centred bird's-eye view (ego heading up)."""

    def __init__(self, ego_x_m: float, ego_y_m: float, ego_yaw_rad: float, style: BevStyle = BevStyle()) -> None:
        self.x, self.y, self.style = ego_x_m, ego_y_m, style
        self.c, self.s = math.cos(ego_yaw_rad), math.sin(ego_yaw_rad)
        self.scale = style.size_px * style.ego_row_share / style.range_m  # px per m

    def to_px(self, xy: np.ndarray) -> list[tuple[float, float]]:
        rel = np.asarray(xy, float).reshape(-1, 2) - [self.x, self.y]
        fwd = rel[:, 0] * self.c + rel[:, 1] * self.s
        left = -rel[:, 0] * self.s + rel[:, 1] * self.c
        size = self.style.size_px
        return list(zip(size / 2 - left * self.scale, size * self.style.ego_row_share - fwd * self.scale))

    def to_world(self, u_px: float, v_px: float) -> np.ndarray:
        size = self.style.size_px
        left = (size / 2 - u_px) / self.scale
        fwd = (size * self.style.ego_row_share - v_px) / self.scale
        return np.array([self.x + fwd * self.c - left * self.s, self.y + fwd * self.s + left * self.c])


def bird_eye_view(
    sim: Simulator, observation: Observation, style: BevStyle = BevStyle(), selected: str | None = None
) -> np.ndarray:
    """(S, S, 3) uint8: drivable area, lanes, route, LiDAR returns, actor boxes and the ego, ego heading up."""
    s = style.size_px
    ego = observation.ego
    to_px = BevProjection(ego.x_m, ego.y_m, ego.yaw_rad, style).to_px
    img = Image.new("RGB", (s, s), (24, 24, 28))
    draw = ImageDraw.Draw(img)
    for area in sim.log.road_map.drivable_areas:
        draw.polygon(to_px(area), fill=(60, 60, 66))
    for lane in sim.log.road_map.lanes:
        draw.line(to_px(lane.centerline_m), fill=(95, 95, 105), width=1)
    route_s = float(sim.route.project(np.array([ego.x_m, ego.y_m]))[0])
    draw.line(to_px(sim.route.position(route_s + np.linspace(0, 60, 31))), fill=(70, 170, 90), width=3)
    sensors = observation.sensors
    if sensors is not None and sensors.lidar is not None and sim.rig is not None:
        pts = transform_points(ego.pose() @ sim.rig.lidar.T_ego_lidar, sensors.lidar.sweep.xyz_m.astype(float))
        px = np.array(to_px(pts[:, :2])).reshape(-1, 2)
        inside = (px[:, 0] >= 0) & (px[:, 0] < s) & (px[:, 1] >= 0) & (px[:, 1] < s)
        value = np.clip(60 + 195 * sensors.lidar.sweep.intensity[inside], 0, 255).astype(np.uint8)
        arr = np.asarray(img).copy()
        arr[px[inside, 1].astype(int), px[inside, 0].astype(int)] = np.stack(
            [value, value, np.full_like(value, 255)], axis=1
        )
        img = Image.fromarray(arr)
        draw = ImageDraw.Draw(img)
    hit = {c.actor_id for c in sim.record.collisions} if sim.record else set()
    for a in observation.actors.values():
        corners = box_corners_xy(a.x_m, a.y_m, a.yaw_rad, a.size_m[0], a.size_m[1])[0]
        colour = (230, 60, 60) if a.actor_id in hit else ((255, 255, 90) if a.actor_id == selected else (90, 160, 255))
        draw.polygon(to_px(corners), outline=colour, width=3 if a.actor_id == selected else 2)
    p = sim.params
    cx, cy = ego.centre_xy(p)
    draw.polygon(to_px(box_corners_xy(cx, cy, ego.yaw_rad, p.length_m, p.width_m)[0]), fill=(250, 160, 40))
    return np.asarray(img)


def driver_order(names_and_poses: list[tuple[str, np.ndarray]]) -> list[str]:
    """Camera names ordered as a driver sees them: left to right by the azimuth of the optical axis
    (T_ego_camera's z axis) in the ego frame (x forward, y left)."""

    def azimuth(T: np.ndarray) -> float:
        return math.atan2(T[1, 2], T[0, 2])

    return [n for n, _ in sorted(names_and_poses, key=lambda item: -azimuth(item[1]))]


def compose_frame(
    sim: Simulator, observation: Observation, height_px: int = 360, selected: str | None = None
) -> np.ndarray:
    """Camera images side by side as a driver sees them (left | front | right, each labelled), then
    the bird's-eye view (the last ``height_px`` columns), with a status line."""
    panels, labels = [], []
    if observation.sensors is not None:
        rig = {c.name: c for c in sim.rig.cameras} if sim.rig is not None else {}
        cams = observation.sensors.cameras
        order = driver_order([(n, rig[n].T_ego_camera) for n in cams if n in rig]) + [n for n in cams if n not in rig]
        for name in order:
            im = Image.fromarray(cams[name].rgb)
            panels.append(
                np.asarray(
                    im.resize((max(1, round(im.width * height_px / im.height)), height_px), Image.Resampling.BILINEAR)
                )
            )
            labels.append(name)
    panels.append(bird_eye_view(sim, observation, BevStyle(size_px=height_px), selected))
    labels.append("bird's-eye view (LiDAR)")
    lefts = np.cumsum([0] + [p.shape[1] for p in panels])
    frame = np.concatenate(panels, axis=1)
    cut = frame.shape[1] % 2
    frame = frame[:, cut:]  # even width for the H.264 encoder (the bird view stays last)
    img = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(img)
    for left, label in zip(lefts[:-1], labels):
        x = max(int(left) - cut, 0) + 6
        draw.rectangle((x - 3, height_px - 18, x + 7 * len(label), height_px - 3), fill=(0, 0, 0))
        draw.text((x, height_px - 16), label, fill=(255, 255, 255))
    draw.text(
        (6, 4),
        f"t={observation.time_s:4.1f}s  v={observation.ego.speed_mps:4.1f} m/s  "
        f"collisions={len(sim.record.collisions)}",
        fill=(255, 255, 255),
    )
    return np.asarray(img)


def plot_figure(sim: Simulator, agent_name: str = ""):
    """A matplotlib figure of speed, acceleration and progress over time, collisions marked and
    named in a legend, titled with the scenario and the agent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = sim.record
    t = np.array(rec.times_s)
    e = rec.ego_array()
    fig, axes = plt.subplots(3, 1, figsize=(7, 6), sharex=True)
    axes[0].plot(t, e[:, 3], label="ego speed")
    axes[0].set_ylabel("speed (m/s)")
    axes[1].plot(t, e[:, 4])
    axes[1].set_ylabel("accel (m/s²)")
    axes[2].plot(t, rec.progress_m())
    axes[2].set_ylabel("progress (m)")
    axes[2].set_xlabel("time (s)")
    for c in rec.collisions:
        for ax in axes:
            ax.axvline(
                c.time_s, color="red", linestyle="--", label=f"collision with {c.actor_id}" if ax is axes[0] else None
            )
    axes[0].legend(loc="best", fontsize="small")
    fig.suptitle(f"{sim.scenario.name} - agent {agent_name}" if agent_name else sim.scenario.name)
    fig.tight_layout()
    return fig


def write_plot(sim: Simulator, path: Path, agent_name: str = "") -> None:
    """``plot_figure`` as a PNG, written atomically with the same file mode as every other output."""
    import io

    import matplotlib.pyplot as plt

    fig = plot_figure(sim, agent_name)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


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


def replay(
    scenario_path: str | Path,
    agent_name: str,
    out_dir: str | Path,
    video: bool = True,
    seed: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> dict:
    """``neurodrive replay``: writes OUT/video.mp4, OUT/metrics.json and OUT/plot.png.

    An earlier result in OUT is kept unless ``overwrite``; an interrupted run leaves no partial file.
    """
    from neurodrive.app.evaluation import run_key

    scenario_path, out = Path(scenario_path), Path(out_dir)
    scenario = Scenario.load(scenario_path)
    agent = make_agent(agent_name)
    if out.exists() and not out.is_dir():
        raise DataError(out, None, "is a file, expected an output folder")
    if (out / "metrics.json").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a replay result (pass --overwrite to replace it)")
    sim = Simulator.from_scenario(
        scenario, scenario_path, config=SimConfig(), render_sensors=video or agent.needs_sensors
    )
    out.mkdir(parents=True, exist_ok=True)
    total = int(round(scenario.duration_s / sim.config.dt_s))
    writer, tmp_video = None, None
    if video and sim.scene is not None:
        tmp_video = out / ".video.partial.mp4"
        writer = imageio.get_writer(
            tmp_video, format="FFMPEG", fps=round(1 / sim.config.dt_s), codec="libx264", macro_block_size=1
        )

    def on_frame(obs: Observation) -> None:
        if writer is not None:
            writer.append_data(compose_frame(sim, obs))
        if progress:
            progress(obs.step, total)

    try:
        try:
            metrics = run_episode(sim, agent, seed, on_frame)
            if progress:
                progress(total, total)  # an episode may end early (collision, goal)
        finally:
            if writer is not None:
                writer.close()
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
        **metrics,
        "run_key": run_key(scenario_path, agent_name, video),
    }
    write_plot(sim, out / "plot.png", agent_name)
    atomic_write_bytes(out / "scenario.yaml", scenario.dump_yaml().encode())
    atomic_write_json(out / "metrics.json", metrics)  # last: marks the result complete
    return metrics
