"""Benchmark: importing each real sample found under ../shared/realdata (targets: KITTI's 30 frames in
under 2 minutes, PandaSet's 20 frames in under 30 s). Prints the wall time of each import, measured in
this run, and its ratio to the target."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

SAMPLES = {
    "kitti-raw": ("kitti_raw/2011_09_26/2011_09_26_drive_unknown_sync", {}),
    "nuscenes": ("nuscenes", {"scene": "scene-0061"}),
    "av2": ("av2/sensor/val/7fab2350-7eaf-3b7e-a39d-6937a4c1bede", {}),
    "dgp": ("dgp/scene_dataset_v1.0.json", {"scene": "scene_02"}),
    "pandaset": ("pandaset", {"sequence": "002"}),
}
TARGETS_S = {"kitti-raw": 120.0, "pandaset": 30.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--realdata", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "realdata")
    args = parser.parse_args()
    from neurodrive.logs.io import load_log
    from neurodrive.sources import get_source

    print(f"{'dataset':10s} {'import s':>9s} {'frames':>7s}  note")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, (rel, options) in SAMPLES.items():
            src = args.realdata / rel
            if not src.exists():
                print(f"{fmt:10s} {'-':>9s} {'-':>7s}  skipped: {src} not found")
                continue
            start = time.perf_counter()
            out = get_source(fmt).write_log(src, Path(tmp) / fmt, **options)
            seconds = time.perf_counter() - start
            log = load_log(out)
            note = ""
            if fmt in TARGETS_S:
                target = TARGETS_S[fmt]
                verdict = "met" if seconds < target else "NOT met"
                note = f"ratio to the {target:.0f} s target {seconds / target:.3f}: {verdict}"
            print(f"{fmt:10s} {seconds:9.1f} {log.num_frames:7d}  {note}")


if __name__ == "__main__":
    main()
