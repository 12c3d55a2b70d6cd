"""Procedural town: a main road with junctions, sidewalks, buildings, trees, street lights, parked
and moving cars, and pedestrians. Deterministic for a given :class:`TownConfig` (seeded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from neurodrive.geometry import pose_xyz_yaw
from neurodrive.logs.model import Lane, RoadMap
from neurodrive.sources.synthetic.assets import (
    box_part,
    pedestrian_mesh,
    street_light_mesh,
    tree_mesh,
    vehicle_mesh,
)
from neurodrive.sources.synthetic.presets import TownConfig
from neurodrive.sources.synthetic.world import Lighting, Material, MeshPart, RoadSpec, World

CURB_HEIGHT_M = 0.15
SIDEWALK_WIDTH_M = 4.0
BUILDING_SETBACK_M = 1.0
MAIN_ROAD: dict[str, Any] = dict(lanes_per_direction=2, lane_width_m=3.5, parking_width_m=2.5)
CROSS_ROAD: dict[str, Any] = dict(lanes_per_direction=1, lane_width_m=3.5, parking_width_m=2.0)

FACADE_COLORS = [
    (0.36, 0.13, 0.08),  # brick red
    (0.55, 0.45, 0.32),  # beige plaster
    (0.33, 0.33, 0.32),  # grey concrete
    (0.62, 0.60, 0.55),  # white render
    (0.58, 0.47, 0.22),  # ochre
    (0.24, 0.29, 0.36),  # blue-grey
    (0.30, 0.20, 0.13),  # brown brick
    (0.45, 0.27, 0.22),  # terracotta
]
PAINT_COLORS = [
    (0.70, 0.70, 0.68),
    (0.03, 0.03, 0.035),
    (0.40, 0.41, 0.43),
    (0.50, 0.04, 0.03),
    (0.05, 0.12, 0.36),
    (0.12, 0.12, 0.13),
    (0.52, 0.45, 0.33),
    (0.07, 0.20, 0.10),
]
VEHICLE_TYPES = {
    "sedan": np.array([4.6, 1.85, 1.48]),
    "suv": np.array([4.8, 1.95, 1.75]),
    "van": np.array([5.2, 2.0, 2.15]),
    "hatchback": np.array([4.0, 1.75, 1.5]),
}


class MaterialLibrary:
    def __init__(self) -> None:
        self.materials: list[Material] = []

    def add(self, kind: str, color: tuple[float, float, float], **params: float) -> int:
        self.materials.append(
            Material(
                kind, (float(color[0]), float(color[1]), float(color[2])), {k: float(v) for k, v in params.items()}
            )
        )
        return len(self.materials) - 1

    def solid(self, color, noise_amp=0.1, noise_scale=1.0, mirror=0.0, lidar_reflectivity=0.3, lidar_drop=0.01) -> int:
        return self.add(
            "solid",
            color,
            noise_amp=noise_amp,
            noise_scale=noise_scale,
            mirror=mirror,
            lidar_reflectivity=lidar_reflectivity,
            lidar_drop=lidar_drop,
        )


@dataclass(frozen=True)
class ActorPlan:
    """An actor moving at constant speed along a straight path (speed 0: parked)."""

    actor_id: str
    category: str
    size_m: np.ndarray  # (3,) length, width, height
    origin_m: np.ndarray  # (2,) xy of the box centre at t = 0
    heading_rad: float
    speed_mps: float
    z_m: float  # box centre height

    def pose_at(self, t_s: float) -> np.ndarray:
        d = np.array([np.cos(self.heading_rad), np.sin(self.heading_rad)])
        xy = self.origin_m + d * self.speed_mps * t_s
        return pose_xyz_yaw(xy[0], xy[1], self.z_m, self.heading_rad)


@dataclass(frozen=True)
class Town:
    world: World
    road_map: RoadMap
    actors: tuple[ActorPlan, ...]
    ego_lane_y_m: float


def ego_poses(cfg: TownConfig, timestamps_s: np.ndarray, lane_y_m: float) -> np.ndarray:
    """Ego drives along its lane with a gently varying speed: (N, 4, 4) T_world_ego."""
    period = 5.0
    amp = 0.6
    x = (
        cfg.ego_start_x_m
        + cfg.ego_speed_mps * timestamps_s
        + amp * period / (2 * np.pi) * (1 - np.cos(2 * np.pi * timestamps_s / period))
    )
    return np.stack([pose_xyz_yaw(xi, lane_y_m, 0.0, 0.0) for xi in x])


def build_town(cfg: TownConfig) -> Town:
    """The town of ``cfg``: static world, materials, lighting, the road map and the actors' plans."""
    rng = np.random.default_rng(cfg.seed)  # one stream, drawn in a fixed order by the steps below
    lib = MaterialLibrary()
    (ex0, ex1), (ey0, ey1) = cfg.extent_x_m, cfg.extent_y_m
    main = RoadSpec("x", 0.0, start_m=ex0, end_m=ex1, **MAIN_ROAD)
    cross = [RoadSpec("y", xc, start_m=ey0, end_m=ey1, **CROSS_ROAD) for xc in cfg.cross_roads_x_m]
    roads = (main, *cross)
    hw, hwc = (
        main.half_width_m,
        CROSS_ROAD["lanes_per_direction"] * CROSS_ROAD["lane_width_m"] + CROSS_ROAD["parking_width_m"],
    )
    m = _materials(lib)
    parts, buildings = _ground_and_blocks(cfg, lib, rng, m, hw, hwc)
    parts += _buildings(buildings, lib, rng, m)
    parts += _trees_and_lights(cfg, rng, m, hw, hwc)
    actors, meshes, ego_lane_y = _actors(cfg, lib, rng, m, hw, hwc)
    sun = np.array([-0.45, -0.5, 0.74])
    world = World(
        static=MeshPart.concatenate(parts),
        actor_meshes=meshes,
        materials=tuple(lib.materials),
        roads=roads,
        lighting=Lighting(
            tuple((sun / np.linalg.norm(sun)).tolist()), sun_radiance=2.4, sky_radiance=1.0, seed=cfg.seed
        ),
    )
    return Town(world, _road_map(main, cross, hw, hwc, cfg), tuple(actors), ego_lane_y)


