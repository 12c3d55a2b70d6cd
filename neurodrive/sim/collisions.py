"""Collisions between oriented boxes, checked on sub-steps between simulation steps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from neurodrive.geometry import wrap_angle
from neurodrive.sim.state import ActorState, WorldState, box_corners_xy
from neurodrive.sim.vehicle import VehicleParameters

STOPPED_MPS = 0.05


@dataclass(frozen=True)
class CollisionEvent:
    time_s: float
    actor_id: str
    category: str
    ego_speed_mps: float
    actor_speed_mps: float
    relative_speed_mps: float  # closing speed at contact
    contact: str  # where on the ego: "front", "side" or "rear"
    at_fault: bool  # ego moving and hitting with its front or side (simplified nuPlan rule)


def footprints(states: list[ActorState]) -> np.ndarray:
    """Shapely polygons (n,) of the boxes' footprints."""
    if not states:
        return np.empty(0, object)
    a = np.array([[s.x_m, s.y_m, s.yaw_rad, s.size_m[0], s.size_m[1]] for s in states])
    return shapely.polygons(box_corners_xy(a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4]))


def _lerp(a: ActorState, b: ActorState, f: float) -> ActorState:
    dyaw = wrap_angle(b.yaw_rad - a.yaw_rad)
    return ActorState(
        a.actor_id,
        a.category,
        a.x_m + f * (b.x_m - a.x_m),
        a.y_m + f * (b.y_m - a.y_m),
        a.z_m,
        a.yaw_rad + f * dyaw,
        a.speed_mps + f * (b.speed_mps - a.speed_mps),
        a.size_m,
    )


def _contact(ego: ActorState, other: ActorState, overlap: shapely.Geometry) -> str:
    cx, cy = overlap.centroid.x - ego.x_m, overlap.centroid.y - ego.y_m
    along = cx * np.cos(ego.yaw_rad) + cy * np.sin(ego.yaw_rad)
    half = ego.size_m[0] / 2
    return "front" if along > half - 1.0 else ("rear" if along < -half + 1.0 else "side")


def detect_collisions(
    before: WorldState,
    after: WorldState,
    params: VehicleParameters,
    substeps: int = 4,
    ignore: frozenset[str] | set[str] = frozenset(),
) -> list[CollisionEvent]:
    """First contacts of the ego with actors between two states (actors in ``ignore`` skipped)."""
    ego0, ego1 = before.ego_box(params), after.ego_box(params)
    ids = [a for a in after.actors if a in before.actors and a not in ignore]
    events: list[CollisionEvent] = []
    for k in range(1, substeps + 1):
        f = k / substeps
        ego = _lerp(ego0, ego1, f)
        others = [_lerp(before.actors[a], after.actors[a], f) for a in ids if a not in {e.actor_id for e in events}]
        if not others:
            break
        ego_poly = footprints([ego])[0]
        polys = footprints(others)
        for other, poly in zip(others, polys):
            if not shapely.intersects(ego_poly, poly):
                continue
            contact = _contact(ego, other, shapely.intersection(ego_poly, poly))
            rel = float(np.linalg.norm(ego.velocity_xy() - other.velocity_xy()))
            at_fault = ego.speed_mps > STOPPED_MPS and contact != "rear"
            events.append(
                CollisionEvent(
                    before.time_s + f * (after.time_s - before.time_s),
                    other.actor_id,
                    other.category,
                    ego.speed_mps,
                    other.speed_mps,
                    rel,
                    contact,
                    at_fault,
                )
            )
    return events
