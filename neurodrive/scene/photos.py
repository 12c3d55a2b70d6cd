"""The training photos of a scene, kept with it for image-based rendering (``render/photo_blend.py``).

Each training image travels with the scene as the log's own encoded bytes (PNG or JPEG), with where
it was taken (camera pose, intrinsics, distortion), the exposure fitted to it, and where the scene's
actors were at that instant (to look actors up in their box frame). Held-out images are never
stored: a render can only draw on photos that training saw.

On disk, in the scene folder::

    photos/index.npz      camera names, frames, sizes, poses, intrinsics, distortion, exposures,
                          actor ids and their poses per photo (NaN: not in that photo's frame)
    photos/<k>.png|.jpg   photo k's encoded bytes, as the log stored them
"""

from __future__ import annotations

import io
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from neurodrive.errors import DataError
from neurodrive.io_utils import atomic_write_bytes, atomic_write_npz
from neurodrive.logs.io import read_npz

PHOTO_SUFFIXES = (".png", ".jpg")
DECODED_CACHE = 48  # decoded photos kept in memory (most recently used): 4 per camera of a 6-camera rig, twice


@dataclass(frozen=True)
class PhotoSet:
    """Training photos with their cameras, exposures and the actors' poses at their instants.

    Attributes:
        camera: (K,) name of the camera that took each photo.
        frame: (K,) log frame of each photo.
        size_px: (K, 2) width, height.
        T_world_camera: (K, 4, 4) camera poses (x right, y down, z forward).
        intrinsics: (K, 3, 3) at the photo's resolution.
        distortion: (K, 5) Brown-Conrady coefficients (zeros: none).
        exposure: (K, 3, 4) the affine exposure fitted to each photo (scene colour -> photo colour).
        actor_ids: (A,) actors that can be looked up in the photos.
        actor_poses: (K, A, 4, 4) T_world_box of each actor at each photo's instant, NaN where absent
            (on disk: zeros there, and an ``actor_present`` mask).
        encoded: (K,) the photos' encoded bytes (PNG or JPEG).
    """

    camera: tuple[str, ...]
    frame: np.ndarray
    size_px: np.ndarray
    T_world_camera: np.ndarray
    intrinsics: np.ndarray
    distortion: np.ndarray
    exposure: np.ndarray
    actor_ids: tuple[str, ...]
    actor_poses: np.ndarray
    encoded: tuple[bytes, ...]
    files: tuple[Path, ...] = ()  # where each photo was read from (named in errors); empty: built in memory
    _decoded: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.camera)

    @property
    def centres_m(self) -> np.ndarray:
        """(K, 3) camera centres."""
        return self.T_world_camera[:, :3, 3]

    @property
    def axes(self) -> np.ndarray:
        """(K, 3) unit optical axes (viewing directions)."""
        return self.T_world_camera[:, :3, 2]

    @property
    def disk_bytes(self) -> int:
        return sum(len(b) for b in self.encoded)

    def image(self, k: int) -> np.ndarray:
        """(H, W, 3) uint8 photo ``k``, decoded on first use (the most recent ``DECODED_CACHE`` kept)."""
        cached = self._decoded.get(k)
        if cached is not None:
            self._decoded.move_to_end(k)
            return cached
        where = self.files[k] if self.files else Path(f"photo {k}")
        try:
            with Image.open(io.BytesIO(self.encoded[k])) as im:
                rgb = np.asarray(im.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(where, "pixels", f"corrupt or truncated photo: {e}") from e
        if rgb.shape[:2] != (int(self.size_px[k, 1]), int(self.size_px[k, 0])):
            raise DataError(where, "size_px", f"photo is {rgb.shape[1]}x{rgb.shape[0]}, index says {self.size_px[k]}")
        self._decoded[k] = rgb
        while len(self._decoded) > DECODED_CACHE:
            self._decoded.popitem(last=False)
        return rgb

    def actor_pose(self, k: int, actor_id: str) -> np.ndarray | None:
        """T_world_box of ``actor_id`` when photo ``k`` was taken; None when it was not there."""
        if actor_id not in self.actor_ids:
            return None
        pose = self.actor_poses[k, self.actor_ids.index(actor_id)]
        return None if not np.all(np.isfinite(pose)) else pose

    def frame_actor_poses(self, k: int) -> dict[str, np.ndarray]:
        """Every actor present when photo ``k`` was taken, at its pose then."""
        poses = {a: self.actor_poses[k, i] for i, a in enumerate(self.actor_ids)}
        return {a: p for a, p in poses.items() if np.all(np.isfinite(p))}

    def save(self, folder: Path) -> None:
        """Writes ``folder/photos/``: each photo's bytes, then the index (which names them)."""
        out = Path(folder) / "photos"
        out.mkdir(parents=True, exist_ok=True)
        suffixes = []
        for k, data in enumerate(self.encoded):
            suffix = ".jpg" if data[:3] == b"\xff\xd8\xff" else ".png"
            atomic_write_bytes(out / f"{k:06d}{suffix}", data)
            suffixes.append(suffix)
        for stale in out.iterdir():
            if stale.suffix in PHOTO_SUFFIXES and not _names_photo(stale.name, len(self), suffixes):
                stale.unlink()
        atomic_write_npz(
            out / "index.npz",
            camera=np.array(self.camera, dtype=np.str_).reshape(-1),
            frame=self.frame.astype(np.int64),
            size_px=self.size_px.astype(np.int64),
            T_world_camera=self.T_world_camera.astype(np.float64),
            intrinsics=self.intrinsics.astype(np.float64),
            distortion=self.distortion.astype(np.float64),
            exposure=self.exposure.astype(np.float64),
            actor_ids=np.array(self.actor_ids, dtype=np.str_).reshape(-1),
            actor_poses=np.nan_to_num(self.actor_poses.astype(np.float64), nan=0.0),
            actor_present=np.all(np.isfinite(self.actor_poses), axis=(2, 3)),
            suffix=np.array(suffixes, dtype=np.str_).reshape(-1),
        )

    @staticmethod
    def load(folder: Path) -> PhotoSet:
        """Reads ``folder/photos/`` (written by :meth:`save`); one DataError naming the file and field."""
        out = Path(folder) / "photos"
        path = out / "index.npz"
        k_, a_ = None, None
        a = read_npz(
            path,
            {
                "camera": (k_,),
                "frame": (k_,),
                "size_px": (k_, 2),
                "T_world_camera": (k_, 4, 4),
                "intrinsics": (k_, 3, 3),
                "distortion": (k_, 5),
                "exposure": (k_, 3, 4),
                "actor_ids": (a_,),
                "actor_poses": (k_, a_, 4, 4),
                "actor_present": (k_, a_),
                "suffix": (k_,),
            },
        )
        count = len(a["camera"])
        for name in ("frame", "size_px", "T_world_camera", "intrinsics", "distortion", "exposure", "suffix"):
            if len(a[name]) != count:
                raise DataError(path, name, f"expected {count} entries (one per photo), got {len(a[name])}")
        if a["actor_poses"].shape[:2] != (count, len(a["actor_ids"])):
            raise DataError(path, "actor_poses", f"expected ({count}, {len(a['actor_ids'])}, 4, 4)")
        if a["actor_present"].shape != a["actor_poses"].shape[:2] or a["actor_present"].dtype != bool:
            raise DataError(path, "actor_present", f"expected ({count}, {len(a['actor_ids'])}) bool")
        for name in ("T_world_camera", "intrinsics", "distortion", "exposure"):
            if not np.all(np.isfinite(a[name])):
                raise DataError(path, name, "contains NaN or infinite values")
        if count and (a["size_px"].min() < 1 or a["size_px"].max() > 20000):
            raise DataError(path, "size_px", "photo sizes must lie in 1..20000 pixels")
        encoded, files = [], []
        for k, suffix in enumerate(a["suffix"]):
            if str(suffix) not in PHOTO_SUFFIXES:
                raise DataError(path, f"suffix[{k}]", f"expected one of {PHOTO_SUFFIXES}, got {suffix!r}")
            photo = out / f"{k:06d}{suffix}"
            try:
                encoded.append(photo.read_bytes())
            except (FileNotFoundError, IsADirectoryError) as e:
                raise DataError(photo, None, "missing photo file") from e
            files.append(photo)
        return PhotoSet(
            tuple(str(c) for c in a["camera"]),
            a["frame"].astype(np.int64),
            a["size_px"].astype(np.int64),
            a["T_world_camera"].astype(np.float64),
            a["intrinsics"].astype(np.float64),
            a["distortion"].astype(np.float64),
            a["exposure"].astype(np.float64),
            tuple(str(x) for x in a["actor_ids"]),
            np.where(a["actor_present"][..., None, None], a["actor_poses"].astype(np.float64), np.nan),
            tuple(encoded),
            tuple(files),
        )


def _names_photo(name: str, count: int, suffixes: list[str]) -> bool:
    stem, _, suffix = name.partition(".")
    return stem.isdigit() and int(stem) < count and f".{suffix}" == suffixes[int(stem)]
