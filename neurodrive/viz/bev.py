"""The ego-centred bird's-eye view: drivable area, lanes, route, LiDAR returns, actor boxes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from neurodrive.geometry import from_frame_xy, to_frame_xy, transform_points
from neurodrive.sim.simulator import Observation, Simulator
from neurodrive.sim.state import box_corners_xy


@dataclass(frozen=True)
class BevStyle:
    size_px: int = 360
    range_m: float = 40.0  # metres from the ego to the top edge
    ego_row_share: float = 0.7  # the ego sits this far down the image


class BevProjection:
    """World xy <-> pixels of an ego-centred bird's-eye view (ego heading up)."""

    def __init__(self, ego_x_m: float, ego_y_m: float, ego_yaw_rad: float, style: BevStyle = BevStyle()) -> None:
        self.x, self.y, self.yaw, self.style = ego_x_m, ego_y_m, ego_yaw_rad, style
        self.scale = style.size_px * style.ego_row_share / style.range_m  # px per m

    def to_px(self, xy: np.ndarray) -> list[tuple[float, float]]:
        local = to_frame_xy(np.asarray(xy, float).reshape(-1, 2), self.x, self.y, self.yaw)
        fwd, left = local[:, 0], local[:, 1]
        size = self.style.size_px
        return list(zip(size / 2 - left * self.scale, size * self.style.ego_row_share - fwd * self.scale))

    def to_world(self, u_px: float, v_px: float) -> np.ndarray:
        size = self.style.size_px
        left = (size / 2 - u_px) / self.scale
        fwd = (size * self.style.ego_row_share - v_px) / self.scale
        return from_frame_xy(np.array([fwd, left]), self.x, self.y, self.yaw)


def bird_eye_view(
    sim: Simulator, observation: Observation, style: BevStyle = BevStyle(), selected: str | None = None
) -> np.ndarray:
    """(S, S, 3) uint8: drivable area, lanes, route, LiDAR returns, actor boxes and the ego, ego heading up."""
    s = style.size_px
    ego = observation.ego
    to_px = BevProjection(ego.x_m, ego.y_m, ego.yaw_rad, style).to_px
    img = Image.new("RGB", (s, s), (24, 24, 28))
    draw = ImageDraw.Draw(img)
    for area in sim.log.road_map.drivable_areas:
        draw.polygon(to_px(area), fill=(60, 60, 66))
    for lane in sim.log.road_map.lanes:
        draw.line(to_px(lane.centerline_m), fill=(95, 95, 105), width=1)
    route_s = float(sim.route.project(np.array([ego.x_m, ego.y_m]))[0])
    draw.line(to_px(sim.route.position(route_s + np.linspace(0, 60, 31))), fill=(70, 170, 90), width=3)
    sensors = observation.sensors
    if sensors is not None and sensors.lidars and sim.rig is not None:  # the returns of every LiDAR
        sweeps = [(sim.rig.lidar_named(name), r.sweep) for name, r in sensors.lidars.items()]
        pts = np.concatenate(
            [transform_points(ego.pose() @ lid.T_ego_lidar, sw.xyz_m.astype(float)) for lid, sw in sweeps]
        )
        intensity = np.concatenate([sw.intensity for _, sw in sweeps])
        px = np.array(to_px(pts[:, :2])).reshape(-1, 2)
        inside = (px[:, 0] >= 0) & (px[:, 0] < s) & (px[:, 1] >= 0) & (px[:, 1] < s)
        value = np.clip(60 + 195 * intensity[inside], 0, 255).astype(np.uint8)
        arr = np.asarray(img).copy()
        arr[px[inside, 1].astype(int), px[inside, 0].astype(int)] = np.stack(
            [value, value, np.full_like(value, 255)], axis=1
        )
        img = Image.fromarray(arr)
        draw = ImageDraw.Draw(img)
    hit = {c.actor_id for c in sim.record.collisions} if sim.record else set()
    for a in observation.actors.values():
        corners = box_corners_xy(a.x_m, a.y_m, a.yaw_rad, a.size_m[0], a.size_m[1])[0]
        colour = (230, 60, 60) if a.actor_id in hit else ((255, 255, 90) if a.actor_id == selected else (90, 160, 255))
        draw.polygon(to_px(corners), outline=colour, width=3 if a.actor_id == selected else 2)
    p = sim.params
    cx, cy = ego.centre_xy(p)
    draw.polygon(to_px(box_corners_xy(cx, cy, ego.yaw_rad, p.length_m, p.width_m)[0]), fill=(250, 160, 40))
    return np.asarray(img)
