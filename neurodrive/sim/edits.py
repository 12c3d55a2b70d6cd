"""Actor edits applied: checked against a log, inserted assets added to a scene, logged actors
replayed, re-posed or scripted (``EditedActors``). What an edit says is ``scenarios/edits.py``.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from neurodrive.errors import DataError
from neurodrive.geometry import pose_xyz_yaw
from neurodrive.logs.model import WORLD_MARGIN_M, ActorTrack, DrivingLog
from neurodrive.scenarios.edits import ActorEdits, InsertActor, Jitter, Repose
from neurodrive.scene.model import SceneModel
from neurodrive.scene.surface import ActorAsset, resolve_asset
from neurodrive.sim.behaviours import TimedTrajectory


def _fail(source: str, field: str, problem: str) -> None:
    raise DataError(source, field, problem)


def check_edits(edits: ActorEdits, log: DrivingLog, source: str, prefix: str = "") -> None:
    """Actor ids, lanes and positions an edit names exist / lie near the log's world."""
    known = {t.actor_id for t in log.tracks}
    for i, aid in enumerate(edits.remove):
        if aid not in known:
            _fail(source, f"{prefix}remove[{i}]", f"unknown actor id '{aid}' (known: {', '.join(sorted(known))})")
    for aid in edits.repose:
        if aid not in known:
            _fail(source, f"{prefix}repose.{aid}", f"unknown actor id '{aid}'")
    lanes = {lane.lane_id for lane in log.road_map.lanes}
    for i, ins in enumerate(edits.insert):
        if ins.id in known or ins.id == "ego" or ins.id in {x.id for x in edits.insert[:i]}:
            _fail(source, f"{prefix}insert[{i}].id", f"actor id '{ins.id}' already exists")
        if ins.behaviour is not None and ins.behaviour.lane is not None and ins.behaviour.lane not in lanes:
            _fail(source, f"{prefix}insert[{i}].behaviour.lane", f"unknown lane '{ins.behaviour.lane}'")
    _check_positions(edits, log, source, prefix)


def _check_positions(edits: ActorEdits, log: DrivingLog, source: str, prefix: str) -> None:
    lo, hi = log.extent_xy_m
    where = (
        f"outside the log's world x in [{lo[0]:.0f}, {hi[0]:.0f}], y in [{lo[1]:.0f}, {hi[1]:.0f}] m "
        f"by more than {WORLD_MARGIN_M:.0f} m"
    )
    checks: list[tuple[str, list]] = []
    for i, ins in enumerate(edits.insert):
        if ins.waypoints is not None:
            checks.append((f"insert[{i}].{'pose' if ins.pose else 'trajectory'}", [w[1:3] for w in ins.waypoints]))
        elif ins.behaviour is not None and ins.behaviour.waypoints is not None:
            checks.append((f"insert[{i}].behaviour.waypoints", ins.behaviour.waypoints))
    for aid, rep in edits.repose.items():
        if rep.trajectory is not None:
            checks.append((f"repose.{aid}.trajectory", [w[1:3] for w in rep.trajectory]))
        elif max(abs(v) for v in rep.offset[:3]) > WORLD_MARGIN_M:
            _fail(
                source,
                f"{prefix}repose.{aid}.offset",
                f"offsets are limited to {WORLD_MARGIN_M:.0f} m, got {rep.offset[:3]}",
            )
    for field, xy in checks:
        if log.outside_extent(np.asarray(xy, float)):
            _fail(source, prefix + field, f"{np.asarray(xy, float).reshape(-1, 2)[0].tolist()}... lies {where}")


def insert_asset(
    ins: InsertActor, scene: SceneModel | None, base_dir: str | Path | None, source: str, field: str
) -> ActorAsset | None:
    """The asset an insert names (a scene actor or an asset .npz); with a scene it must exist."""
    asset = resolve_asset(ins.asset, scene.actors if scene is not None else {}, base_dir)
    if asset is None and scene is not None:
        _fail(source, field, f"'{ins.asset}' is neither an actor of the scene nor an asset .npz")
    return asset


def scene_with_inserts(
    scene: SceneModel, edits: ActorEdits, base_dir: str | Path | None, source: str, prefix: str = ""
) -> SceneModel:
    """``scene`` with every inserted actor's asset added under its new id (meshes shared)."""
    assets = dict(scene.actors)
    for i, ins in enumerate(edits.insert):
        assets[ins.id] = insert_asset(ins, scene, base_dir, source, f"{prefix}insert[{i}].asset").renamed(
            ins.id, ins.asset
        )
    return scene.with_actors(assets)


