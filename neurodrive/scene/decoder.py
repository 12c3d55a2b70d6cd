"""The appearance decoder (texel features + view direction -> colour, per-camera exposure) and colour baking."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.spatial import cKDTree

from neurodrive.scene.surface import SurfaceMesh


@dataclass(frozen=True)
class AppearanceDecoder:
    """Baked tiny MLP: texel features + view direction -> colour, then per-camera exposure."""

    w1: np.ndarray  # (D + 3, H)
    b1: np.ndarray  # (H,)
    w2: np.ndarray  # (H, 3)
    b2: np.ndarray  # (3,)
    residual_scale: float
    exposures: dict[str, np.ndarray]  # camera name -> (3, 4) affine colour transform

    def exposure(self, camera: str | None) -> np.ndarray:
        if camera is not None and camera in self.exposures:
            return self.exposures[camera]
        return np.mean(np.stack(list(self.exposures.values())), axis=0) if self.exposures else np.eye(3, 4)

    def exposure_key_at(self, camera: str, frame: int) -> str:
        """Which exposure ``camera``'s image on ``frame`` takes: its own ("camera@frame") when it was
        fitted per image; else that of the camera's nearest fitted frame; else the camera's."""
        fitted = [int(k.rsplit("@", 1)[1]) for k in self.exposures if "@" in k and k.rsplit("@", 1)[0] == camera]
        if fitted:
            return f"{camera}@{min(fitted, key=lambda f: (abs(f - frame), f))}"
        return camera

    def exposure_at(self, camera: str, frame: int) -> np.ndarray:
        return self.exposure(self.exposure_key_at(camera, frame))

    @cached_property
    def _weights(self) -> tuple[np.ndarray, ...]:
        """Contiguous float32 blocks (matrix products on strided slices are an order slower)."""
        d = self.w1.shape[0] - 3
        c = np.ascontiguousarray
        return (
            c(self.w1[:d], np.float32),
            c(self.w1[d:], np.float32),
            c(self.b1, np.float32),
            c(self.w2, np.float32),
            c(self.b2, np.float32),
        )

    def decode(self, features: np.ndarray, dirs: np.ndarray, exposure: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """sRGB colours (n, 3) in [0, 1]; decoded in chunks that stay in the CPU cache (5x faster)."""
        if len(features) <= chunk:
            return self._decode(features, dirs, exposure)
        out = np.empty((len(features), 3), np.float32)
        for start in range(0, len(features), chunk):
            part = slice(start, start + chunk)
            out[part] = self._decode(features[part], dirs[part], exposure)
        return out

    def _decode(self, features: np.ndarray, dirs: np.ndarray, exposure: np.ndarray) -> np.ndarray:
        w_feat, w_dir, b1, w2, b2 = self._weights
        h = features @ w_feat
        h += dirs.astype(np.float32, copy=False) @ w_dir
        h += b1
        np.maximum(h, 0.0, out=h)
        residual = h @ w2
        residual += b2
        np.tanh(residual, out=residual)
        residual *= np.float32(self.residual_scale)
        residual += features[:, :3]
        np.clip(residual, 0.0, 1.0, out=residual)
        out = residual @ np.ascontiguousarray(exposure[:, :3].T, np.float32)
        out += exposure[:, 3].astype(np.float32)
        return np.clip(out, 0.0, 1.0, out=out)


CAMERA_HEIGHT_M = 1.5  # typical camera height above the ego origin, for baking view directions


def bake_colours(decoder: AppearanceDecoder, mesh: SurfaceMesh, camera_positions: np.ndarray | None) -> np.ndarray:
    """(T, 3) uint8 decoder colours (before exposure), each texel seen from the nearest training camera
    position; without positions (actor assets, in their box frame) seen horizontally from outside."""
    if mesh.atlas.num_texels == 0:
        return np.zeros((0, 3), np.uint8)
    centres = mesh.atlas.texel_centres(mesh.vertices, mesh.triangles)
    if camera_positions is not None and len(camera_positions):
        _, nearest = cKDTree(camera_positions).query(centres, workers=-1)
        dirs = centres - camera_positions[nearest]
    else:
        dirs = np.column_stack([centres[:, :2], np.zeros(len(centres))])
    dirs /= np.maximum(np.linalg.norm(dirs, axis=1, keepdims=True), 1e-6)
    colour = decoder.decode(mesh.texels, dirs.astype(np.float32), np.eye(3, 4))
    return np.round(colour * 255).astype(np.uint8)
