"""Procedural materials and sky of the synthetic world (linear RGB).

Each shader maps hit points to an albedo plus the optical numbers the renderers need: mirror
reflectance (sky reflections on glass and paint), LiDAR reflectivity and LiDAR drop probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurodrive.sources.synthetic.noise import cell_random, fbm
from neurodrive.sources.synthetic.world import Lighting, RoadSpec, World

WHITE_PAINT = np.array([0.72, 0.72, 0.70])
YELLOW_PAINT = np.array([0.75, 0.52, 0.08])
SKY_ZENITH = np.array([0.22, 0.42, 0.85])
SKY_HORIZON = np.array([0.72, 0.80, 0.90])
SUN_COLOR = np.array([1.0, 0.95, 0.86])
GROUND_HAZE = np.array([0.30, 0.30, 0.28])


@dataclass
class SurfaceResponse:
    albedo: np.ndarray  # (n, 3) linear
    mirror: np.ndarray  # (n,) sky-reflection strength
    lidar_reflectivity: np.ndarray  # (n,)
    lidar_drop: np.ndarray  # (n,) base probability of no return


class MaterialTable:
    """Per-material parameters as arrays so shading is vectorised over hits."""

    KINDS = ("solid", "road", "block", "facade")

    def __init__(self, world: World) -> None:
        mats = world.materials
        self.kind = np.array([self.KINDS.index(m.kind) for m in mats], dtype=np.int32)
        self.color = np.array([m.color for m in mats], dtype=np.float64)
        names = sorted({k for m in mats for k in m.params})
        self.params = {k: np.array([m.params.get(k, 0.0) for m in mats], dtype=np.float64) for k in names}
        self.roads = world.roads
        self.lighting = world.lighting

    def p(self, name: str, mat: np.ndarray) -> np.ndarray:
        table = self.params.get(name)
        return np.zeros(len(mat)) if table is None else table[mat]

    def shade(self, points: np.ndarray, normals: np.ndarray, mat: np.ndarray) -> SurfaceResponse:
        n = len(mat)
        out = SurfaceResponse(np.zeros((n, 3)), np.zeros(n), np.zeros(n), np.zeros(n))
        kinds = self.kind[mat]
        for k, shader in enumerate((self._solid, self._road, self._block, self._facade)):
            sel = np.nonzero(kinds == k)[0]
            if len(sel):
                albedo, mirror, refl, drop = shader(points[sel], normals[sel], mat[sel])
                out.albedo[sel], out.mirror[sel], out.lidar_reflectivity[sel], out.lidar_drop[sel] = (
                    albedo,
                    mirror,
                    refl,
                    drop,
                )
        return out

    # ------------------------------------------------------------------ shaders

    def _solid(self, p: np.ndarray, n: np.ndarray, mat: np.ndarray):
        scale = np.maximum(self.p("noise_scale", mat), 1e-3)
        noise = fbm(p[:, 0] * scale, p[:, 1] * scale, p[:, 2] * scale, octaves=3, seed=5)
        amp = self.p("noise_amp", mat)
        albedo = self.color[mat] * (1.0 + amp[:, None] * (noise[:, None] - 0.5) * 2.0)
        return albedo, self.p("mirror", mat), self.p("lidar_reflectivity", mat), self.p("lidar_drop", mat)

    def _road(self, p: np.ndarray, n: np.ndarray, mat: np.ndarray):
        x, y = p[:, 0], p[:, 1]
        grain = fbm(x * 3.0, y * 3.0, octaves=3, seed=11)
        patches = fbm(x * 0.15, y * 0.15, octaves=2, seed=12)
        asphalt = (0.075 + 0.035 * grain + 0.03 * patches)[:, None] * np.array([1.0, 1.0, 1.02])
        albedo = asphalt.copy()
        refl = 0.10 + 0.04 * grain
        on_road = np.zeros(len(p), bool)
        white = np.zeros(len(p), bool)
        yellow = np.zeros(len(p), bool)
        for road in self.roads:
            a, c = _road_coords(road, x, y)
            inside = (np.abs(c) <= road.half_width_m) & (a >= road.start_m) & (a <= road.end_m)
            on_road |= inside
            in_junction = np.zeros(len(p), bool)
            for other in self.roads:
                if other.axis != road.axis:
                    oa, oc = _road_coords(other, x, y)
                    in_junction |= np.abs(oc) <= other.half_width_m
                    # crosswalk stripes and stop line before each junction
                    e = np.abs(a - other.center_m) - other.half_width_m
                    crosswalk = (e > 0.6) & (e < 3.6) & (np.mod(c, 1.1) < 0.55) & (np.abs(c) < road.half_width_m - 0.4)
                    approaching = np.where(a < other.center_m, c < 0, c > 0)
                    lanes = road.lanes_per_direction * road.lane_width_m
                    stop = (e > 4.2) & (e < 4.6) & approaching & (np.abs(c) < lanes)
                    white |= inside & (crosswalk | stop)
            lanes_w = road.lanes_per_direction * road.lane_width_m
            center = (np.abs(c) > 0.08) & (np.abs(c) < 0.22)
            divider = np.zeros(len(p), bool)
            for k in range(1, road.lanes_per_direction):
                divider |= (np.abs(np.abs(c) - k * road.lane_width_m) < 0.075) & (np.mod(a, 9.0) < 3.0)
            edge = np.abs(np.abs(c) - lanes_w) < 0.08
            painted = inside & ~in_junction
            yellow |= painted & center
            white |= painted & (divider | edge)
        wear = (0.75 + 0.25 * fbm(x * 2.0, y * 2.0, octaves=2, seed=13))[:, None]
        albedo[white] = (WHITE_PAINT * wear[white]) + 0.0
        albedo[yellow] = YELLOW_PAINT * wear[yellow]
        refl[white | yellow] = 0.7
        # outside the road network: dry grassy field
        field = ~on_road
        field_noise = fbm(x[field] * 0.8, y[field] * 0.8, octaves=3, seed=14)[:, None]
        albedo[field] = np.array([0.10, 0.12, 0.05]) * (0.7 + 0.6 * field_noise)
        refl[field] = 0.25
        drop = np.full(len(p), 0.005)
        return albedo, np.zeros(len(p)), refl, drop

    def _block(self, p: np.ndarray, n: np.ndarray, mat: np.ndarray):
        x, y = p[:, 0], p[:, 1]
        x0, x1, y0, y1 = (self.p(k, mat) for k in ("x0", "x1", "y0", "y1"))
        walk = self.p("sidewalk_width", mat)
        u, v = x - x0, y - y0
        d = np.minimum.reduce([x - x0, x1 - x, y - y0, y1 - y])
        tile = 1.5
        seam = (np.mod(u, tile) < 0.04) | (np.mod(v, tile) < 0.04)
        tile_var = cell_random(np.floor(u / tile), np.floor(v / tile), seed=21)
        grain = fbm(x * 4.0, y * 4.0, octaves=2, seed=22)
        concrete = (0.30 + 0.05 * tile_var + 0.05 * grain)[:, None] * np.array([1.0, 0.98, 0.95])
        concrete[seam] *= 0.55
        grass_noise = fbm(x * 1.2, y * 1.2, octaves=3, seed=23)[:, None]
        grass = np.array([0.06, 0.14, 0.035]) * (0.6 + 0.8 * grass_noise)
        sidewalk = d < walk
        albedo = np.where(sidewalk[:, None], concrete, grass)
        refl = np.where(sidewalk, 0.35, 0.22)
        drop = np.where(sidewalk, 0.005, 0.03)
        return albedo, np.zeros(len(p)), refl, drop

    def _facade(self, p: np.ndarray, n: np.ndarray, mat: np.ndarray):
        x0, y0, z0 = self.p("x0", mat), self.p("y0", mat), self.p("z0", mat)
        along_y = np.abs(n[:, 0]) > np.abs(n[:, 1])
        u = np.where(along_y, p[:, 1] - y0, p[:, 0] - x0)
        v = p[:, 2] - z0
        floor_h, spacing = self.p("floor_h", mat), self.p("win_spacing", mat)
        win_w, win_h, sill = self.p("win_w", mat), self.p("win_h", mat), self.p("sill", mat)
        seed = self.p("seed", mat)
        floor = np.floor(v / floor_h)
        vv = v - floor * floor_h
        cell = np.floor(u / spacing)
        uu = u - cell * spacing - (spacing - win_w) / 2
        shop = (self.p("shop", mat) > 0.5) & (floor == 0)
        w_lo, w_hi = np.where(shop, 0.5, sill), np.where(shop, 2.7, sill + win_h)
        win_wid = np.where(shop, spacing - 0.5, win_w)
        uu = np.where(shop, u - cell * spacing - 0.25, uu)
        in_win = (uu >= 0) & (uu <= win_wid) & (vv >= w_lo) & (vv <= w_hi) & ((floor >= 1) | shop)
        border = 0.09
        in_glass = in_win & (uu >= border) & (uu <= win_wid - border) & (vv >= w_lo + border) & (vv <= w_hi - border)
        in_frame = in_win & ~in_glass
        # wall: base colour, large-scale stains, a darker band at every floor line
        stains = fbm(u * 0.25 + seed, v * 0.25, octaves=3, seed=31)
        grain = fbm(u * 3.0, v * 3.0 + seed, octaves=2, seed=32)
        wall = self.color[mat] * (0.8 + 0.3 * stains + 0.12 * grain)[:, None]
        cornice = vv < 0.22
        wall[cornice & (floor >= 1)] *= 0.7
        plinth = v < 0.6
        wall[plinth] *= 0.6
        albedo = wall
        frame_color = np.array([0.55, 0.55, 0.52])
        albedo[in_frame] = frame_color
        rnd = cell_random(cell + 1000 * seed, floor, seed=33)
        glass = np.array([0.025, 0.03, 0.035]) * np.ones((len(p), 1))
        curtain = rnd > 0.7
        glass[curtain] = np.array([0.35, 0.30, 0.22]) * (0.6 + 0.4 * rnd[curtain, None])
        albedo[in_glass] = glass[in_glass]
        mirror = np.where(in_glass, np.where(curtain, 0.08, 0.4), 0.0)
        refl = np.where(in_glass, 0.05, np.where(in_frame, 0.5, 0.4))
        drop = np.where(in_glass, 0.9, 0.01)
        return albedo, mirror, refl, drop


def _road_coords(road: RoadSpec, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(along, across) coordinates; lanes driving towards +along lie at across < 0 (right-hand traffic)."""
    if road.axis == "x":
        return x, y - road.center_m
    return y, -(x - road.center_m)


