"""Experiment: would packet tracing make the camera's ray casting cheaper?

Casts the bench_render.py camera (640x360) into a scene's background mesh with Embree 3 directly,
one ray at a time (as open3d does) and as 4x4-pixel packets, on two threads, in one run.
The measurement behind the native caster (neurodrive/raycast/); needs g++ and the Debian package
libembree-dev, which install.sh provides. Run: python benchmarks/bench_embree_packets.py SCENE
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scene", type=Path)
    args = parser.parse_args()
    if not Path("/usr/include/embree3/rtcore.h").is_file() or shutil.which("g++") is None:
        raise SystemExit("needs g++ and Embree 3 headers: apt-get install libembree-dev")
    from neurodrive.logs.io import load_log
    from neurodrive.logs.model import CameraSpec
    from neurodrive.scene.model import SceneModel

    model = SceneModel.load(args.scene)
    log = load_log(model.meta.log.path)
    camera = CameraSpec.looking("front", 640, 360, np.deg2rad(75), [1.6, 0.0, 1.55], 0.0, 0.04)
    T = log.ego_poses[log.num_frames // 2] @ camera.T_ego_camera
    dirs = (camera.ray_directions(1) @ T[:3, :3].T).astype(np.float32)  # (360, 640, 3)
    tiles = dirs.reshape(90, 4, 160, 4, 3).transpose(0, 2, 1, 3, 4).reshape(-1, 3)  # 16 rays per 4x4 tile
    source = Path(__file__).with_name("embree_packets") / "embree_packets.cpp"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model.background.vertices.astype(np.float32).tofile(work / "v.bin")
        model.background.triangles.astype(np.uint32).tofile(work / "t.bin")
        np.ascontiguousarray(tiles).tofile(work / "d.bin")
        T[:3, 3].astype(np.float32).tofile(work / "o.bin")
        subprocess.run(
            ["g++", "-O2", "-std=c++17", str(source), "-lembree3", "-lpthread", "-o", str(work / "poc")], check=True
        )
        print(f"background: {len(model.background.triangles)} triangles; 640x360 camera rays")
        subprocess.run([str(work / "poc")], cwd=work, check=True)


if __name__ == "__main__":
    main()
