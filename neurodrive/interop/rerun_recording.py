"""Rerun recordings (``.rrd``) of logs (``neurodrive info LOG --rerun``) and closed-loop episodes
(``neurodrive replay ... --rerun``), for the Rerun viewer (``rerun FILE.rrd``).

Entities (world axes x forward / y left / z up, metres):

    world/map/lanes            lane centrelines (static)
    world/route                the episode's route (static)
    world/ego_path             the ego's path: the whole logged path (log) or the path so far (episode)
    world/ego                  the ego's pose (Transform3D) and its box
    world/actors               actor boxes, labelled with their ids, class = category
    world/lidar                LiDAR returns in the world, coloured by intensity (turbo)
    world/cameras/<name>       camera pose + pinhole (OpenCV axes), its image (JPEG or the log's file)
    metrics/<name>             per-step signals (episode: progress, speed, comfort, TTC, ...; log: speed)

Timelines: ``frame`` (log frame or episode step) and ``time`` (seconds). Rerun's pinhole has no lens
distortion: images of distorted cameras are shown as recorded, with their undistorted intrinsics.
The file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.spatial.transform import Rotation

from neurodrive.errors import DataError
from neurodrive.logs.model import CATEGORIES, CameraSpec, DrivingLog, RoadMap

if TYPE_CHECKING:
    from neurodrive.sim.simulator import Simulator
    from neurodrive.sim.types import Observation

RERUN_HINT = "Rerun recordings need the optional extra rerun-sdk: pip install 'neurodrive[rerun]' (install.sh does)"
CATEGORY_COLOURS = {
    "car": (70, 130, 230),
    "truck": (150, 90, 220),
    "bus": (230, 150, 40),
    "pedestrian": (230, 60, 60),
    "cyclist": (240, 220, 40),
    "other": (160, 160, 160),
}
EGO_COLOUR = (40, 200, 90)
LIDAR_RADIUS_M = 0.04
JPEG_QUALITY = 85


def require_rerun() -> Any:
    """The ``rerun`` module, or one clear error naming the optional extra."""
    try:
        import rerun
    except ImportError as e:
        raise RuntimeError(RERUN_HINT) from e
    return rerun


def intensity_colours(intensity: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 turbo colours of intensities in [0, 1]."""
    from matplotlib import colormaps

    rgba = colormaps["turbo"](np.clip(np.asarray(intensity, float), 0.0, 1.0))
    return (rgba[:, :3] * 255).astype(np.uint8)


def _quaternions_xyzw(poses: np.ndarray) -> np.ndarray:
    return Rotation.from_matrix(np.asarray(poses, float)[:, :3, :3]).as_quat()


