"""Image-based appearance: a rendered pixel's colour blended from the training photos that saw its
surface point, in the spirit of Unstructured Lumigraph Rendering (Buehler et al. 2001).

For one rendered camera:

1. **View selection** by camera position and viewing direction (not by frame number): the
   ``candidates`` photos nearest the rendered camera in a penalty mixing centre distance and the
   angle between optical axes, from any camera of the log, so any pose and any rig works.
2. Each hit pixel's surface point is projected into each candidate. A point on an actor is moved
   with the actor's box: photo k sees it at ``P_k @ inv(P_now) @ x`` (``P``: the actor's box pose at
   the photo's instant and now); an actor absent from a photo's instant is not looked up there.
3. **Visibility**: the projected depth must agree with the photo's own depth map (the scene cast
   from the photo's pose with the actors where they were, at ``depth_scale`` of its resolution,
   computed on first use and cached by the renderer).
4. **Weights** per pixel: penalty = angle between the rendered ray and the photo's ray to the point
   (as the chord between their unit vectors, which is the angle for small angles)
   + ``resolution_weight`` x how much farther the photo was from the point than the rendered camera;
   the ``per_pixel`` best photos get ``(1 - p / p_next) / p`` (``p_next``: the next photo's penalty,
   so a photo's weight reaches 0 before it drops out: no popping), times a ramp near the photo's border.
5. **Exposure**: each sample's photo exposure is undone before blending (the photos' affine
   exposures, fitted in training), the requested exposure applied after.

Rays that miss the mesh go through the same blend as points ``far_depth_m`` along them, seen by a
photo where its own rays missed too. Pixels no photo sees keep the texel colour (hits) or the far
field and sky map (misses).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurodrive.logs.model import CameraSpec
from neurodrive.raycast import native_photo
from neurodrive.scene.photos import PhotoSet


@dataclass(frozen=True)
class PhotoBlendConfig:
    """Attributes:
    candidates: photos considered per rendered camera (nearest in position and direction).
    per_pixel: k of ULR: the k best photos of a pixel are blended.
    axis_weight_m: metres of centre distance one radian between optical axes counts as.
    max_axis_angle_rad: photos looking further away than this from the rendered camera are skipped.
    depth_scale: photo depth maps at this fraction of the photo's resolution.
    depth_tolerance: a projected point is visible when its depth is within this fraction (plus
        ``depth_tolerance_m``) of the photo's depth there.
    depth_tolerance_m: absolute part of that tolerance (m).
    resolution_weight: radians of penalty per unit of relative extra distance (photo farther away).
    border_px: weights ramp from 0 at a photo's border to 1 this many pixels inside it.
    far_depth_m: rays that miss the mesh are looked up as points this far along them (m).
    """

    candidates: int = 4
    per_pixel: int = 3
    axis_weight_m: float = 8.0
    max_axis_angle_rad: float = 1.4
    depth_scale: float = 0.25
    depth_tolerance: float = 0.04
    depth_tolerance_m: float = 0.15
    resolution_weight: float = 0.2
    border_px: float = 8.0
    far_depth_m: float = 50.0

    def __post_init__(self) -> None:
        if not 1 <= self.per_pixel <= self.candidates <= 64:
            raise ValueError(
                f"photos: need 1 <= per_pixel <= candidates <= 64, got {self.per_pixel} and {self.candidates}"
            )
        if not 0.0 < self.depth_scale <= 1.0:
            raise ValueError(f"photos.depth_scale must lie in (0, 1], got {self.depth_scale}")
        for name in ("axis_weight_m", "depth_tolerance", "depth_tolerance_m", "resolution_weight", "border_px"):
            if not 0.0 <= getattr(self, name) < 1e6:
                raise ValueError(f"photos.{name} must be a finite value >= 0, got {getattr(self, name)}")
        if not 0.0 < self.far_depth_m <= 10_000.0:
            raise ValueError(f"photos.far_depth_m must lie in (0, 10000] m, got {self.far_depth_m}")


def select_photos(photos: PhotoSet, T_world_camera: np.ndarray, cfg: PhotoBlendConfig) -> np.ndarray:
    """Indices of the ``cfg.candidates`` photos nearest the camera at ``T_world_camera`` in position
    and viewing direction, best first (ties broken by index: deterministic)."""
    if len(photos) == 0:
        return np.zeros(0, np.int64)
    axis = T_world_camera[:3, 2]
    angle = np.arccos(np.clip(photos.axes @ axis, -1.0, 1.0))
    dist = np.linalg.norm(photos.centres_m - T_world_camera[:3, 3], axis=1)
    penalty = dist + cfg.axis_weight_m * angle
    penalty[angle > cfg.max_axis_angle_rad] = np.inf
    order = np.lexsort((np.arange(len(penalty)), penalty))
    return order[np.isfinite(penalty[order])][: cfg.candidates]


def photo_camera(photos: PhotoSet, k: int, scale: float = 1.0) -> CameraSpec:
    """Photo ``k``'s camera (in its own frame) at ``scale`` of its resolution."""
    w, h = (int(x) for x in photos.size_px[k])
    cam = CameraSpec(photos.camera[k], w, h, photos.intrinsics[k], np.eye(4), photos.distortion[k])
    return cam if scale == 1.0 else cam.scaled(scale)


