"""The reconstructed scene as data: textured background mesh, actor assets, sky, LiDAR models.
Written by ``neurodrive reconstruct``, read by everything downstream (``render/`` renders it).

On disk (all npz / safetensors / JSON, no pickles)::

    scene.json                  format, source log, held-out frames, cameras, actor ids, stats
    background.npz              SurfaceMesh arrays of the static scene
    appearance.safetensors      decoder MLP, per-image and per-camera exposure, sky maps, LiDAR ray-drop MLP
    far_field.npz               optional: training photos of what the mesh misses (scene/far_field.py)
    photos/                     optional: the training photos themselves (scene/photos.py)
    actors/<actor id>.npz/.json one reusable ActorAsset per tracked actor
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from safetensors.numpy import save as save_safetensors

from neurodrive.errors import DataError
from neurodrive.io_utils import atomic_write_bytes, atomic_write_npz
from neurodrive.lidar.intensity import LidarIntensityModel
from neurodrive.lidar.ray_drop import RayDropModel
from neurodrive.scene.decoder import CAMERA_HEIGHT_M, AppearanceDecoder, bake_colours
from neurodrive.scene.far_field import FarField
from neurodrive.scene.meta import DecoderMeta, LidarModelMeta, PhotosMeta, SceneMeta, SkyMeta
from neurodrive.scene.photos import PhotoSet
from neurodrive.scene.sky import SkyModel
from neurodrive.scene.surface import ActorAsset, SurfaceMesh


class SceneModel:
    """A reconstructed scene: background and actor surfaces, appearance decoder, sky, LiDAR model."""

    def __init__(
        self,
        background: SurfaceMesh,
        actors: dict[str, ActorAsset],
        decoder: AppearanceDecoder,
        sky: SkyModel,
        lidar_models: Mapping[str, LidarIntensityModel],
        meta: SceneMeta,
        photos: PhotoSet | None = None,
    ) -> None:
        """``photos``: the training photos for image-based rendering (None: texels only)."""
        views = np.asarray(meta.training_ego_xy_yaw, float).reshape(-1, 3)
        camera_positions = np.column_stack([views[:, :2], np.full(len(views), CAMERA_HEIGHT_M)]) if len(views) else None
        if background.baked_rgb is None:
            background = replace(background, baked_rgb=bake_colours(decoder, background, camera_positions))
        actors = {
            k: a
            if a.mesh.baked_rgb is not None
            else replace(a, mesh=replace(a.mesh, baked_rgb=bake_colours(decoder, a.mesh, None)))
            for k, a in actors.items()
        }
        self.background = background
        self.actors = actors
        self.decoder = decoder
        self.sky = sky
        if not lidar_models:
            raise ValueError("a scene needs at least one LiDAR model")
        self.lidar_models = dict(lidar_models)  # by LiDAR name, the rig's primary LiDAR first
        self.meta = meta
        self.photos = photos

    def lidar_model(self, name: str) -> LidarIntensityModel:
        """The model learned for LiDAR ``name``; the primary LiDAR's for one the scene does not know."""
        return self.lidar_models.get(name) or next(iter(self.lidar_models.values()))

    def with_actors(self, actors: dict[str, ActorAsset]) -> SceneModel:
        """The same scene (the same background object, decoder, sky, LiDAR models) with other actor assets."""
        return SceneModel(self.background, actors, self.decoder, self.sky, self.lidar_models, self.meta, self.photos)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_npz(folder / "background.npz", **self.background.arrays())
        for asset in self.actors.values():
            asset.save(folder / "actors")
        d = self.decoder
        tensors = {"w1": d.w1, "b1": d.b1, "w2": d.w2, "b2": d.b2, "sky": self.sky.image}
        if self.sky.local_images is not None:
            tensors |= {"sky_local": self.sky.local_images, "sky_local_xy": self.sky.local_xy_m}
        tensors |= {f"exposure.{cam}": e for cam, e in d.exposures.items()}
        for name, lidar_model in self.lidar_models.items():
            if lidar_model.drop is not None:
                tensors |= lidar_model.drop.tensors(f"lidar_drop.{name}")
        atomic_write_bytes(
            folder / "appearance.safetensors",
            save_safetensors({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}),
        )
        meta = self.meta.model_copy(
            update={
                "actors": sorted(self.actors),
                "cameras": sorted(d.exposures),
                "decoder": DecoderMeta(residual_scale=d.residual_scale),
                "sky": SkyMeta(
                    min_elevation_rad=self.sky.min_elevation_rad, max_elevation_rad=self.sky.max_elevation_rad
                ),
                "lidar_models": [
                    LidarModelMeta(name=name, alpha=lm.alpha, beta_per_m=lm.beta_per_m, gain=lm.gain)
                    for name, lm in self.lidar_models.items()
                ],
                "photos": None
                if self.photos is None
                else PhotosMeta(count=len(self.photos), disk_bytes=self.photos.disk_bytes),
            }
        )
        if self.photos is not None:
            self.photos.save(folder)
        elif (folder / "photos").is_dir():
            shutil.rmtree(folder / "photos")
        far_path = folder / "far_field.npz"
        if self.sky.far_field is not None:
            self.sky.far_field.save(far_path)
        elif far_path.exists():
            far_path.unlink()
        meta.write(folder)  # written last: marks the scene complete

    @staticmethod
    def load(folder: str | Path) -> SceneModel:
        folder = Path(folder)
        meta_path = folder / "scene.json"
        meta = SceneMeta.read(folder)
        if meta.decoder is None or meta.sky is None:
            raise DataError(meta_path, "decoder" if meta.decoder is None else "sky", "missing entry")
        app_path = folder / "appearance.safetensors"
        if app_path.is_dir():
            raise DataError(app_path, None, "is a folder, expected a safetensors file")
        try:
            t = load_file(str(app_path))
        except FileNotFoundError as e:
            raise DataError(app_path, None, "missing file") from e
        except Exception as e:  # safetensors raises its own error types on corrupt headers
            raise DataError(app_path, None, f"corrupt or truncated safetensors file: {e}") from e
        try:
            decoder = AppearanceDecoder(
                t["w1"],
                t["b1"],
                t["w2"],
                t["b2"],
                meta.decoder.residual_scale,
                {k.split(".", 1)[1]: v for k, v in t.items() if k.startswith("exposure.")},
            )
            local = t.get("sky_local")
            if local is not None and (
                local.ndim != 4
                or local.shape[1:] != t["sky"].shape
                or "sky_local_xy" not in t
                or t["sky_local_xy"].shape != (len(local), 2)
            ):
                raise DataError(
                    app_path,
                    "sky_local",
                    f"expected (K, {', '.join(map(str, t['sky'].shape))}) maps with (K, 2) positions",
                )
            sky = SkyModel(
                t["sky"],
                meta.sky.min_elevation_rad,
                meta.sky.max_elevation_rad,
                local,
                t.get("sky_local_xy"),
                FarField.load(folder / "far_field.npz") if (folder / "far_field.npz").is_file() else None,
            )
            lidar_models = _lidar_models(meta, t, meta_path, app_path)
        except KeyError as e:
            raise DataError(
                meta_path if str(e).strip("'") not in t else app_path, str(e).strip("'"), "missing entry"
            ) from e
        except (TypeError, AttributeError) as e:
            raise DataError(meta_path, None, f"malformed scene metadata: {e}") from e
        background = SurfaceMesh.read(folder / "background.npz")
        if background.texels.shape[1] + 3 != decoder.w1.shape[0]:
            raise DataError(app_path, "w1", "decoder input size does not match the texel features")
        actors = {a: ActorAsset.load(folder / "actors" / f"{a}.npz") for a in meta.actors}
        photos = PhotoSet.load(folder) if meta.photos is not None else None
        if photos is not None and len(photos) != meta.photos.count:
            raise DataError(meta_path, "photos.count", f"says {meta.photos.count} photos, photos/ holds {len(photos)}")
        return SceneModel(background, actors, decoder, sky, lidar_models, meta, photos)


def _lidar_models(
    meta: SceneMeta, tensors: dict[str, np.ndarray], meta_path: Path, app_path: Path
) -> dict[str, LidarIntensityModel]:
    """The scene's LiDAR models (``scene.json`` ``lidar_models``, ray-drop MLPs in the safetensors file)."""
    if not meta.lidar_models:
        raise DataError(meta_path, "lidar_models", "expected a non-empty list of LiDAR models")
    models = {}
    for entry in meta.lidar_models:
        try:
            drop = RayDropModel.from_tensors(tensors, f"lidar_drop.{entry.name}")
        except ValueError as e:
            raise DataError(app_path, f"lidar_drop.{entry.name}", str(e)) from e
        models[entry.name] = LidarIntensityModel(entry.alpha, entry.beta_per_m, drop, entry.gain)
    return models