def draw_jitter(jitter: Jitter, rng: np.random.Generator) -> tuple[float, float, float, float, float]:
    """(dt_s, dx_m, dy_m, dyaw_rad, speed factor); a zero half-range draws nothing (same stream)."""
    dt, dx, dy, dyaw = (
        rng.uniform(-h, h) if h > 0 else 0.0 for h in (jitter.time_s, jitter.x_m, jitter.y_m, jitter.yaw_rad)
    )
    scale = 1.0 + (rng.uniform(-jitter.speed_scale, jitter.speed_scale) if jitter.speed_scale > 0 else 0.0)
    return dt, dx, dy, dyaw, scale


def _waypoint_arrays(
    waypoints: list[list[float]], ground_z_m: float, height_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times (K,), xyz (K, 3), yaw (K,)); rows without z stand on the ground."""
    w = np.asarray(waypoints, float)
    z = w[:, 3] if w.shape[1] == 5 else np.full(len(w), ground_z_m + height_m / 2)
    return w[:, 0], np.column_stack([w[:, 1], w[:, 2], z]), w[:, -1]


def actor_rng(seed: int, actor_id: str) -> np.random.Generator:
    """The random stream of one actor's jitter: the seed and the actor's id, so that an actor's draws
    do not depend on which other actors the scenario holds."""
    return np.random.default_rng([seed, zlib.crc32(actor_id.encode())])


def scripted_actor(
    actor_id: str,
    category: str,
    size_m: tuple[float, float, float],
    ins: InsertActor,
    ground_z_m: float,
    rng: np.random.Generator,
) -> TimedTrajectory:
    """An inserted actor following its pose / waypoints, with its jitter drawn from ``rng``."""
    dt, dx, dy, dyaw, scale = draw_jitter(ins.jitter, rng)
    times, xyz, yaw = _waypoint_arrays(ins.waypoints, ground_z_m, size_m[2])
    times = times[0] + (times - times[0]) / scale + dt
    return TimedTrajectory(actor_id, category, size_m, times, xyz + [dx, dy, 0.0], yaw + dyaw)


def reposed_track(track: ActorTrack, rep: Repose, times_s: np.ndarray, ground_z_m: float) -> ActorTrack:
    """A logged track moved by a repose; ``times_s`` are the log frames' times from the start."""
    if rep.offset is not None:
        return replace(track, poses=track.poses @ pose_xyz_yaw(*rep.offset))
    t, xyz, yaw = _waypoint_arrays(rep.trajectory, ground_z_m, float(track.size_m[2]))
    path = TimedTrajectory(track.actor_id, track.category, tuple(track.size_m), t, xyz, yaw)
    poses = np.stack([path.at(float(k)).pose() for k in times_s])
    return replace(track, poses=poses, valid=np.ones(len(poses), bool))


class EditedActors:
    """Actor poses at each log frame with edits applied (the offline renderer's view of an edit):
    logged actors where the log has them, re-posed ones moved, inserted ones on their paths."""

    def __init__(
        self,
        edits: ActorEdits,
        log: DrivingLog,
        scene: SceneModel,
        source: str = "edits",
        base_dir: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        if edits.behaviour != "log":
            _fail(source, "behaviour", "reactive actors ('idm') need the simulator: use a scenario and replay")
        check_edits(edits, log, source)
        self.scene = scene_with_inserts(scene, edits, base_dir, source)
        self.log, self.edits = log, edits
        self._times_s = log.timestamps_s - log.timestamps_s[0]
        ground_z = float(log.ego_poses[0, 2, 3])
        self._tracks = {
            t.actor_id: reposed_track(t, edits.repose[t.actor_id], self._times_s, ground_z)
            for t in log.tracks
            if t.actor_id in edits.repose
        }
        self._inserted: dict[str, TimedTrajectory] = {}
        for i, ins in enumerate(edits.insert):
            if ins.behaviour is not None:
                _fail(source, f"insert[{i}].behaviour", "lane behaviours need the simulator: use a scenario and replay")
            asset = self.scene.actors[ins.id]
            size = (float(asset.size_m[0]), float(asset.size_m[1]), float(asset.size_m[2]))
            self._inserted[ins.id] = scripted_actor(
                ins.id, asset.category, size, ins, ground_z, actor_rng(seed, ins.id)
            )

    @staticmethod
    def load(log: DrivingLog, scene: SceneModel, path: str | Path) -> EditedActors:
        """The edits of a YAML file (asset paths relative to the file)."""
        return EditedActors(ActorEdits.load(path), log, scene, str(path), Path(path).parent)

    def poses_at(self, frame: int) -> dict[str, np.ndarray]:
        """T_world_box of every rendered actor at log frame ``frame``."""
        poses = {
            a: p
            for a, p in self.log.actor_poses_at(frame).items()
            if a in self.scene.actors and a not in self.edits.remove and a not in self._tracks
        }
        for aid, track in self._tracks.items():
            if track.valid[frame] and aid in self.scene.actors:
                poses[aid] = track.poses[frame]
        for aid, path in self._inserted.items():
            poses[aid] = path.at(float(self._times_s[frame])).pose()
        return poses
