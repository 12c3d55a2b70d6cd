"""What lies beyond the reconstructed surface, from the training photos themselves.

A LiDAR sees nothing above its upper beam (HDL-64E: +2 deg): the tops of trucks and facades, tree
crowns, overpasses, and everything beyond its range. Their pixels miss the mesh. A direction-only
environment map (``sky.py``) holds them blurred (one bin is 12 KITTI pixels wide) and without
parallax. The far field keeps, for every training image, its exposure-corrected pixels that missed
the mesh (at most ``far_field_pixels`` of the reconstruction config in all). A ray that misses the
mesh is put at ``depth_m`` along its direction and looked up in the images of the training cameras
nearest to its origin (the first whose valid pixel it lands on); the sky map covers the rest.
Parallax is right for things ``depth_m`` away and small for anything beyond at the short distances
from which held-out frames or small ego deviations see the scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurodrive.errors import DataError
from neurodrive.io_utils import atomic_write_npz
from neurodrive.logs.model import brown_conrady

DEFAULT_DEPTH_M = 30.0
CANDIDATE_IMAGES = 6  # images tried per lookup, nearest camera first


@dataclass(frozen=True)
class FarField:
    """Training photos of what the mesh misses (pinhole model at the stored resolution, distortion kept).

    Attributes:
        images: (K, H, W, 3) uint8 exposure-corrected colours; invalid pixels hold zeros.
        valid: (K, H, W) bool, pixels whose training ray missed the mesh.
        intrinsics: (K, 3, 3) at the stored resolution.
        distortion: (K, 5) Brown-Conrady coefficients (zeros: none).
        T_world_camera: (K, 4, 4) where each photo was taken.
        depth_m: distance at which missing rays are put to look them up.
    """

    images: np.ndarray
    valid: np.ndarray
    intrinsics: np.ndarray
    distortion: np.ndarray
    T_world_camera: np.ndarray
    depth_m: float = DEFAULT_DEPTH_M

    def lookup(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Colours (n, 3) float32 in [0, 1] and a mask of rays found (n,) for unit directions from ``origin``."""
        n = len(dirs)
        rgb = np.zeros((n, 3), np.float32)
        found = np.zeros(n, bool)
        if len(self.images) == 0 or n == 0:
            return rgb, found
        h, w = self.valid.shape[1:]
        origin = np.asarray(origin, np.float64)
        dirs32 = np.asarray(dirs, np.float32)
        dist = np.linalg.norm(self.T_world_camera[:, :3, 3] - origin[None], axis=1)
        for k in np.argsort(dist, kind="stable")[:CANDIDATE_IMAGES]:
            todo = np.flatnonzero(~found)
            if len(todo) == 0:
                break
            # in the photo's camera frame: the ray origin (float64, small) + depth * direction (float32),
            # so world coordinates far from the origin keep their precision
            R = self.T_world_camera[k, :3, :3]
            origin_k = (R.T @ (origin - self.T_world_camera[k, :3, 3])).astype(np.float32)
            pc = (dirs32[todo] if len(todo) < n else dirs32) @ (np.float32(self.depth_m) * R.astype(np.float32))
            pc += origin_k
            front = pc[:, 2] > 1e-3
            todo, pc = todo[front], pc[front]
            xy = pc[:, :2] / pc[:, 2:3]
            if np.any(self.distortion[k]):
                xy = brown_conrady(xy, self.distortion[k])
            K = self.intrinsics[k].astype(np.float32)
            u = np.floor(K[0, 0] * xy[:, 0] + K[0, 1] * xy[:, 1] + K[0, 2]).astype(np.int64)
            v = np.floor(K[1, 1] * xy[:, 1] + K[1, 2]).astype(np.int64)
            inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
            todo, pixel = todo[inside], v[inside] * w + u[inside]
            ok = self.valid[k].reshape(-1)[pixel]
            todo, pixel = todo[ok], pixel[ok]
            rgb[todo] = self.images[k].reshape(-1, 3)[pixel].astype(np.float32) * np.float32(1 / 255)
            found[todo] = True
        return rgb, found

    def save(self, path: Path) -> None:
        atomic_write_npz(
            path,
            images=self.images,
            valid=self.valid,
            intrinsics=self.intrinsics,
            distortion=self.distortion,
            T_world_camera=self.T_world_camera,
            depth_m=np.array(self.depth_m),
        )

    @staticmethod
    def load(path: Path) -> FarField:
        from neurodrive.logs.io import read_npz

        k = None
        a = read_npz(
            path,
            {
                "images": (k, k, k, 3),
                "valid": (k, k, k),
                "intrinsics": (k, 3, 3),
                "distortion": (k, 5),
                "T_world_camera": (k, 4, 4),
                "depth_m": (),
            },
        )
        counts = {len(a[name]) for name in ("images", "valid", "intrinsics", "distortion", "T_world_camera")}
        if len(counts) != 1 or a["images"].shape[:3] != a["valid"].shape:
            raise DataError(path, "images", "images, valid mask, intrinsics and poses disagree in count or size")
        if a["images"].dtype != np.uint8 or a["valid"].dtype != bool or not float(a["depth_m"]) > 0:
            raise DataError(path, "images", "expected uint8 images, a bool valid mask and a positive depth_m")
        return FarField(
            a["images"], a["valid"], a["intrinsics"], a["distortion"], a["T_world_camera"], float(a["depth_m"])
        )
