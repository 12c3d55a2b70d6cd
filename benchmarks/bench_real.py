"""Benchmark: every real sample found under ../shared/realdata imported, reconstructed, evaluated and
rendered. One table, all numbers measured in this run:

- import and reconstruction wall time, the reconstruction's peak RSS (its own process);
- held-out PSNR / SSIM on the whole image (all cameras, NeuRAD's "360"; and the front camera alone,
  its "FC") and outside moving objects, PSNR on actors, LiDAR median
  depth error (along the recorded rays; and cell by cell on the sensor's pattern),
  ray-drop accuracy, Chamfer distance (``neurodrive evaluate-recon``; a 1-sample log is evaluated on
  its training frame, a LiDAR-only log has no image metrics);
- frames/s of the dataset's rig (every camera at its resolution + every LiDAR, as the simulator
  renders them: photo-based appearance when the scene carries photos);
- the image metrics of the texels alone beside the photo-based ones (``evaluate-recon --appearance
  both``), the scene's size on disk and its photos' share.

``--holdout every-other`` holds out every second frame (NeuRAD's protocol) instead of every 5th; the
table says which protocol its numbers follow.

Targets: reconstruction <= 10 min and <= 6 GB per sample (PandaSet's 20 frames, 6 cameras at 1920x1080
and two LiDARs included); KITTI held-out PSNR >= 24 dB whole and >= 25 dB outside moving objects,
SSIM >= 0.80, LiDAR median depth error <= 0.05 m, KITTI rig >= 20 frames/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

SAMPLES = {
    "kitti-raw": ("kitti_raw/2011_09_26/2011_09_26_drive_unknown_sync", []),
    "dgp": ("dgp/scene_dataset_v1.0.json", ["--scene", "scene_02"]),
    "nuscenes": ("nuscenes", ["--scene", "scene-0061"]),
    "av2": ("av2/sensor/val/7fab2350-7eaf-3b7e-a39d-6937a4c1bede", []),
    "pandaset": ("pandaset", ["--sequence", "002"]),
}
TARGETS = {
    "recon_s": 600.0,
    "peak_gb": 6.0,
    "psnr_db": 24.0,
    "psnr_db_static": 25.0,
    "ssim": 0.80,
    "depth_m": 0.05,
    "fps": 20.0,
}


def run_measured(args: list[str]) -> tuple[float, float]:
    """Runs a command; returns (wall s, peak RSS GB of that process)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        message = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
        raise RuntimeError(f"{' '.join(args)} failed: {message}")
    return seconds, usage.ru_maxrss / 1024**2


def rig_fps(scene: Path, log_dir: Path, repeats: int = 10) -> float:
    """Frames/s of every camera of the rig + the LiDAR at the first training frame's pose."""
    from neurodrive.logs.io import load_log
    from neurodrive.render.rendering import SceneRenderer
    from neurodrive.scene.model import SceneModel
    from neurodrive.scene.tracks import log_with_scene_tracks

    model = SceneModel.load(scene)
    renderer = SceneRenderer(model)
    log = log_with_scene_tracks(load_log(log_dir), model.meta)
    frame = model.meta.training_frames[0]
    placed = renderer.place({a: p for a, p in log.actor_poses_at(frame).items() if a in model.actors})
    ego = log.ego_poses[frame]
    renderer.render_frame(placed, ego, log.rig.cameras, log.rig.lidars)  # warm-up (BVHs, baked colours)
    start = time.perf_counter()
    for _ in range(repeats):
        renderer.render_frame(placed, ego, log.rig.cameras, log.rig.lidars)
    return repeats / (time.perf_counter() - start)


def fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'dataset':9s} {'import s':>8s} {'recon s':>8s} {'peak GB':>8s} {'PSNR':>6s} {'static':>6s} "
        f"{'SSIM':>5s} {'actors':>6s} {'depth m':>8s} {'cell m':>7s} {'drop':>5s} "
        f"{'chamf m':>7s} {'auto':>4s} {'rig fps':>7s} {'FC PSNR':>7s} {'FC SSIM':>7s} {'texels':>6s} "
        f"{'t SSIM':>6s} {'t FC':>6s} {'scene MB':>8s} {'photo MB':>8s}  held out"
    )
    protocols = sorted({r["protocol"] for r in rows if "protocol" in r})
    print(
        f"held-out frames: {', '.join(protocols) or '-'}; PSNR / SSIM over every camera, FC: the front camera alone; "
        "photo-based appearance, texels / t SSIM / t FC: the texels alone"
    )
    print(head)
    for r in rows:
        if "skipped" in r:
            print(f"{r['dataset']:9s} skipped: {r['skipped']}")
            continue
        print(
            f"{r['dataset']:9s} {r['import_s']:8.1f} {r['recon_s']:8.1f} {r['peak_gb']:8.2f} {fmt(r['psnr_db']):>6s} "
            f"{fmt(r['psnr_db_static']):>6s} {fmt(r['ssim'], '.3f'):>5s} {fmt(r['psnr_db_actors']):>6s} "
            f"{fmt(r['depth_m'], '.3f'):>8s} {fmt(r['cell_depth_m'], '.3f'):>7s} "
            f"{fmt(r['ray_drop'], '.3f'):>5s} {fmt(r['chamfer_m'], '.3f'):>7s} {r['auto_tracks']:4d} "
            f"{r['fps']:7.1f} {fmt(r['psnr_db_front']):>7s} {fmt(r['ssim_front'], '.3f'):>7s} "
            f"{fmt(r['texels_psnr_db']):>6s} {fmt(r['texels_ssim'], '.3f'):>6s} {fmt(r['texels_psnr_db_front']):>6s} "
            f"{r['scene_mb']:8.1f} {r['photos_mb']:8.1f}  {r['frames']}"
        )
    print("\nratios to the targets (>= 1 is met):")
    for r in rows:
        if "skipped" in r:
            continue
        ratios = {
            "time": TARGETS["recon_s"] / r["recon_s"],
            "memory": TARGETS["peak_gb"] / r["peak_gb"],
        }
        if r["dataset"] == "kitti-raw":
            ratios |= {
                "psnr": r["psnr_db"] / TARGETS["psnr_db"],
                "psnr outside movers": r["psnr_db_static"] / TARGETS["psnr_db_static"],
                "ssim": r["ssim"] / TARGETS["ssim"],
                "lidar depth": TARGETS["depth_m"] / max(r["depth_m"], 1e-9),
                "rig fps": r["fps"] / TARGETS["fps"],
            }
        print(f"  {r['dataset']:9s} " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--realdata", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "realdata")
    parser.add_argument("--only", nargs="*", help="Datasets to run (default: every one found).")
    parser.add_argument("--keep", type=Path, help="Keep the logs, scenes and figures in this folder.")
    parser.add_argument("--json", type=Path, help="Also write the table as JSON here.")
    parser.add_argument("--holdout", default="every-5th", help="Hold-out protocol: every-5th or every-other.")
    args = parser.parse_args()
    exe = shutil.which("neurodrive")
    if exe is None:
        raise SystemExit("the neurodrive command is not installed (bash install.sh)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_real_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (rel, options) in SAMPLES.items():
        if args.only and name not in args.only:
            continue
        src = args.realdata / rel
        if not src.exists():
            rows.append({"dataset": name, "skipped": f"{src} not found"})
            continue
        log_dir, scene, metrics_file = work / f"{name}_log", work / f"{name}_scene", work / f"{name}_eval.json"
        import_s, _ = run_measured([exe, "import", name, str(src), "-o", str(log_dir), "--overwrite", *options])
        recon = [
            exe,
            "reconstruct",
            str(log_dir),
            "-o",
            str(scene),
            "--overwrite",
            "--restart",
            "--holdout",
            args.holdout,
        ]
        recon_s, peak_gb = run_measured(recon)
        figures = ["--figures", str(work / f"{name}_figures")] if args.keep else []
        run_measured(
            [exe, "evaluate-recon", str(scene), str(log_dir), "-o", str(metrics_file), "--overwrite", *figures]
        )
        m = json.loads(metrics_file.read_text())
        scene_meta = json.loads((scene / "scene.json").read_text())
        auto = scene_meta.get("auto_tracks", [])
        texels = m.get("texels", {})
        rows.append(
            {
                "dataset": name,
                "import_s": import_s,
                "recon_s": recon_s,
                "peak_gb": peak_gb,
                "frames": m["frames"],
                "protocol": m["protocol"]["holdout"],
                "psnr_db_front": m["psnr_db_front"],
                "ssim_front": m["ssim_front"],
                "psnr_db": m["psnr_db"],
                "psnr_db_static": m["psnr_db_static"],
                "ssim": m["ssim"],
                "depth_m": m["lidar_median_depth_error_m"],
                "cell_depth_m": m["lidar_median_depth_error_pattern_m"],
                "psnr_db_actors": m["psnr_db_actors"],
                "ray_drop": m["lidar_ray_drop_accuracy"],
                "chamfer_m": m["lidar_chamfer_m"],
                "auto_tracks": len(auto),
                "fps": rig_fps(scene, log_dir),
                "texels_psnr_db": texels.get("psnr_db"),
                "texels_ssim": texels.get("ssim"),
                "texels_psnr_db_front": texels.get("psnr_db_front"),
                "scene_mb": sum(f.stat().st_size for f in scene.rglob("*") if f.is_file()) / 1e6,
                "photos_mb": (scene_meta.get("photos") or {}).get("disk_bytes", 0) / 1e6,
            }
        )
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
