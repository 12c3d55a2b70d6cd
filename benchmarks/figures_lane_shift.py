"""Figures: the front camera with the ego shifted sideways by 0 / 1 / 2 / 3 m, rendered with the texels
and with the photo-based appearance (and the exact ground truth on a generated log) side by side, one
row per shift in one JPEG, and the PSNR against the truth where it exists.

Run: python benchmarks/figures_lane_shift.py SCENE LOG --frame F --out DIR [--shifts 0 1 2 3] [--width 620]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scene", type=Path)
    parser.add_argument("log", type=Path)
    parser.add_argument("--frame", type=int, default=None, help="log frame (default: the first held-out one)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shifts", type=float, nargs="*", default=[0.0, 1.0, 2.0, 3.0])
    parser.add_argument("--width", type=int, default=620, help="width of each panel in the figure (px)")
    args = parser.parse_args()
    from neurodrive.geometry import make_pose
    from neurodrive.logs.io import load_log
    from neurodrive.reconstruct.evaluate import front_camera, ground_truth_of, psnr
    from neurodrive.render.rendering import SceneRenderer
    from neurodrive.scene.model import SceneModel
    from neurodrive.scene.tracks import log_with_scene_tracks

    model = SceneModel.load(args.scene)
    log = log_with_scene_tracks(load_log(args.log), model.meta)
    frame = args.frame if args.frame is not None else model.meta.holdout_frames[0]
    cam = log.rig.camera(front_camera(log) or log.rig.cameras[0].name)
    gt = ground_truth_of(log)
    poses = log.actor_poses_at(frame)
    renderers = {mode: SceneRenderer(model, appearance=mode) for mode in ("texels", "photos")}
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{log.name} frame {frame}, camera {cam.name}" + (", PSNR vs exact ground truth" if gt else ""))
    rows = []
    for shift in args.shifts:
        ego = log.ego_poses[frame] @ make_pose([0.0, shift, 0.0])
        panels, scores = [], {}
        truth = gt.render(gt.scene(poses), cam, ego).rgb if gt is not None else None
        if truth is not None:
            panels.append(truth)
        for mode, renderer in renderers.items():
            placed = renderer.place({a: p for a, p in poses.items() if a in model.actors})
            render = renderer.render_camera(placed, cam, ego, supersample=2)
            panels.append(render.rgb)
            if truth is not None:
                scores[mode] = psnr(render.rgb, truth)
        height = round(cam.height_px * args.width / cam.width_px)
        rows.append(np.concatenate([np.asarray(Image.fromarray(p).resize((args.width, height))) for p in panels], 1))
        line = ", ".join(f"{mode} {value:.2f} dB" for mode, value in scores.items())
        print(f"shift {shift:g} m" + (f": {line}" if line else ""))
    path = args.out / f"{log.name}_frame{frame}_lane_shifts.jpg"
    Image.fromarray(np.concatenate(rows, axis=0)).save(path, quality=85)
    print(
        f"wrote {path} ({'truth | ' if gt else ''}texels | photos; rows: {', '.join(f'{s:g}' for s in args.shifts)} m)"
    )


if __name__ == "__main__":
    main()