def sky_radiance(dirs: np.ndarray, lighting: Lighting) -> np.ndarray:
    """Linear radiance (n, 3) of the sky seen along unit directions (n, 3)."""
    sun = np.asarray(lighting.sun_direction)
    elev = dirs[:, 2]
    t = np.sqrt(np.clip(elev, 0.0, 1.0))[:, None]
    sky = SKY_HORIZON * (1 - t) + SKY_ZENITH * t
    cos_sun = np.clip(dirs @ sun, 0.0, 1.0)[:, None]
    sky = sky + SUN_COLOR * (0.35 * cos_sun**8 + 4.0 * cos_sun**400)
    up = elev > 0.01
    if np.any(up):
        d = dirs[up]
        px, py = d[:, 0] / (d[:, 2] + 0.15), d[:, 1] / (d[:, 2] + 0.15)
        c = fbm(px * 1.5 + 3.1, py * 1.5, octaves=4, seed=lighting.seed + 41)
        cover = np.clip((c - 0.48) * 3.0, 0.0, 1.0)[:, None] * np.clip(d[:, 2:3] * 6.0, 0.0, 1.0)
        cloud = np.array([0.92, 0.92, 0.94]) * (0.8 + 0.25 * c[:, None])
        sky[up] = sky[up] * (1 - cover) + cloud * cover
    below = elev < 0
    sky[below] = GROUND_HAZE
    return sky * lighting.sky_radiance


