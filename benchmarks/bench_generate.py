"""Benchmark: time and peak memory of `neurodrive generate --preset town-small`.

Target: a log of >= 40 frames with 3 cameras and LiDAR in under 3 minutes on 2 cores.
Run: python benchmarks/bench_generate.py [--preset town-small]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from neurodrive.logs.io import load_log
from neurodrive.sources.synthetic.generate import generate_log
from neurodrive.sources.synthetic.presets import get_preset

TARGET_S = 180.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="town-small")
    args = parser.parse_args()
    cfg = get_preset(args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = generate_log(cfg, Path(tmp) / "log")
        elapsed = time.perf_counter() - start
        log = load_log(out)
        size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"preset {cfg.name}: {log.num_frames} frames, {len(log.rig.cameras)} cameras, "
        f"{log.rig.lidar.num_beams}x{log.rig.lidar.azimuth_bins} LiDAR"
    )
    print(
        f"generate: {elapsed:.1f} s ({elapsed / log.num_frames:.2f} s/frame), "
        f"{elapsed / TARGET_S:.2f} x the 180 s target; peak RSS {peak_mb:.0f} MB; log {size_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
