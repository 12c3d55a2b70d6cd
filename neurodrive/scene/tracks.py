"""The scene's log: the tracks reconstruction found without labels ("auto-" tracks, written to
scene.json's ``auto_tracks``), checked when a scene is read and added to its log wherever the scene
is used with it (simulator, evaluation, rendering, export).

An entry is ``{"id", "category", "size_m": [l, w, h], "frame_x_y_z_yaw": [[frame, x, y, z, yaw], ...]}``
(world frame, m and rad; one row per frame the track is valid).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from neurodrive.errors import DataError
from neurodrive.geometry import pose_xyz_yaw
from neurodrive.logs.model import CATEGORIES, ActorTrack, DrivingLog

AUTO_PREFIX = "auto-"  # the id prefix of tracks reconstruction found


def log_with_tracks(log: DrivingLog, tracks: list[ActorTrack]) -> DrivingLog:
    return dataclasses.replace(log, tracks=tuple(log.tracks) + tuple(tracks)) if tracks else log


def tracks_to_json(tracks: list[ActorTrack]) -> list[dict]:
    """scene.json form: id, category, size, and (frame, x, y, z, yaw) per valid frame."""
    out = []
    for t in tracks:
        frames = np.flatnonzero(t.valid)
        yaw = np.arctan2(t.poses[frames, 1, 0], t.poses[frames, 0, 0])
        rows = np.column_stack([frames, t.poses[frames, :3, 3], yaw])
        out.append(
            {
                "id": t.actor_id,
                "category": t.category,
                "size_m": [round(float(v), 4) for v in t.size_m],
                "frame_x_y_z_yaw": [[int(r[0])] + [round(float(v), 5) for v in r[1:]] for r in rows],
            }
        )
    return out


def tracks_from_json(items: list[dict], num_frames: int) -> list[ActorTrack]:
    tracks = []
    for item in items:
        poses = np.tile(np.eye(4), (num_frames, 1, 1))
        valid = np.zeros(num_frames, bool)
        for f, x, y, z, yaw in item["frame_x_y_z_yaw"]:
            if 0 <= int(f) < num_frames:
                poses[int(f)] = pose_xyz_yaw(x, y, z, yaw)
                valid[int(f)] = True
        tracks.append(ActorTrack(item["id"], item["category"], np.asarray(item["size_m"], float), poses, valid))
    return tracks


def log_with_scene_tracks(log: DrivingLog, scene_meta: dict) -> DrivingLog:
    """``log`` with the auto tracks of a scene (its scene.json content) added, those the log lacks."""
    items = [t for t in scene_meta.get("auto_tracks", []) if t["id"] not in {x.actor_id for x in log.tracks}]
    return log_with_tracks(log, tracks_from_json(items, log.num_frames))


def check_auto_tracks(items: object, meta_path: Path) -> None:
    """scene.json's ``auto_tracks`` (``reconstruct/dynamic.py``): one DataError naming the entry at fault."""
    if not isinstance(items, list):
        raise DataError(meta_path, "auto_tracks", "expected a list of tracks")

    def numbers(value: object, length: int) -> bool:
        return (
            isinstance(value, list)
            and len(value) == length
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        )

    for i, item in enumerate(items):
        field = f"auto_tracks[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise DataError(meta_path, f"{field}.id", "expected an object with a string id")
        if item.get("category") not in CATEGORIES:
            raise DataError(meta_path, f"{field}.category", f"expected one of {', '.join(CATEGORIES)}")
        size = item.get("size_m")
        if not numbers(size, 3) or min(size) <= 0:
            raise DataError(meta_path, f"{field}.size_m", "expected 3 positive finite numbers")
        rows = item.get("frame_x_y_z_yaw")
        if not isinstance(rows, list) or not rows:
            raise DataError(meta_path, f"{field}.frame_x_y_z_yaw", "expected a non-empty list of rows")
        for k, row in enumerate(rows):
            if not numbers(row, 5) or row[0] < 0 or row[0] != int(row[0]):
                raise DataError(
                    meta_path, f"{field}.frame_x_y_z_yaw[{k}]", "expected [frame, x, y, z, yaw]: finite, frame >= 0"
                )