class RerunRecording:
    """One ``.rrd`` file being written; use as a context manager (kept only when the block completes).

    It is written as ``.NAME.rrd.partial`` (``partial_path``) and renamed to ``path`` when the block
    completes, or, with ``publish_on_exit`` off, left for the caller to rename with the other files of
    its result (a replay renames it just before its metrics.json)."""

    def __init__(self, path: str | Path, name: str, publish_on_exit: bool = True) -> None:
        self.publish_on_exit = publish_on_exit
        rr = require_rerun()
        self.path = Path(path)
        if self.path.suffix != ".rrd":
            raise DataError(self.path, None, "a Rerun recording's file name must end in .rrd")
        if self.path.is_dir():
            raise DataError(self.path, None, "is a folder, expected a .rrd file name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial_path = self.path.with_name(f".{self.path.name}.partial")
        self.rr = rr
        self.rec = rr.RecordingStream("neurodrive")
        self.rec.save(self.partial_path)
        self.rec.send_recording_name(name)
        self.rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
        classes = [
            rr.AnnotationInfo(id=i, label=c, color=CATEGORY_COLOURS.get(c, (200, 200, 200)))
            for i, c in enumerate(CATEGORIES)
        ]
        self.rec.log("world/actors", rr.AnnotationContext(classes), static=True)
        self._static_logged: set[str] = set()  # entities whose static part (pinhole, ego box) is written

    def __enter__(self) -> RerunRecording:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.rec.flush()
        self.rec.disconnect()
        if kind is not None:
            self.partial_path.unlink(missing_ok=True)
        elif self.publish_on_exit:
            os.replace(self.partial_path, self.path)

    def set_time(self, frame: int, time_s: float) -> None:
        self.rec.set_time("frame", sequence=int(frame))
        self.rec.set_time("time", duration=float(time_s))

    def road_map(self, road_map: RoadMap) -> None:
        strips = [
            np.c_[np.asarray(lane.centerline_m, float)[:, :2], np.zeros(len(lane.centerline_m))]
            for lane in road_map.lanes
        ]
        if strips:
            self.rec.log("world/map/lanes", self.rr.LineStrips3D(strips, colors=(120, 120, 120)), static=True)

    def polyline(self, entity: str, xyz_m: np.ndarray, colour: tuple[int, int, int], static: bool = False) -> None:
        self.rec.log(entity, self.rr.LineStrips3D([np.asarray(xyz_m, float)], colors=colour), static=static)

    def ego(self, T_world_ego: np.ndarray, size_m: tuple[float, float, float], rear_axle_to_centre_m: float) -> None:
        rr = self.rr
        self.rec.log("world/ego", rr.Transform3D(translation=T_world_ego[:3, 3], mat3x3=T_world_ego[:3, :3]))
        if self._once("world/ego/box"):
            centre = [rear_axle_to_centre_m, 0.0, size_m[2] / 2]
            half = np.asarray(size_m, float) / 2
            box = rr.Boxes3D(centers=[centre], half_sizes=[half], colors=EGO_COLOUR, labels=["ego"])
            self.rec.log("world/ego/box", box, static=True)

    def _once(self, entity: str) -> bool:
        """True the first time ``entity`` is asked for (its static part is then written)."""
        first = entity not in self._static_logged
        self._static_logged.add(entity)
        return first

    def actors(self, ids: list[str], categories: list[str], poses: np.ndarray, sizes_m: np.ndarray) -> None:
        rr = self.rr
        if not ids:
            self.rec.log("world/actors", rr.Clear(recursive=False))
            return
        poses = np.asarray(poses, float).reshape(-1, 4, 4)
        classes = [CATEGORIES.index(c) if c in CATEGORIES else CATEGORIES.index("other") for c in categories]
        boxes = rr.Boxes3D(
            centers=poses[:, :3, 3],
            half_sizes=np.asarray(sizes_m, float).reshape(-1, 3) / 2,
            quaternions=[rr.Quaternion(xyzw=q) for q in _quaternions_xyzw(poses)],
            labels=list(ids),
            class_ids=classes,
            show_labels=True,
        )
        self.rec.log("world/actors", boxes)

    def lidar(self, xyz_world_m: np.ndarray, intensity: np.ndarray) -> None:
        points = self.rr.Points3D(xyz_world_m, colors=intensity_colours(intensity), radii=LIDAR_RADIUS_M)
        self.rec.log("world/lidar", points)

    def camera(self, cam: CameraSpec, T_world_camera: np.ndarray, image: np.ndarray | Path) -> None:
        """One camera's pose, pinhole and image: an (H, W, 3) uint8 array (JPEG-compressed here) or a
        PNG / JPEG file logged as it is."""
        rr = self.rr
        entity = f"world/cameras/{cam.name}"
        self.rec.log(entity, rr.Transform3D(translation=T_world_camera[:3, 3], mat3x3=T_world_camera[:3, :3]))
        if self._once(entity):
            pinhole = rr.Pinhole(
                image_from_camera=cam.intrinsics,
                resolution=[cam.width_px, cam.height_px],
                camera_xyz=rr.ViewCoordinates.RDF,
                image_plane_distance=1.0,
            )
            self.rec.log(entity, pinhole, static=True)
        if isinstance(image, Path):
            self.rec.log(f"{entity}/image", rr.EncodedImage(path=image))
        else:
            self.rec.log(f"{entity}/image", rr.Image(image).compress(jpeg_quality=JPEG_QUALITY))

    def scalars(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            if np.isfinite(value):  # an infinite TTC (nothing ahead) is a gap in the plot, not a spike
                self.rec.log(f"metrics/{name}", self.rr.Scalars(float(value)))


def record_log(log: DrivingLog, path: str | Path, max_frames: int | None = None) -> int:
    """Write ``log`` as a Rerun recording (see the module docstring); returns the frames recorded."""
    from neurodrive.logs.io import image_path
    from neurodrive.sim.vehicle import VehicleParameters

    params = VehicleParameters()
    n = log.num_frames if max_frames is None else min(max_frames, log.num_frames)
    speeds = np.r_[0.0, np.linalg.norm(np.diff(log.ego_poses[:, :3, 3], axis=0), axis=1) / np.diff(log.timestamps_s)]
    with RerunRecording(path, log.name) as rec:
        if log.has_map:
            rec.road_map(log.road_map)
        rec.polyline("world/ego_path", log.ego_poses[:, :3, 3], EGO_COLOUR, static=True)
        for f in range(n):
            rec.set_time(f, float(log.timestamps_s[f] - log.timestamps_s[0]))
            rec.ego(log.ego_poses[f], (params.length_m, params.width_m, params.height_m), params.rear_axle_to_centre_m)
            valid = [t for t in log.tracks if t.valid[f]]
            rec.actors(
                [t.actor_id for t in valid],
                [t.category for t in valid],
                np.array([t.poses[f] for t in valid]),
                np.array([t.size_m for t in valid]),
            )
            if log.lidars_at(f):  # every LiDAR's returns in one world-frame cloud
                rec.lidar(*log.world_returns(f))
            for cam in log.rig.cameras:
                if log.has_image(cam.name, f):
                    log.image(cam.name, f)  # decoded once: a corrupt image is one DataError, no recording
                    rec.camera(cam, log.T_world_camera(cam.name, f), image_path(log.root, cam.name, f))
            rec.scalars({"ego_speed_mps": float(speeds[f])})
    return n


class EpisodeRecorder:
    """Records a closed-loop episode step by step (``on_frame``) and its per-step metric signals at the
    end (``finish``), on the timeline of the episode's steps."""

    def __init__(self, rec: RerunRecording, sim: Simulator) -> None:
        self.rec = rec
        if sim.log.has_map:
            rec.road_map(sim.log.road_map)
        route = sim.route.points_m
        rec.polyline("world/route", np.c_[route, np.zeros(len(route))], (250, 200, 40), static=True)

    def on_frame(self, sim: Simulator, obs: Observation) -> None:
        from neurodrive.geometry import transform_points

        rec, p = self.rec, sim.params
        rec.set_time(obs.step, obs.time_s)
        T_world_ego = obs.ego.pose()
        rec.ego(T_world_ego, (p.length_m, p.width_m, p.height_m), p.rear_axle_to_centre_m)
        driven = sim.record.ego_array()[:, :2]
        if len(driven) >= 2:
            rec.polyline("world/ego_path", np.c_[driven, np.full(len(driven), obs.ego.z_m)], EGO_COLOUR)
        actors = list(obs.actors.values())
        rec.actors(
            [a.actor_id for a in actors],
            [a.category for a in actors],
            np.array([a.pose() for a in actors]),
            np.array([a.size_m for a in actors]),
        )
        sensors = obs.sensors
        if sensors is None or sim.rig is None:
            return
        for name, render in sensors.cameras.items():
            cam = sim.rig.camera(name)
            rec.camera(cam, T_world_ego @ cam.T_ego_camera, render.rgb)
        if sensors.lidars:  # every LiDAR's returns in one world-frame cloud
            parts = [(sim.rig.lidar_named(name).T_ego_lidar, r.sweep) for name, r in sensors.lidars.items()]
            xyz = np.concatenate([transform_points(T_world_ego @ T, sw.xyz_m.astype(float)) for T, sw in parts])
            rec.lidar(xyz, np.concatenate([sw.intensity for _, sw in parts]))
        rec.scalars({"realism_confidence": sensors.confidence.score})

    def finish(self, sim: Simulator) -> None:
        from neurodrive.sim.metrics import step_series

        series = step_series(sim.record)
        for k, time_s in enumerate(sim.record.times_s):
            self.rec.set_time(k, time_s)
            self.rec.scalars({name: float(values[k]) for name, values in series.items()})
