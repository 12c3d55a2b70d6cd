"""Benchmark: rendering a reconstructed scene vs raw ray casting, measured in one run.

Target: one 640x360 camera + one 64x1024 LiDAR render at >= 50 % of the raw open3d ray-cast
throughput on the same scene and rays. Measured with the scene's default appearance (photo-based when
it carries photos) and, in the same run, with the texels alone.
Run: python benchmarks/bench_render.py SCENE [--log LOG] [--repeats 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scene", type=Path)
    parser.add_argument("--log", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    from neurodrive.geometry import make_pose
    from neurodrive.lidar.sensor import LidarSpec
    from neurodrive.logs.io import load_log
    from neurodrive.logs.model import CameraSpec
    from neurodrive.raycast.embree import ENV_VAR, native_available
    from neurodrive.render.rendering import SceneRenderer
    from neurodrive.scene.model import SceneModel

    model = SceneModel.load(args.scene)
    renderer = SceneRenderer(model)
    log = load_log(args.log or model.meta.log.path)
    frame = log.num_frames // 2
    camera = CameraSpec.looking("front", 640, 360, np.deg2rad(75), [1.6, 0.0, 1.55], 0.0, 0.04)
    camera = CameraSpec(log.rig.cameras[0].name, 640, 360, camera.intrinsics, camera.T_ego_camera)
    lidar = LidarSpec("top", make_pose([1.2, 0.0, 1.9]), np.deg2rad(np.linspace(15, -25, 64)), 1024, 1.0, 100.0, 10.0)
    ego = log.ego_poses[frame]
    placed = renderer.place({a: p for a, p in log.actor_poses_at(frame).items() if a in model.actors})
    T_cam, T_lid = ego @ camera.T_ego_camera, ego @ lidar.T_ego_lidar
    cam_dirs = camera.ray_directions(1).reshape(-1, 3) @ T_cam[:3, :3].T
    lid_dirs = lidar.pattern.directions() @ T_lid[:3, :3].T

    def timed(fn) -> float:
        fn()  # warm-up
        start = time.perf_counter()
        for _ in range(args.repeats):
            fn()
        return (time.perf_counter() - start) / args.repeats

    import open3d as o3d

    cam_rays = o3d.core.Tensor(
        np.concatenate([np.broadcast_to(T_cam[:3, 3], cam_dirs.shape), cam_dirs], 1).astype(np.float32)
    )
    lid_rays = o3d.core.Tensor(
        np.concatenate([np.broadcast_to(T_lid[:3, 3], lid_dirs.shape), lid_dirs], 1).astype(np.float32)
    )
    from neurodrive.raycast.open3d_caster import MeshRaycaster

    # raw: one static open3d scene holding the background and the placed actors
    combined = [(model.background.vertices, model.background.triangles)] + [
        (model.actors[a].mesh.vertices @ p[:3, :3].T + p[:3, 3], model.actors[a].mesh.triangles)
        for a, p in zip(placed.actor_ids, placed.poses)
    ]
    scene = MeshRaycaster(combined).scene
    raw = timed(lambda: (scene.cast_rays(cam_rays), scene.cast_rays(lid_rays)))
    poses = dict(zip(placed.actor_ids, placed.poses))
    replace_s = timed(lambda: renderer.place(poses))
    ours = timed(lambda: (renderer.render_camera(placed, camera, ego), renderer.render_lidar(placed, lidar, ego)))
    texel_renderer = SceneRenderer(model, appearance="texels")
    placed_texels = texel_renderer.place(poses)
    texels = timed(
        lambda: (
            texel_renderer.render_camera(placed_texels, camera, ego),
            texel_renderer.render_lidar(placed_texels, lidar, ego),
        )
    )
    caster = "native Embree packets" if native_available() else "open3d"
    os.environ[ENV_VAR] = "open3d"  # the same renderer on the open3d fallback caster
    placed_o3d = renderer.place(poses)
    fallback = timed(
        lambda: (renderer.render_camera(placed_o3d, camera, ego), renderer.render_lidar(placed_o3d, lidar, ego))
    )
    tris = len(model.background.triangles) + sum(len(model.actors[a].mesh.triangles) for a in placed.actor_ids)
    report(tris, len(placed.actor_ids), raw, ours, texels, fallback, replace_s, caster, renderer.appearance)


def report(
    tris: int,
    actors: int,
    raw: float,
    ours: float,
    texels: float,
    fallback: float,
    replace_s: float,
    caster: str,
    appearance: str,
) -> None:
    """Prints the run's timings (s per frame) and their ratios to the raw ray casting."""
    print(f"scene: {tris} triangles ({actors} actors placed); 640x360 camera + 64x1024 LiDAR per frame")
    print(f"raw open3d ray casting:      {raw * 1000:7.1f} ms/frame  ({1 / raw:5.1f} frames/s)")
    print(
        f"neurodrive camera + LiDAR:   {ours * 1000:7.1f} ms/frame  ({1 / ours:5.1f} frames/s)  caster: {caster}, "
        f"appearance: {appearance}"
    )
    print(
        f"throughput ratio (ours/raw): {raw / ours:.2f}   target >= 0.50  {'met' if raw / ours >= 0.5 else 'NOT met'}"
    )
    print(f"  texels only:               {texels * 1000:7.1f} ms/frame  ratio {raw / texels:.2f}")
    print(f"  on the open3d fallback:    {fallback * 1000:7.1f} ms/frame  ratio {raw / fallback:.2f}")
    print(
        f"re-placing all actors (moving them) costs {replace_s * 1000:.2f} ms: "
        "no mesh's acceleration structure is rebuilt"
    )
    if importlib.util.find_spec("nerfstudio") is None:
        print(
            "nerfstudio (nerfacto): not measured - not installed. It needs an ~8 GB install pinned to numpy<2 with "
            "a CUDA build of torch; see README 'Benchmarks' for why it is not part of this run."
        )


if __name__ == "__main__":
    main()
