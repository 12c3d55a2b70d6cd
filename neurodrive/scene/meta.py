"""``scene.json``: what a reconstructed scene says about itself, one typed schema read and written here.

Fields: the format and version; the log it was made from; held-out and training frames (and the
training ego poses, for the realism confidence); the full reconstruction config and statistics;
the tracks reconstruction found (``auto_tracks``, ``scene/tracks.py``); the actor ids (each names
``actors/<id>.npz``), camera names, decoder, sky and LiDAR-model parameters (their arrays live in
``appearance.safetensors``); how many training photos it carries (``photos/``). Reading checks
every field and names the first wrong one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from neurodrive.errors import DataError
from neurodrive.io_utils import atomic_write_json, is_safe_name
from neurodrive.logs.io import read_json_file
from neurodrive.logs.model import CATEGORIES
from neurodrive.logs.schema import describe_validation_error

SCENE_FORMAT = "neurodrive-scene"
SCENE_VERSION = 4  # 4: training photos travel with the scene (3: one LiDAR model per LiDAR of the rig)

Finite = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Frame = Annotated[int, Field(ge=0)]


def _actor_id(name: str) -> str:
    if not is_safe_name(name):
        raise ValueError(f"'{name}' is not a valid actor id (it names a file in actors/)")
    return name


ActorId = Annotated[str, AfterValidator(_actor_id)]


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True)


class SceneLogRef(_Schema):
    """The log a scene was reconstructed from."""

    name: str = ""
    path: str = ""  # absolute, as it was when the scene was made
    num_frames: Frame = 0


class AutoTrack(_Schema):
    """A track reconstruction found in the LiDAR (world frame, m and rad)."""

    id: str
    category: Literal[CATEGORIES]  # type: ignore[valid-type]
    size_m: Annotated[list[Positive], Field(min_length=3, max_length=3)]  # length, width, height
    frame_x_y_z_yaw: Annotated[list[Annotated[list[Finite], Field(min_length=5, max_length=5)]], Field(min_length=1)]

    @field_validator("frame_x_y_z_yaw")
    @classmethod
    def _frames_are_whole(cls, rows: list[list[float]]) -> list[list[float]]:
        for row in rows:
            if row[0] < 0 or row[0] != int(row[0]):
                raise ValueError(f"expected [frame, x, y, z, yaw] with a whole frame >= 0, got frame {row[0]}")
        return rows


class DecoderMeta(_Schema):
    residual_scale: Finite


class SkyMeta(_Schema):
    min_elevation_rad: Finite
    max_elevation_rad: Finite


class LidarModelMeta(_Schema):
    """One LiDAR's response (``lidar/intensity.py``); its ray-drop MLP is in the safetensors file."""

    name: str
    alpha: Finite
    beta_per_m: Finite
    gain: Finite = 1.0


class PhotosMeta(_Schema):
    """The training photos kept in ``photos/`` (``scene/photos.py``)."""

    count: Annotated[int, Field(ge=0)]
    disk_bytes: Annotated[int, Field(ge=0)]


class SceneMeta(_Schema):
    """Attributes:
    format, version: ``neurodrive-scene`` and ``SCENE_VERSION``; other versions are refused.
    log: the source log.
    holdout_frames, holdout_protocol: frames evaluate-recon scores and how they were chosen.
    training_frames, training_ego_xy_yaw: frames fitted, and the ego (x m, y m, yaw rad) at each.
    config, stats: the reconstruction config in full and what it measured.
    auto_tracks: tracks reconstruction found without labels.
    actors, cameras: actor ids (file names under ``actors/``) and camera names.
    decoder, sky, lidar_models: parameters of the appearance decoder, the sky and each LiDAR.
    photos: the training photos kept for image-based rendering (None: none kept).
    """

    format: Literal["neurodrive-scene"] = "neurodrive-scene"
    version: Literal[4] = 4
    log: SceneLogRef = SceneLogRef()
    holdout_frames: list[Frame] = []
    holdout_protocol: str | None = None
    training_frames: list[Frame] = []
    training_ego_xy_yaw: list[Annotated[list[Finite], Field(min_length=3, max_length=3)]] = []
    config: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    auto_tracks: list[AutoTrack] = []
    actors: list[ActorId] = []
    cameras: list[str] = []
    decoder: DecoderMeta | None = None
    sky: SkyMeta | None = None
    lidar_models: list[LidarModelMeta] = []
    photos: PhotosMeta | None = None

    @staticmethod
    def read(folder: str | Path) -> SceneMeta:
        """The validated ``scene.json`` of a scene folder; one DataError naming the field at fault."""
        folder = Path(folder)
        if folder.is_file():
            raise DataError(folder, None, "is a file, expected a reconstructed scene folder (with scene.json)")
        if not folder.is_dir():
            raise DataError(folder, None, "scene folder does not exist")
        path = folder / "scene.json"
        raw = read_json_file(path, "missing file (not a reconstructed scene, or reconstruction unfinished)")
        if not isinstance(raw, dict):
            raise DataError(path, None, f"expected a JSON object of scene fields, got a {type(raw).__name__}")
        if raw.get("format") != SCENE_FORMAT or raw.get("version") != SCENE_VERSION:
            raise DataError(
                path,
                "version",
                f"expected {SCENE_FORMAT} version {SCENE_VERSION}, found {raw.get('format')} "
                f"version {raw.get('version')}: run `neurodrive reconstruct` again",
            )
        try:
            return SceneMeta.model_validate(raw)
        except ValidationError as e:
            field, problem = describe_validation_error(e)
            raise DataError(path, field, problem) from e

    def write(self, folder: str | Path) -> None:
        """``folder/scene.json``, atomically (written last: it marks a scene complete)."""
        atomic_write_json(Path(folder) / "scene.json", self.model_dump(mode="json"))
