"""Schemas of the log's JSON files (pydantic), turned into the frozen dataclasses of ``log.py``."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from neurodrive.geometry import is_rigid
from neurodrive.io_utils import SAFE_NAME_PATTERN

FORMAT_NAME = "neurodrive-log"
FORMAT_VERSION = 3  # 3: a list of LiDARs; version 1 and 2 logs (one LiDAR) still load (docs/log_format.md)


def _rigid_matrix(value: list[list[float]]) -> list[list[float]]:
    arr = np.asarray(value, dtype=float)
    if arr.shape != (4, 4):
        raise ValueError(f"expected a 4x4 matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("contains NaN or infinite values")
    if not is_rigid(arr):
        raise ValueError("is not a rigid transform (rotation must be orthonormal with det +1)")
    return value


def _intrinsics(value: list[list[float]]) -> list[list[float]]:
    k = np.asarray(value, dtype=float)
    if k.shape != (3, 3) or not np.all(np.isfinite(k)):
        raise ValueError("expected a finite 3x3 matrix")
    if k[0, 0] <= 0 or k[1, 1] <= 0 or not np.allclose(k[2], [0, 0, 1]):
        raise ValueError("expected [[fx,0,cx],[0,fy,cy],[0,0,1]] with fx, fy > 0")
    return value


RigidMatrix = Annotated[list[list[float]], AfterValidator(_rigid_matrix)]
Point2 = Annotated[list[float], Field(min_length=2, max_length=2)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraSchema(_Schema):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    width_px: int = Field(gt=0, le=16384)
    height_px: int = Field(gt=0, le=16384)
    intrinsics: Annotated[list[list[float]], AfterValidator(_intrinsics)]
    T_ego_camera: RigidMatrix
    distortion: list[Annotated[float, Field(ge=-10.0, le=10.0)]] | None = Field(
        default=None, min_length=5, max_length=5
    )  # Brown-Conrady k1, k2, p1, p2, k3


class LidarSchema(_Schema):
    name: str = Field(min_length=1)
    T_ego_lidar: RigidMatrix
    beam_elevations_deg: list[Annotated[float, Field(ge=-90.0, le=90.0)]] = Field(min_length=1, max_length=1024)
    azimuth_bins: int = Field(gt=0, le=100_000)
    min_range_m: float = Field(ge=0.0, allow_inf_nan=False)
    max_range_m: float = Field(gt=0.0, le=10_000.0)
    rotation_rate_hz: float = Field(gt=0.0, le=1000.0)
    pattern: Literal["beam_grid", "measured"] = "beam_grid"  # measured: rays in lidar_pattern.npz
    motion_compensated: bool = True

    @field_validator("max_range_m")
    @classmethod
    def _range_order(cls, v: float, info: Any) -> float:
        if v <= info.data.get("min_range_m", 0.0):
            raise ValueError("must be larger than min_range_m")
        return v


class RigSchema(_Schema):
    cameras: list[CameraSchema] = Field(default_factory=list)
    lidar: LidarSchema | None = None  # versions 1 and 2: at most one LiDAR
    lidars: list[LidarSchema] = Field(default_factory=list, max_length=16)  # version 3

    @field_validator("cameras")
    @classmethod
    def _unique_names(cls, cams: list[CameraSchema]) -> list[CameraSchema]:
        names = [c.name for c in cams]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        return cams

    @field_validator("lidars")
    @classmethod
    def _lidar_names(cls, lidars: list[LidarSchema]) -> list[LidarSchema]:
        names = [lid.name for lid in lidars]
        if len(set(names)) != len(names):
            raise ValueError(f"LiDAR names must be unique, got {names}")
        for i, name in enumerate(names):  # each LiDAR's sweeps live in lidar/<name>/
            if not re.fullmatch(SAFE_NAME_PATTERN, name):
                raise ValueError(f"LiDAR {i} name {name!r} cannot be used as a folder name")
        return lidars


class PoseSourceSchema(_Schema):
    kind: Literal["measured", "estimated"] = "measured"
    method: str = "unknown"  # e.g. "GNSS/INS", "KISS-ICP LiDAR odometry", "simulation"


class LogSchema(_Schema):
    format: Literal["neurodrive-log"]
    version: Literal[1, 2, 3]
    name: str = Field(min_length=1)
    num_frames: int = Field(gt=0)
    frame_rate_hz: float = Field(gt=0.0, le=1000.0)
    rig: RigSchema
    pose_source: PoseSourceSchema = PoseSourceSchema()
    metadata: dict[str, Any] = Field(default_factory=dict)


class TrackSchema(_Schema):
    id: str = Field(min_length=1, max_length=200, pattern=SAFE_NAME_PATTERN)  # becomes a file name in scenes
    category: str = Field(min_length=1)  # version 2: one of logs.model.CATEGORIES
    dataset_category: str = ""
    size_m: list[Annotated[float, Field(gt=0.0, le=100.0)]] = Field(min_length=3, max_length=3)


class TracksSchema(_Schema):
    tracks: list[TrackSchema]

    @field_validator("tracks")
    @classmethod
    def _unique_ids(cls, tracks: list[TrackSchema]) -> list[TrackSchema]:
        seen: set[str] = set()
        for t in tracks:
            if t.id in seen:
                raise ValueError(f"duplicate actor id '{t.id}'")
            seen.add(t.id)
        return tracks


class LaneSchema(_Schema):
    id: str = Field(min_length=1)
    centerline_m: list[list[FiniteFloat]] = Field(min_length=2)
    width_m: float = Field(gt=0.0, le=50.0)
    speed_limit_mps: float = Field(gt=0.0, le=100.0)
    successors: list[str] = Field(default_factory=list)

    @field_validator("centerline_m")
    @classmethod
    def _xy(cls, pts: list[list[float]]) -> list[list[float]]:
        if any(len(p) != 2 for p in pts):
            raise ValueError("every point must be [x, y]")
        return pts


class MapSchema(_Schema):
    drivable_areas: list[list[list[FiniteFloat]]]
    lanes: list[LaneSchema]

    @field_validator("drivable_areas")
    @classmethod
    def _polygons(cls, polys: list[list[list[float]]]) -> list[list[list[float]]]:
        for i, poly in enumerate(polys):
            if len(poly) < 3 or any(len(p) != 2 for p in poly):
                raise ValueError(f"polygon {i} needs at least 3 [x, y] points")
            reason = polygon_problem(poly)
            if reason:
                raise ValueError(f"polygon {i} is not a valid simple polygon: {reason}")
        return polys


def polygon_problem(points: list[list[float]]) -> str | None:
    """Why a ring of [x, y] points is not a valid polygon (self-intersection, zero area), or None.

    Invalid polygons would make the off-road checks fail mid-episode (GEOS topology errors)."""
    import shapely

    poly = shapely.Polygon(points)
    if poly.is_valid and poly.area > 0:
        return None
    return shapely.is_valid_reason(poly) if not poly.is_valid else "zero area"


def describe_validation_error(err: ValidationError) -> tuple[str, str]:
    """(field path, problem) of the first error, e.g. ('rig.cameras[0].width_px', '...')."""
    first = err.errors()[0]
    path = ""
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    problem = first["msg"]
    if "input" in first and not isinstance(first["input"], (dict, list)):
        problem += f" (got {first['input']!r})"
    return path or "<root>", problem
