"""The scene's log: the tracks reconstruction found without labels ("auto-" tracks, scene.json's
``auto_tracks``, entries of ``scene/meta.py``'s ``AutoTrack``) added to its log wherever a scene is
used with it (simulator, evaluation, rendering, export)."""

from __future__ import annotations

import dataclasses

import numpy as np

from neurodrive.geometry import pose_xyz_yaw
from neurodrive.logs.model import ActorTrack, DrivingLog
from neurodrive.scene.meta import AutoTrack, SceneMeta

AUTO_PREFIX = "auto-"  # the id prefix of tracks reconstruction found


def log_with_tracks(log: DrivingLog, tracks: list[ActorTrack]) -> DrivingLog:
    return dataclasses.replace(log, tracks=tuple(log.tracks) + tuple(tracks)) if tracks else log


def auto_track_entries(tracks: list[ActorTrack]) -> list[AutoTrack]:
    """scene.json's form of ``tracks``: id, category, size, and (frame, x, y, z, yaw) per valid frame."""
    out = []
    for t in tracks:
        frames = np.flatnonzero(t.valid)
        yaw = np.arctan2(t.poses[frames, 1, 0], t.poses[frames, 0, 0])
        rows = np.column_stack([frames, t.poses[frames, :3, 3], yaw])
        out.append(
            AutoTrack(
                id=t.actor_id,
                category=t.category,
                size_m=[round(float(v), 4) for v in t.size_m],
                frame_x_y_z_yaw=[[int(r[0])] + [round(float(v), 5) for v in r[1:]] for r in rows],
            )
        )
    return out


def tracks_from_entries(entries: list[AutoTrack], num_frames: int) -> list[ActorTrack]:
    """The tracks scene.json holds, on a log of ``num_frames`` frames (rows beyond it are ignored)."""
    tracks = []
    for entry in entries:
        poses = np.tile(np.eye(4), (num_frames, 1, 1))
        valid = np.zeros(num_frames, bool)
        for f, x, y, z, yaw in entry.frame_x_y_z_yaw:
            if 0 <= int(f) < num_frames:
                poses[int(f)] = pose_xyz_yaw(x, y, z, yaw)
                valid[int(f)] = True
        tracks.append(ActorTrack(entry.id, entry.category, np.asarray(entry.size_m, float), poses, valid))
    return tracks


def log_with_scene_tracks(log: DrivingLog, meta: SceneMeta) -> DrivingLog:
    """``log`` with the auto tracks of a scene added, those the log lacks."""
    known = {x.actor_id for x in log.tracks}
    return log_with_tracks(log, tracks_from_entries([t for t in meta.auto_tracks if t.id not in known], log.num_frames))