def _near_junction(cfg: TownConfig, hwc: float, x: float, margin: float) -> bool:
    return any(abs(x - xc) < hwc + margin for xc in cfg.cross_roads_x_m)


def _materials(lib: MaterialLibrary) -> dict[str, Any]:
    """Material ids of the static world and the actors (no random draws)."""
    road_mat = lib.add("road", (0.1, 0.1, 0.1))
    curb_mat = lib.solid((0.42, 0.41, 0.39), noise_amp=0.15, noise_scale=3.0, lidar_reflectivity=0.4)
    roof_mat = lib.solid((0.09, 0.09, 0.1), noise_amp=0.3, noise_scale=0.5, lidar_reflectivity=0.2)
    bark_mat = lib.solid((0.10, 0.07, 0.045), noise_amp=0.4, noise_scale=4.0, lidar_reflectivity=0.25)
    foliage_mats = [
        lib.solid((0.045, 0.11, 0.025), noise_amp=0.6, noise_scale=2.5, lidar_reflectivity=0.3, lidar_drop=0.08),
        lib.solid((0.07, 0.13, 0.03), noise_amp=0.6, noise_scale=2.5, lidar_reflectivity=0.3, lidar_drop=0.08),
    ]
    metal_mat = lib.solid((0.22, 0.23, 0.24), noise_amp=0.1, lidar_reflectivity=0.5)
    lamp_mat = lib.solid((0.8, 0.78, 0.7), noise_amp=0.0, lidar_reflectivity=0.6)
    glass_mat = lib.solid((0.02, 0.025, 0.03), noise_amp=0.0, mirror=0.45, lidar_reflectivity=0.05, lidar_drop=0.9)
    tire_mat = lib.solid((0.025, 0.025, 0.025), noise_amp=0.1, lidar_reflectivity=0.05, lidar_drop=0.05)
    head_mat = lib.solid((0.8, 0.8, 0.75), noise_amp=0.0, mirror=0.2, lidar_reflectivity=0.9)
    tail_mat = lib.solid((0.55, 0.03, 0.02), noise_amp=0.0, mirror=0.2, lidar_reflectivity=0.9)
    skin_mat = lib.solid((0.45, 0.30, 0.22), noise_amp=0.05, lidar_reflectivity=0.3)

    return {
        "road_mat": road_mat,
        "curb_mat": curb_mat,
        "roof_mat": roof_mat,
        "bark_mat": bark_mat,
        "foliage_mats": foliage_mats,
        "metal_mat": metal_mat,
        "lamp_mat": lamp_mat,
        "glass_mat": glass_mat,
        "tire_mat": tire_mat,
        "head_mat": head_mat,
        "tail_mat": tail_mat,
        "skin_mat": skin_mat,
    }


