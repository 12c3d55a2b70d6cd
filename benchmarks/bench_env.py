"""Benchmark: Gymnasium env steps/s with one 640x360 camera + one 64x1024 LiDAR (issue 6).

Target: >= 20 steps/s on 2 cores. Also prints the simulator alone (no sensors) and the
renderer alone, measured in the same run, to show where the time goes.
Run: python benchmarks/bench_env.py SCENE [--steps 100]
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
    args = parser.parse_args()
    import gymnasium as gym

    import neurodrive  # noqa: F401
    from neurodrive.logs.io import load_log
    from neurodrive.scene.model import SceneModel

    model = SceneModel.load(args.scene)
    log = load_log(model.meta["log"]["path"])
    front = next(c for c in log.rig.cameras if c.name == "front")
    scale = 640 / front.width_px
    lidar = log.rig.lidar
    sensors = {"cameras": ["front"], "lidar": True, "camera_scale": scale}
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
    env_no_sensors = gym.make("neurodrive/ClosedLoop-v0", log=model.meta["log"]["path"], duration_s=duration)
    bare = steps_per_s(env_no_sensors)
    sim = env.unwrapped.sim
    env.reset(seed=0)  # render where the episodes start
    render_s = []
    for _ in range(10):
        start = time.perf_counter()
        sim.render()
        render_s.append(time.perf_counter() - start)
    cam = obs_space["camera_front"].shape
    print(
        f"observation: camera {cam[1]}x{cam[0]}, LiDAR {lidar.num_beams}x{lidar.azimuth_bins} range image, "
        "ego state, route"
    )
    print(f"env steps/s with sensors:      {full:6.1f}   target >= 20  {'met' if full >= 20 else 'NOT met'}")
    print(f"env steps/s without sensors:   {bare:6.1f}   (dynamics, actors, collisions, observation)")
    print(
        f"rendering alone:               {1 / np.median(render_s):6.1f} frames/s ({np.median(render_s) * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
