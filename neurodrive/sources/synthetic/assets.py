"""Mesh builders for the synthetic world: vehicles, pedestrians, trees, street lights, boxes.

Actor meshes are built in their box frame (centred, x forward, y left, z up) and fill the box.
"""

from __future__ import annotations

import numpy as np
import trimesh

from neurodrive.sources.synthetic.world import MeshPart


def part_from_trimesh(mesh: trimesh.Trimesh, material_id: int | np.ndarray) -> MeshPart:
    mats = np.broadcast_to(np.asarray(material_id, dtype=np.int32), (len(mesh.faces),))
    return MeshPart(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32), mats.copy())


def box_part(lo_m: list[float], hi_m: list[float], material_id: int, top_material_id: int | None = None) -> MeshPart:
    """Axis-aligned box from corner ``lo_m`` to ``hi_m``; optional separate material for the top face."""
    lo, hi = np.asarray(lo_m, float), np.asarray(hi_m, float)
    mesh = trimesh.creation.box(extents=hi - lo)
    mesh.apply_translation((lo + hi) / 2)
    mats = np.full(len(mesh.faces), material_id, np.int32)
    if top_material_id is not None:
        mats[mesh.face_normals[:, 2] > 0.9] = top_material_id
    return part_from_trimesh(mesh, mats)


def _hull_part(points: np.ndarray, side_material: int, top_material: int) -> MeshPart:
    mesh = trimesh.Trimesh(vertices=points).convex_hull
    mats = np.where(np.abs(mesh.face_normals[:, 2]) > 0.9, top_material, side_material).astype(np.int32)
    return part_from_trimesh(mesh, mats)


def _wheel(x: float, y: float, z: float, radius: float, width: float, material_id: int) -> MeshPart:
    mesh = trimesh.creation.cylinder(radius=radius, height=width, sections=14)
    mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    mesh.apply_translation([x, y, z])
    return part_from_trimesh(mesh, material_id)


def vehicle_mesh(
    size_m: np.ndarray, paint: int, glass: int, tire: int, headlight: int, taillight: int, style: str = "sedan"
) -> MeshPart:
    """A car-like vehicle filling a box of ``size_m`` (length, width, height)."""
    length, width, height = (float(s) for s in size_m)
    hl, hw, hh = length / 2, width / 2, height / 2
    wheel_r = min(0.36, 0.24 * height)
    bottom = -hh
    clearance = 0.55 * wheel_r
    belt = bottom + (0.52 if style != "van" else 0.62) * height
    parts = []
    for sx in (1, -1):
        for sy in (1, -1):
            parts.append(
                _wheel(sx * (hl - 0.85 * length / 4.6), sy * (hw - 0.13), bottom + wheel_r, wheel_r, 0.24, tire)
            )
    parts.append(box_part([-hl, -hw + 0.04, bottom + clearance], [hl, hw - 0.04, belt], paint))
    if style == "van":
        cabin_bottom = [[-hl + 0.1, -hw + 0.08], [hl - 0.9, -hw + 0.08]]
        cabin_top = [[-hl + 0.15, -hw + 0.16], [hl - 1.3, -hw + 0.16]]
    else:
        cabin_bottom = [[-hl + 0.55, -hw + 0.1], [hl - 1.25, -hw + 0.1]]
        cabin_top = [[-hl + 0.95, -hw + 0.24], [hl - 2.05, -hw + 0.24]]
    pts = []
    for (x0, y0), (x1, _), z in ((cabin_bottom[0], cabin_bottom[1], belt), (cabin_top[0], cabin_top[1], hh)):
        for x in (x0, x1):
            for y in (y0, -y0):
                pts.append([x, y, z])
    parts.append(_hull_part(np.array(pts), glass, paint))
    for sy in (1, -1):
        parts.append(
            box_part(
                [hl - 0.02, sy * (hw - 0.45) - 0.2, belt - 0.22],
                [hl + 0.0, sy * (hw - 0.45) + 0.2, belt - 0.08],
                headlight,
            )
        )
        parts.append(
            box_part(
                [-hl, sy * (hw - 0.35) - 0.2, belt - 0.2], [-hl + 0.02, sy * (hw - 0.35) + 0.2, belt - 0.06], taillight
            )
        )
    return MeshPart.concatenate(parts)


