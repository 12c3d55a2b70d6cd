"""The driving-log data model (``model``), its on-disk format (``io``) and JSON schemas (``schema``).

Every source (the synthetic generator, dataset importers) produces this; everything downstream
(reconstruction, simulation) reads it. Format: docs/log_format.md.
"""

from neurodrive.lidar.sensor import LidarSpec, LidarSweep
from neurodrive.logs.io import load_log
from neurodrive.logs.model import (
    ActorTrack,
    CameraSpec,
    DrivingLog,
    Lane,
    RoadMap,
    SensorRig,
)
from neurodrive.logs.writer import write_log

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
