"""Benchmark: reconstruct town-small and evaluate it against the reconstruction targets.

Targets: reconstruction <= 10 min on 2 cores with peak RSS <= 4 GB; held-out PSNR >= 28 dB;
lane-shift (2 m) PSNR >= 24 dB; LiDAR median depth error <= 0.03 m; ray-drop accuracy >= 95 %.
Also printed: the longest time between two progress reports (the command line would look frozen
for that long) and the stage it ended in.
Run: python benchmarks/bench_reconstruct.py [--log LOG] (generates town-small when no log is given)
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

TARGETS = {
    "reconstruct_s": ("<=", 600.0),
    "peak_rss_gb": ("<=", 4.0),
    "psnr_db": (">=", 28.0),
    "lane_shift_psnr_db": (">=", 24.0),
    "lidar_median_depth_error_m": ("<=", 0.03),
    "lidar_ray_drop_accuracy": (">=", 0.95),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--log", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    from neurodrive.logs.io import load_log
    from neurodrive.reconstruct.evaluate import evaluate_reconstruction
    from neurodrive.reconstruct.pipeline import ReconConfig, reconstruct
    from neurodrive.sources.synthetic.generate import generate_log
    from neurodrive.sources.synthetic.presets import get_preset

    with tempfile.TemporaryDirectory() as tmp:
        log_dir = args.log or generate_log(get_preset("town-small"), Path(tmp) / "log")
        log = load_log(log_dir)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        silence = {"last": start, "longest_s": 0.0, "stage": ""}

        spans: dict[str, list[float]] = {}

        def progress(stage: str, done: int, total: int) -> None:
            now = time.perf_counter()
            spans.setdefault(stage, [silence["last"], now])[1] = now
            if now - silence["last"] > silence["longest_s"]:
                silence.update(longest_s=now - silence["last"], stage=stage)
            silence["last"] = now

        model = reconstruct(log, Path(tmp) / "scene", ReconConfig(), progress)
        elapsed = time.perf_counter() - start
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        metrics = evaluate_reconstruction(model, log)
    results = {"reconstruct_s": elapsed, "peak_rss_gb": peak_gb} | {
        k: v for k, v in metrics.items() if k in TARGETS or k in ("ssim", "lidar_intensity_rmse", "lidar_chamfer_m")
    }
    print(f"log '{log.name}': {log.num_frames} frames, held out {metrics['frames']}")
    print(f"(peak RSS before reconstruction: {rss_before / 1024**2:.2f} GB, generation included)")
    print(f"longest time without a progress report: {silence['longest_s']:.1f} s (ending in '{silence['stage']}')")
    print("stages (s): " + ", ".join(f"{name} {end - begin:.1f}" for name, (begin, end) in spans.items()))
    for key, value in results.items():
        if key in TARGETS:
            op, target = TARGETS[key]
            ok = value <= target if op == "<=" else value >= target
            ratio = value / target
            print(f"{key:30s} {value:10.4f}   target {op} {target:<8g} ratio {ratio:.2f}  {'met' if ok else 'NOT met'}")
        else:
            print(f"{key:30s} {value:10.4f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