def pedestrian_mesh(size_m: np.ndarray, clothes_top: int, clothes_bottom: int, skin: int) -> MeshPart:
    """A standing person filling a box of ``size_m``."""
    length, width, height = (float(s) for s in size_m)
    bottom = -height / 2
    leg_h = 0.47 * height
    torso_h = 0.33 * height
    head_r = 0.065 * height
    parts = [
        box_part([-0.09, 0.03, bottom], [0.09, 0.17, bottom + leg_h], clothes_bottom),
        box_part([-0.09, -0.17, bottom], [0.09, -0.03, bottom + leg_h], clothes_bottom),
        box_part([-0.12, -0.21, bottom + leg_h], [0.12, 0.21, bottom + leg_h + torso_h], clothes_top),
        box_part(
            [-0.06, 0.21, bottom + leg_h + 0.05], [0.06, min(width / 2, 0.29), bottom + leg_h + torso_h], clothes_top
        ),
        box_part(
            [-0.06, -min(width / 2, 0.29), bottom + leg_h + 0.05], [0.06, -0.21, bottom + leg_h + torso_h], clothes_top
        ),
    ]
    head = trimesh.creation.icosphere(subdivisions=2, radius=head_r)
    head.apply_translation([0.0, 0.0, height / 2 - head_r])
    parts.append(part_from_trimesh(head, skin))
    return MeshPart.concatenate(parts)


def tree_mesh(position_m: np.ndarray, rng: np.random.Generator, bark: int, foliage: int) -> MeshPart:
    """A street tree: trunk plus a lumpy canopy, standing at ``position_m`` (world)."""
    trunk_h = rng.uniform(2.2, 3.2)
    trunk = trimesh.creation.cylinder(radius=rng.uniform(0.12, 0.2), height=trunk_h, sections=10)
    trunk.apply_translation([0, 0, trunk_h / 2])
    parts = [part_from_trimesh(trunk, bark)]
    radius = rng.uniform(1.6, 2.6)
    for k in range(rng.integers(1, 3) + 1):
        canopy = trimesh.creation.icosphere(subdivisions=2, radius=radius * rng.uniform(0.7, 1.0))
        v = canopy.vertices
        v *= 1.0 + 0.18 * rng.standard_normal((len(v), 1))
        v[:, 2] *= rng.uniform(0.8, 1.2)
        canopy = trimesh.Trimesh(vertices=v, faces=canopy.faces, process=False)
        canopy.apply_translation([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), trunk_h + radius * 0.7 + 0.4 * k])
        parts.append(part_from_trimesh(canopy, foliage))
    mesh = MeshPart.concatenate(parts)
    return MeshPart(mesh.vertices + np.asarray(position_m, np.float32), mesh.triangles, mesh.material_ids)


def street_light_mesh(position_m: np.ndarray, arm_direction: np.ndarray, metal: int, lamp: int) -> MeshPart:
    """A pole with an arm reaching over the road along ``arm_direction`` (unit xy)."""
    pole = trimesh.creation.cylinder(radius=0.09, height=7.5, sections=8)
    pole.apply_translation([0, 0, 3.75])
    d = np.asarray(arm_direction, float)
    arm_end = d * 1.8
    lo = np.minimum([0, 0], arm_end) - 0.06
    hi = np.maximum([0, 0], arm_end) + 0.06
    parts = [
        part_from_trimesh(pole, metal),
        box_part([lo[0], lo[1], 7.35], [hi[0], hi[1], 7.5], metal),
        box_part([arm_end[0] - 0.35, arm_end[1] - 0.18, 7.2], [arm_end[0] + 0.35, arm_end[1] + 0.18, 7.36], lamp),
    ]
    mesh = MeshPart.concatenate(parts)
    return MeshPart(mesh.vertices + np.asarray(position_m, np.float32), mesh.triangles, mesh.material_ids)