def _ground_and_blocks(
    cfg: TownConfig, lib: MaterialLibrary, rng: np.random.Generator, m: dict[str, Any], hw: float, hwc: float
) -> tuple[list[MeshPart], list[tuple[float, float, float, float]]]:
    """The ground plane, the raised blocks between the roads, and the footprints of their buildings."""
    (ex0, ex1), (ey0, ey1) = cfg.extent_x_m, cfg.extent_y_m
    road_mat, curb_mat = m["road_mat"], m["curb_mat"]
    parts: list[MeshPart] = []
    # ground plane (roads, and a field beyond the town)
    big = 1000.0
    parts.append(
        MeshPart(
            np.array([[-big, -big, 0], [big, -big, 0], [big, big, 0], [-big, big, 0]], np.float32),
            np.array([[0, 1, 2], [0, 2, 3]], np.int32),
            np.array([road_mat, road_mat], np.int32),
        )
    )
    # blocks between the roads: raised slabs with sidewalk + grass, curb on the sides
    x_edges = [ex0] + [v for xc in cfg.cross_roads_x_m for v in (xc - hwc, xc + hwc)] + [ex1]
    x_spans = [(x_edges[i], x_edges[i + 1]) for i in range(0, len(x_edges), 2)]
    y_spans = [(ey0, -hw), (hw, ey1)]
    buildings: list[tuple[float, float, float, float]] = []
    for bx0, bx1 in x_spans:
        for by0, by1 in y_spans:
            block_mat = lib.add(
                "block", (0.3, 0.3, 0.3), x0=bx0, x1=bx1, y0=by0, y1=by1, sidewalk_width=SIDEWALK_WIDTH_M
            )
            parts.append(box_part([bx0, by0, -0.5], [bx1, by1, CURB_HEIGHT_M], curb_mat, top_material_id=block_mat))
            north = by0 > 0
            left_is_road = bx0 > ex0 + 1e-6
            right_is_road = bx1 < ex1 - 1e-6
            inset = SIDEWALK_WIDTH_M + BUILDING_SETBACK_M
            # frontage on the main road
            x = bx0 + (inset if left_is_road else 2.0)
            x_end = bx1 - (inset if right_is_road else 2.0)
            front_y = by0 + inset if north else by1 - inset
            while x < x_end - 6.0:
                width = min(rng.uniform(10.0, 24.0), x_end - x)
                depth = rng.uniform(12.0, 20.0)
                y_lo, y_hi = (front_y, front_y + depth) if north else (front_y - depth, front_y)
                buildings.append((x, x + width, y_lo, y_hi))
                x += width + rng.uniform(0.0, 3.0)
            # frontage on each adjoining cross road, beyond the main-road buildings
            for is_road, edge, sign in ((left_is_road, bx0, 1.0), (right_is_road, bx1, -1.0)):
                if not is_road:
                    continue
                y = (by0 + inset + 22.0) if north else (by1 - inset - 22.0)
                y_stop = by1 - 2.0 if north else by0 + 2.0
                front_x = edge + sign * inset
                while (y < y_stop - 6.0) if north else (y > y_stop + 6.0):
                    width = min(rng.uniform(10.0, 22.0), abs(y_stop - y))
                    depth = rng.uniform(10.0, 18.0)
                    xa, xb = sorted((front_x, front_x + sign * depth))
                    ya, yb = sorted((y, y + (width if north else -width)))
                    buildings.append((xa, xb, ya, yb))
                    y += (width + rng.uniform(0.0, 3.0)) * (1 if north else -1)
    return parts, buildings


def _buildings(
    buildings: list[tuple[float, float, float, float]],
    lib: MaterialLibrary,
    rng: np.random.Generator,
    m: dict[str, Any],
) -> list[MeshPart]:
    """One textured box per footprint: floors, window grid and shop fronts drawn at random."""
    parts: list[MeshPart] = []
    roof_mat = m["roof_mat"]
    for i, (x0, x1, y0, y1) in enumerate(buildings):
        floors = int(rng.integers(2, 7))
        floor_h = rng.uniform(3.0, 3.6)
        spacing = rng.uniform(2.6, 3.6)
        facade = lib.add(
            "facade",
            FACADE_COLORS[int(rng.integers(len(FACADE_COLORS)))],
            x0=x0,
            y0=y0,
            z0=CURB_HEIGHT_M,
            floor_h=floor_h,
            win_spacing=spacing,
            win_w=rng.uniform(1.0, min(1.7, spacing - 0.8)),
            win_h=rng.uniform(1.3, 1.8),
            sill=0.9,
            shop=float(rng.random() < 0.5),
            seed=float(i),
        )
        top = CURB_HEIGHT_M + floors * floor_h + rng.uniform(0.3, 0.8)
        parts.append(box_part([x0, y0, CURB_HEIGHT_M], [x1, y1, top], facade, top_material_id=roof_mat))

    return parts