@dataclass
class _Samples:
    """Per hit pixel (rows) and candidate photo (columns): penalty, border ramp, colour."""

    penalty: np.ndarray  # (N, M) float32, inf where the photo does not see the point
    ramp: np.ndarray  # (N, M) float32
    rgb: np.ndarray  # (N, M, 3) float32 scene colour (photo exposure undone)


def blend_photos(
    photos: PhotoSet,
    candidates: np.ndarray,
    depth_maps: list[np.ndarray],
    origin: np.ndarray,
    dirs: np.ndarray,
    t_m: np.ndarray,
    geometry: np.ndarray,
    actor_pose_now: dict[int, tuple[str, np.ndarray]],
    cfg: PhotoBlendConfig,
    exposure: np.ndarray | None = None,
    native: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Colours (n, 3) float32 of n rays from ``origin`` (unit ``dirs``) and a mask of the rays some
    photo saw (the others: zeros): scene colours, or through ``exposure`` (3x4, scene -> image), clipped
    to [0, 1]. ``native``: the compiled kernel (``raycast/native_photo.py``;
    None: when built), else numpy (same arithmetic).

    ``geometry``: (n,) what each ray hit, ``t_m`` along it: 0 the background, g > 0 placed actor g
    (``actor_pose_now[g]``: its id and its T_world_box now), -1 nothing (looked up
    ``cfg.far_depth_m`` along the ray; a photo sees it where its own rays missed).
    ``depth_maps[i]``: z-depth map of photo ``candidates[i]`` at ``cfg.depth_scale``.
    """
    n, m = len(dirs), len(candidates)
    native = native_photo.available() if native is None else native
    transforms = _photo_poses(photos, candidates, actor_pose_now)
    tolerance = (cfg.depth_tolerance, cfg.depth_tolerance_m)
    weights = (cfg.resolution_weight, cfg.border_px)
    if native:
        views = native_photo.Candidates(
            transforms[:, :, :3],
            photos.intrinsics[candidates],
            photos.distortion[candidates],
            photos.size_px[candidates],
            depth_maps,
            [photos.image(int(k)) for k in candidates],
            photos.exposure[candidates],
        )
        k = min(cfg.per_pixel, m)
        exposed = np.column_stack([np.eye(3), np.zeros(3)]) if exposure is None else exposure
        return native_photo.blend(origin, dirs, t_m, geometry, views, cfg.far_depth_m, tolerance, weights, k, exposed)
    samples = _Samples(
        np.full((n, m), np.inf, np.float32), np.zeros((n, m), np.float32), np.zeros((n, m, 3), np.float32)
    )
    along = np.where(geometry < 0, cfg.far_depth_m, t_m).astype(np.float64)
    view = along[:, None] * dirs.astype(np.float64)
    points = np.asarray(origin, np.float64) + view
    view_dist = np.sqrt(np.einsum("ij,ij->i", view, view))
    view /= np.maximum(view_dist, 1e-9)[:, None]
    for g in np.unique(geometry):
        rows = np.flatnonzero(geometry == g)
        sample = (points[rows], view[rows], view_dist[rows])
        for column, k in enumerate(candidates):
            pose = transforms[column, max(int(g), 0)]
            if not np.isnan(pose[0, 0]):
                _sample_photo(photos, int(k), pose, depth_maps[column], sample, cfg, samples, (rows, column), g < 0)
    rgb, seen = _ulr_weights(samples, cfg)
    exposed = np.column_stack([np.eye(3), np.zeros(3)]) if exposure is None else exposure
    rgb[seen] = np.clip(rgb[seen] @ exposed[:, :3].T.astype(np.float32) + exposed[:, 3].astype(np.float32), 0, 1)
    return rgb, seen


def _photo_poses(
    photos: PhotoSet, candidates: np.ndarray, actor_pose_now: dict[int, tuple[str, np.ndarray]]
) -> np.ndarray:
    """(m, G, 4, 4): candidate j's camera pose for points of group g (0: the background; g > 0: actor
    g, the camera moved into the actor's box frame now: ``P_now inv(P_then) T``), NaN where the
    actor was not there when the photo was taken."""
    groups = 1 + max(actor_pose_now, default=0)
    poses = np.full((len(candidates), groups, 4, 4), np.nan)
    for column, k in enumerate(candidates):
        T = photos.T_world_camera[k]
        poses[column, 0] = T
        for g, (actor_id, pose_now) in actor_pose_now.items():
            pose_then = photos.actor_pose(int(k), actor_id)
            if pose_then is not None:
                poses[column, g] = pose_now @ np.linalg.inv(pose_then) @ T
    return poses


def _sample_photo(
    photos: PhotoSet,
    k: int,
    T_cam: np.ndarray,
    depth_map: np.ndarray,
    sample: tuple[np.ndarray, np.ndarray, np.ndarray],
    cfg: PhotoBlendConfig,
    out: _Samples,
    where: tuple[np.ndarray, int],
    far: bool = False,
) -> None:
    """Fills ``out`` at ``where`` = (rows, column) for photo ``k`` taken from ``T_cam`` (moved with an
    actor); ``sample``: the points, unit view directions and view distances of those rows."""
    points, view, view_dist = sample
    cam = photo_camera(photos, k)
    rel = points - T_cam[:3, 3]
    pc = rel @ T_cam[:3, :3]
    uv, inside = cam.project(pc)
    b = cfg.border_px
    inside &= (uv[:, 0] >= 1) & (uv[:, 0] < cam.width_px - 1) & (uv[:, 1] >= 1) & (uv[:, 1] < cam.height_px - 1)
    sel = np.flatnonzero(inside)
    if len(sel) == 0:
        return
    uv, z = uv[sel], pc[sel, 2]
    dh, dw = depth_map.shape
    du = np.minimum((uv[:, 0] * (dw / cam.width_px)).astype(np.int64), dw - 1)
    dv = np.minimum((uv[:, 1] * (dh / cam.height_px)).astype(np.int64), dh - 1)
    seen_depth = depth_map[dv, du]
    if far:
        visible = ~np.isfinite(seen_depth)
    else:
        visible = np.abs(seen_depth - z) <= cfg.depth_tolerance * z + cfg.depth_tolerance_m
    sel, uv, z = sel[visible], uv[visible], z[visible]
    if len(sel) == 0:
        return
    photo_dist = np.linalg.norm(rel[sel], axis=1)
    photo_dir = rel[sel] / np.maximum(photo_dist, 1e-9)[:, None]
    angle = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * np.sum(photo_dir * view[sel], axis=1)))  # chord ~ angle
    farther = np.maximum(0.0, photo_dist / np.maximum(view_dist[sel], 1e-6) - 1.0)
    border = np.minimum.reduce([uv[:, 0], uv[:, 1], cam.width_px - uv[:, 0], cam.height_px - uv[:, 1]])
    rows, column = where
    target = rows[sel]
    out.penalty[target, column] = angle + cfg.resolution_weight * farther
    out.ramp[target, column] = np.clip(border / b, 0.0, 1.0) if b > 0 else 1.0
    out.rgb[target, column] = _scene_colour(photos, k, _bilinear(photos.image(k), uv))


def _bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(n, 3) float32 colours in [0, 1] at pixel coordinates (n, 2) (pixel centres at +0.5)."""
    h, w, _ = image.shape
    x = np.clip(uv[:, 0] - 0.5, 0, w - 1.001)
    y = np.clip(uv[:, 1] - 0.5, 0, h - 1.001)
    x0, y0 = x.astype(np.int64), y.astype(np.int64)
    fx, fy = (x - x0).astype(np.float32)[:, None], (y - y0).astype(np.float32)[:, None]
    flat = image.reshape(-1, 3)
    i00 = y0 * w + x0
    top = flat[i00] * (1 - fx) + flat[i00 + 1] * fx
    bottom = flat[i00 + w] * (1 - fx) + flat[i00 + w + 1] * fx
    return (top * (1 - fy) + bottom * fy) * np.float32(1 / 255)


def _scene_colour(photos: PhotoSet, k: int, rgb: np.ndarray) -> np.ndarray:
    """Photo colours with photo ``k``'s affine exposure undone (photo = scene @ A.T + b)."""
    e = photos.exposure[k]
    inverse = np.linalg.inv(e[:, :3]).T.astype(np.float32)
    return (rgb - e[:, 3].astype(np.float32)) @ inverse


def _ulr_weights(s: _Samples, cfg: PhotoBlendConfig) -> tuple[np.ndarray, np.ndarray]:
    """Blends the ``per_pixel`` best samples of each pixel with ULR weights."""
    n, m = s.penalty.shape
    rgb = np.zeros((n, 3), np.float32)
    if m == 0 or n == 0:
        return rgb, np.zeros(n, bool)
    k = min(cfg.per_pixel, m)
    ordered = np.sort(s.penalty, axis=1)
    kth = ordered[:, k - 1]
    # ties at the k-th penalty are still weighted; no (k+1)-th photo: the k-th one's penalty, doubled,
    # is where weights would reach 0
    threshold = np.maximum(ordered[:, k], kth + np.float32(1e-3)) if k < m else np.full(n, np.inf, np.float32)
    threshold = np.where(np.isfinite(threshold), threshold, np.where(np.isfinite(kth), 2 * kth + 0.05, np.inf))
    eps = np.float32(1e-3)
    p = s.penalty
    use = p < threshold[:, None]
    t = np.broadcast_to(threshold[:, None], p.shape)[use]
    w = np.zeros_like(p)
    w[use] = (1 - p[use] / t) / (p[use] + eps)
    w *= s.ramp
    total = w.sum(axis=1)
    seen = total > 1e-6
    rgb[seen] = np.einsum("nm,nmc->nc", w[seen], s.rgb[seen]) / total[seen, None]
    return rgb, seen
