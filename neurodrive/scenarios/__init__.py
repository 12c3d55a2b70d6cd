"""Driving logs and scenarios: data model, on-disk format, loaders and generators."""

from neurodrive.scenarios.log import (
    ActorTrack,
    CameraSpec,
    DrivingLog,
    Lane,
    LidarSpec,
    LidarSweep,
    RoadMap,
    SensorRig,
)
from neurodrive.scenarios.log_io import load_log, write_log

__all__ = [
    "ActorTrack",
    "CameraSpec",
    "DrivingLog",
    "Lane",
    "LidarSpec",
    "LidarSweep",
    "RoadMap",
    "SensorRig",
    "load_log",
    "write_log",
]
