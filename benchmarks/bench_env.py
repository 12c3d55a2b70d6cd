"""Benchmark: Gymnasium env steps/s with one 640-pixel-wide camera + the LiDAR, and with the
whole rig (every camera and every LiDAR) at a camera scale (``--rig-scale``: PandaSet's six 1920x1080
cameras and two LiDARs).

Target: >= 20 steps/s on 2 cores with one camera. Also prints the simulator alone (no sensors) and the
renderer alone, measured in the same run, to show where the time goes.
``--viewer`` also times the headless viewer on the scene (simulation step, rendering and drawing;
its default camera scale).
Run: python benchmarks/bench_env.py SCENE [--steps 100] [--rig-scale 0.25] [--viewer]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scene", type=Path)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rig-scale", type=float, default=None, help="also run the whole rig at this camera scale")
    parser.add_argument("--viewer", action="store_true", help="also time the headless viewer")
    args = parser.parse_args()
    import gymnasium as gym

    import neurodrive  # noqa: F401
    from neurodrive.logs.io import load_log
    from neurodrive.reconstruct.evaluate import front_camera
    from neurodrive.scene.model import SceneModel

    model = SceneModel.load(args.scene)
    log = load_log(model.meta.log.path)
    front_name = front_camera(log)
    front = log.rig.camera(front_name)
    scale = 640 / front.width_px
    lidar = log.rig.lidar
    sensors = {"cameras": [front_name], "lidar": True, "camera_scale": scale}
    duration = args.steps * 0.1 + 1.0

    def steps_per_s(env) -> float:
        env.reset(seed=0)
        action = np.zeros(env.action_space.shape, np.float32)
        env.step(action)  # warm-up (builds the ray-casting structures)
        start = time.perf_counter()
        for _ in range(args.steps):
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset(seed=0)
        return args.steps / (time.perf_counter() - start)

    env = gym.make("neurodrive/ClosedLoop-v0", scene=args.scene, duration_s=duration, sensors=sensors)
    obs_space = env.observation_space
    full = steps_per_s(env)
    env_no_sensors = gym.make("neurodrive/ClosedLoop-v0", log=model.meta.log.path, duration_s=duration)
    bare = steps_per_s(env_no_sensors)
    sim = env.unwrapped.sim
    env.reset(seed=0)  # render where the episodes start
    render_s = []
    for _ in range(10):
        start = time.perf_counter()
        sim.render()
        render_s.append(time.perf_counter() - start)
    cam = obs_space[f"camera_{front_name}"].shape
    print(
        f"observation: camera {cam[1]}x{cam[0]}, LiDAR {lidar.num_beams}x{lidar.azimuth_bins} range image, "
        "ego state, route"
    )
    print(f"env steps/s with sensors:      {full:6.1f}   target >= 20  {'met' if full >= 20 else 'NOT met'}")
    print(f"env steps/s without sensors:   {bare:6.1f}   (dynamics, actors, collisions, observation)")
    print(
        f"rendering alone:               {1 / np.median(render_s):6.1f} frames/s ({np.median(render_s) * 1000:.0f} ms)"
    )
    if args.rig_scale is not None:
        rig = {"lidar": True, "camera_scale": args.rig_scale}
        whole = gym.make("neurodrive/ClosedLoop-v0", scene=args.scene, duration_s=duration, sensors=rig)
        pixels = sum(c.width_px * c.height_px for c in log.rig.cameras) * args.rig_scale**2
        print(
            f"env steps/s with the whole rig: {steps_per_s(whole):6.1f}   ({len(log.rig.cameras)} cameras at scale "
            f"{args.rig_scale:g}: {pixels / 1e6:.2f} Mpx, {len(log.rig.lidars)} LiDARs)"
        )
    if args.viewer:
        print(viewer_frames_per_s(args.scene))


def viewer_frames_per_s(scene: Path, frames: int = 15) -> str:
    """The headless viewer's frames/s on ``scene`` (its default camera scale), after 3 warm-up frames."""
    import tempfile

    from neurodrive.app.viewer import Viewer, headless

    headless()
    with tempfile.TemporaryDirectory() as tmp:
        viewer = Viewer(scene, Path(tmp) / "edited.yaml", max_size_px=(1600, 900))
        try:
            viewer.run(max_frames=3)
            start = time.perf_counter()
            viewer.run(max_frames=frames)
            rate = frames / (time.perf_counter() - start)
            cams = viewer.sim.rig.cameras
        finally:
            viewer.close()
    return (
        f"viewer frames/s:               {rate:6.2f}   ({len(cams)} cameras at {cams[0].width_px}x{cams[0].height_px}, "
        f"{len(viewer.sim.rig.lidars)} LiDARs, bird's-eye view and drawing)"
    )


if __name__ == "__main__":
    main()