def _trees_and_lights(
    cfg: TownConfig, rng: np.random.Generator, m: dict[str, Any], hw: float, hwc: float
) -> list[MeshPart]:
    """Trees and street lights along the sidewalks of the main road, trees along the cross roads."""
    (ex0, ex1), (ey0, ey1) = cfg.extent_x_m, cfg.extent_y_m
    parts: list[MeshPart] = []
    bark_mat, foliage_mats, metal_mat, lamp_mat = m["bark_mat"], m["foliage_mats"], m["metal_mat"], m["lamp_mat"]

    def near_junction(x: float, margin: float) -> bool:
        return _near_junction(cfg, hwc, x, margin)

    for side in (-1.0, 1.0):
        x = ex0 + rng.uniform(3.0, 8.0)
        while x < ex1 - 3.0:
            if not near_junction(x, 7.0):
                pos = np.array([x + rng.uniform(-1, 1), side * (hw + 2.3), CURB_HEIGHT_M])
                parts.append(tree_mesh(pos, rng, bark_mat, foliage_mats[int(rng.integers(2))]))
            x += rng.uniform(11.0, 16.0)
        x = ex0 + 10.0 + (0 if side < 0 else 16.0)
        while x < ex1 - 3.0:
            if not near_junction(x, 4.0):
                parts.append(
                    street_light_mesh(
                        np.array([x, side * (hw + 0.6), CURB_HEIGHT_M]), np.array([0.0, -side]), metal_mat, lamp_mat
                    )
                )
            x += 32.0
    for xc in cfg.cross_roads_x_m:
        for side in (-1.0, 1.0):
            for ysign in (-1.0, 1.0):
                y = hw + 8.0
                while y < (ey1 if ysign > 0 else -ey0) - 3.0:
                    pos = np.array([xc + side * (hwc + 2.3), ysign * y, CURB_HEIGHT_M])
                    parts.append(tree_mesh(pos, rng, bark_mat, foliage_mats[int(rng.integers(2))]))
                    y += rng.uniform(12.0, 17.0)

    return parts


