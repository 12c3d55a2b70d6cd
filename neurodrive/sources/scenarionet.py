"""Import of ScenarioNet / MetaDrive scenario descriptions (dicts) for sensor-free closed-loop runs.

A description holds ``metadata.sdc_id`` (the ego), ``tracks`` (per object ``type`` and a ``state``
with per-step ``position`` (T, 2 or 3), ``heading`` (T,), ``length``/``width``/``height`` (T,),
``valid`` (T,)) and ``map_features`` (lanes: ``type`` starting with ``LANE``, ``polyline`` (K, 2+)).
It becomes a ``DrivingLog`` without sensors (flat ground: boxes stand on z = 0; lanes 3.5 m wide
unless ``width`` is given; drivable area = the lanes' union) and a default ``Scenario`` over it;
``Simulator(scenario, log)`` runs it with every agent that does not need sensors.
ScenarioNet stores descriptions as pickles: unpickle only files you trust, then pass the dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import shapely

from neurodrive.errors import DataError
from neurodrive.geometry import pose_xyz_yaw
from neurodrive.logs.model import ActorTrack, DrivingLog, Lane, RoadMap, SensorRig
from neurodrive.scenarios.scenario import Scenario
from neurodrive.sim.vehicle import VehicleParameters

CATEGORIES = {"VEHICLE": "car", "PEDESTRIAN": "pedestrian", "CYCLIST": "cyclist"}
DEFAULT_LANE_WIDTH_M = 3.5
DEFAULT_SPEED_LIMIT_MPS = 13.9


def _array(source: str, field: str, value, min_width: int | None = None, length: int | None = None) -> np.ndarray:
    """Per-step values (T,) (``min_width`` None; (T, 1) accepted) or rows (T, >= min_width) as floats."""
    try:
        arr = np.asarray(value, float)
    except (TypeError, ValueError) as e:
        raise DataError(source, field, f"expected numbers: {e}") from e
    if min_width is None and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != (1 if min_width is None else 2) or (min_width is not None and arr.shape[1] < min_width):
        raise DataError(source, field, f"unexpected shape {arr.shape}")
    if length is not None and len(arr) != length:
        raise DataError(source, field, f"expected {length} steps, got {len(arr)}")
    return arr


def log_from_scenarionet(desc: Mapping, source: str | Path = "<scenarionet>", dt_s: float = 0.1) -> DrivingLog:
    """A sensor-free ``DrivingLog`` of a ScenarioNet scenario description."""
    source = str(source)
    try:
        sdc = str(desc["metadata"]["sdc_id"])
    except (KeyError, TypeError) as e:
        raise DataError(source, "metadata.sdc_id", "missing") from e
    tracks_in = desc.get("tracks")
    if not isinstance(tracks_in, Mapping):
        raise DataError(source, "tracks", "missing")
    if sdc not in tracks_in:
        raise DataError(source, "metadata.sdc_id", f"'{sdc}' is not one of the tracks")
    tracks, ego = [], None
    steps = None
    for tid, track in tracks_in.items():
        where = f"tracks.{tid}.state"
        state = track.get("state") if isinstance(track, Mapping) else None
        if not isinstance(state, Mapping):
            raise DataError(source, where, "missing")
        pos = _array(source, f"{where}.position", state.get("position"), 2)
        steps = steps or len(pos)
        if len(pos) != steps:
            raise DataError(source, f"{where}.position", f"expected {steps} steps, got {len(pos)}")
        heading = _array(source, f"{where}.heading", state.get("heading"), None, steps)
        valid = np.asarray(state.get("valid", np.ones(steps)), bool).reshape(-1)
        if len(valid) != steps:
            raise DataError(source, f"{where}.valid", f"expected {steps} steps, got {len(valid)}")
        if not np.all(np.isfinite(pos[valid, :2])) or not np.all(np.isfinite(heading[valid])):
            raise DataError(source, where, "NaN or infinite position/heading on a valid step")
        size = [
            float(np.median(_array(source, f"{where}.{k}", state.get(k, [d] * steps), None, steps)[valid]))
            if valid.any()
            else d
            for k, d in (("length", 4.5), ("width", 1.9), ("height", 1.6))
        ]
        poses = np.stack(
            [pose_xyz_yaw(p[0], p[1], size[2] / 2, h) for p, h in zip(np.nan_to_num(pos), np.nan_to_num(heading))]
        )
        if tid == sdc:
            ego = (poses, valid)
        elif valid.any():
            category = CATEGORIES.get(
                str(track.get("type", "VEHICLE")).upper(), str(track.get("type", "object")).lower()
            )
            tracks.append(ActorTrack(str(tid), category, np.asarray(size), poses, valid))
    poses, valid = ego
    if not valid.all():
        raise DataError(source, f"tracks.{sdc}.state.valid", "the ego must be valid on every step")
    rear = VehicleParameters().rear_axle_to_centre_m  # positions are box centres; the ego pose is the rear axle
    ego_poses = poses.copy()
    ego_poses[:, :2, 3] -= rear * ego_poses[:, :2, 0]
    ego_poses[:, 2, 3] = 0.0
    lanes = _lanes(desc, source)
    area = shapely.union_all([shapely.LineString(lane.centerline_m).buffer(lane.width_m / 2 + 0.25) for lane in lanes])
    polygons = [area] if area.geom_type == "Polygon" else list(area.geoms)
    drivable = tuple(np.asarray(p.exterior.coords)[:-1] for p in polygons)
    return DrivingLog(
        Path(source),
        str(desc.get("id", Path(source).stem)),
        SensorRig(()),
        np.arange(steps) * dt_s,
        ego_poses,
        tuple(tracks),
        RoadMap(drivable, tuple(lanes)),
        {"source": "scenarionet"},
    )


def scenario_from_scenarionet(
    desc: Mapping, source: str | Path = "<scenarionet>", dt_s: float = 0.1, **fields
) -> tuple[Scenario, DrivingLog]:
    """A default scenario (start at the first step, as long as the recording) and its log."""
    log = log_from_scenarionet(desc, source, dt_s)
    raw = {
        "name": str(desc.get("id", "scenarionet")),
        "log": f"scenarionet:{log.name}",
        "duration_s": max(dt_s, float(log.timestamps_s[-1])),
        "sensors": {"cameras": [], "lidar": False},
    } | fields
    return Scenario.parse(raw, source), log


def _lanes(desc: Mapping, source: str) -> list[Lane]:
    """The LANE* map features as lanes (centreline, width, speed limit)."""
    lanes = []
    for fid, feature in (desc.get("map_features") or {}).items():
        if not str(feature.get("type", "")).upper().startswith("LANE"):
            continue
        line = _array(source, f"map_features.{fid}.polyline", feature.get("polyline"), 2)[:, :2]
        if len(line) < 2:
            continue
        limit = feature.get("speed_limit_kmh")
        limit = (
            float(limit) / 3.6
            if limit
            else (
                float(feature["speed_limit_mph"]) * 0.44704
                if feature.get("speed_limit_mph")
                else DEFAULT_SPEED_LIMIT_MPS
            )
        )
        lanes.append(Lane(str(fid), line, float(feature.get("width", DEFAULT_LANE_WIDTH_M)), limit))
    if not lanes:
        raise DataError(source, "map_features", "no lanes (features whose type starts with LANE)")
    return lanes