def shade_hits(
    table: MaterialTable,
    response: SurfaceResponse,
    normals: np.ndarray,
    view_dirs: np.ndarray,
    sun_visible: np.ndarray,
) -> np.ndarray:
    """Outgoing linear radiance (n, 3) of lit surfaces: sky ambient + sun with shadows + sky reflection."""
    lighting = table.lighting
    sun = np.asarray(lighting.sun_direction)
    cos_sun = np.clip(normals @ sun, 0.0, 1.0) * sun_visible
    ambient = lighting.sky_radiance * (0.35 + 0.25 * normals[:, 2])[:, None] * np.array([0.85, 0.9, 1.05])
    radiance = response.albedo * (ambient + lighting.sun_radiance * cos_sun[:, None] * SUN_COLOR)
    refl_mask = response.mirror > 0
    if np.any(refl_mask):
        d = view_dirs[refl_mask]
        nn = normals[refl_mask]
        r = d - 2 * np.sum(d * nn, axis=1, keepdims=True) * nn
        cos_i = np.abs(np.sum(d * nn, axis=1))
        fresnel = response.mirror[refl_mask] * (0.35 + 0.65 * (1 - cos_i) ** 3)
        radiance[refl_mask] += fresnel[:, None] * sky_radiance(r, lighting)
    return radiance