def _actors(
    cfg: TownConfig, lib: MaterialLibrary, rng: np.random.Generator, m: dict[str, Any], hw: float, hwc: float
) -> tuple[list[ActorPlan], dict[str, MeshPart], float]:
    """Moving and parked cars and pedestrians: their plans, meshes, and the ego's lane offset."""
    glass_mat, tire_mat, head_mat, tail_mat, skin_mat = (
        m["glass_mat"],
        m["tire_mat"],
        m["head_mat"],
        m["tail_mat"],
        m["skin_mat"],
    )

    def near_junction(x: float, margin: float) -> bool:
        return _near_junction(cfg, hwc, x, margin)

    actors: list[ActorPlan] = []
    meshes: dict[str, MeshPart] = {}
    lane_w = MAIN_ROAD["lane_width_m"]
    ego_lane_y = -1.5 * lane_w

    def add_vehicle(origin, heading, speed):
        kind = list(VEHICLE_TYPES)[int(rng.integers(len(VEHICLE_TYPES)))]
        size = VEHICLE_TYPES[kind] * rng.uniform(0.97, 1.03, 3)
        paint = lib.solid(
            PAINT_COLORS[int(rng.integers(len(PAINT_COLORS)))], noise_amp=0.03, mirror=0.1, lidar_reflectivity=0.55
        )
        aid = f"vehicle_{len([a for a in actors if a.category == 'car']):03d}"
        meshes[aid] = vehicle_mesh(
            size, paint, glass_mat, tire_mat, head_mat, tail_mat, "van" if kind == "van" else "car"
        )
        actors.append(ActorPlan(aid, "car", size, np.asarray(origin, float), heading, speed, size[2] / 2))

    x0, v0 = cfg.ego_start_x_m, cfg.ego_speed_mps
    moving = [
        ((x0 + 20.0, ego_lane_y), 0.0, v0),  # lead vehicle in the ego lane
        ((x0 - 14.0, -0.5 * lane_w), 0.0, v0 + 3.5),  # overtakes in the adjacent lane
        ((x0 + 70.0, 0.5 * lane_w), np.pi, 10.0),  # oncoming
        ((x0 + 40.0, 1.5 * lane_w), np.pi, 7.0),  # oncoming, outer lane
        ((cfg.cross_roads_x_m[0] + 0.5 * lane_w, -2.0), np.pi / 2, 8.0),  # leaving the junction
        ((x0 + 48.0, -0.5 * lane_w), 0.0, v0 - 1.0),  # further ahead
    ]
    for origin, heading, speed in moving[: cfg.num_moving_cars]:
        add_vehicle(origin, heading, speed)
    parking_y = 2 * lane_w + MAIN_ROAD["parking_width_m"] / 2
    candidates = [
        (x, side) for side in (-1.0, 1.0) for x in np.arange(x0 - 25.0, x0 + 100.0, 6.5) if not near_junction(x, 10.0)
    ]
    chosen = rng.choice(len(candidates), size=min(cfg.num_parked_cars, len(candidates)), replace=False)
    for k in sorted(chosen):
        x, side = candidates[k]
        heading = (0.0 if side < 0 else np.pi) + rng.uniform(-0.03, 0.03)
        add_vehicle((x + rng.uniform(-0.5, 0.5), side * (parking_y + rng.uniform(-0.1, 0.1))), heading, 0.0)
    walkers = [
        ((x0 + 15.0, -(hw + 3.0)), 0.0, 1.3),
        ((x0 + 35.0, hw + 3.0), np.pi, 1.2),
        ((x0 + 55.0, -(hw + 3.2)), np.pi, 1.4),
    ]
    shirt_colors = [(0.5, 0.08, 0.06), (0.08, 0.15, 0.4), (0.45, 0.42, 0.1)]
    for i, (origin, heading, speed) in enumerate(walkers[: cfg.num_pedestrians]):
        aid = f"pedestrian_{i:03d}"
        size = np.array([0.5, 0.62, 1.75])
        top = lib.solid(shirt_colors[i % 3], noise_amp=0.1, lidar_reflectivity=0.35)
        bottom = lib.solid((0.06, 0.06, 0.09), noise_amp=0.1, lidar_reflectivity=0.25)
        meshes[aid] = pedestrian_mesh(size, top, bottom, skin_mat)
        actors.append(
            ActorPlan(aid, "pedestrian", size, np.asarray(origin, float), heading, speed, CURB_HEIGHT_M + size[2] / 2)
        )

    return actors, meshes, ego_lane_y


def _road_map(main: RoadSpec, cross: list[RoadSpec], hw: float, hwc: float, cfg: TownConfig) -> RoadMap:
    (ex0, ex1), (ey0, ey1) = cfg.extent_x_m, cfg.extent_y_m
    areas = [np.array([[ex0, -hw], [ex1, -hw], [ex1, hw], [ex0, hw]])]
    lanes: list[Lane] = []
    xs = np.linspace(ex0, ex1, int((ex1 - ex0) / 10.0) + 1)
    for k in range(main.lanes_per_direction):
        c = (k + 0.5) * main.lane_width_m
        lanes.append(Lane(f"main_east_{k}", np.stack([xs, np.full_like(xs, -c)], 1), main.lane_width_m, 13.9))
        lanes.append(Lane(f"main_west_{k}", np.stack([xs[::-1], np.full_like(xs, c)], 1), main.lane_width_m, 13.9))
    ys = np.linspace(ey0, ey1, int((ey1 - ey0) / 10.0) + 1)
    for j, road in enumerate(cross):
        xc = road.center_m
        areas.append(np.array([[xc - hwc, ey0], [xc + hwc, ey0], [xc + hwc, ey1], [xc - hwc, ey1]]))
        c = 0.5 * road.lane_width_m
        lanes.append(Lane(f"cross{j}_north", np.stack([np.full_like(ys, xc + c), ys], 1), road.lane_width_m, 11.1))
        lanes.append(
            Lane(f"cross{j}_south", np.stack([np.full_like(ys, xc - c), ys[::-1]], 1), road.lane_width_m, 11.1)
        )
    return RoadMap(tuple(areas), tuple(lanes))
