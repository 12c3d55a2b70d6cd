"""Reconstruction settings (``ReconConfig``, written in full to scene.json), held-out frames, progress reporting."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class GeometryConfig:
    """Background geometry (``background.py``, ``pipeline.background_geometry``): TSDF, virtual
    returns, underlay, walls."""

    voxel_size_m: float = 0.1  # background TSDF voxel
    truncation_m: float = 0.3  # band around near returns
    truncation_per_m: float = 0.03  # the band widens with range ...
    max_truncation_m: float = 1.2  # ... up to this
    coarse_voxel_ratio: int = 3  # a coarser field fills gaps between sparse far returns
    coarse_min_range_m: float = 0.0  # returns farther than this feed the coarse field
    densify_min_range_m: float = (
        15.0  # the coarse field also gets the scan grid filled between returns this far (0: off)
    )
    densify_spacing_m: float = 0.15  # ... with virtual returns this far apart
    densify_tolerance: float = 0.05  # ... between returns whose ranges differ by less than this share
    ground_underlay_cell_m: float = 2.0  # heightfield under the TSDF ground that closes far holes (0: off)
    underlay_margin_m: float = 30.0  # the ground underlay reaches this far beyond the returns
    underlay_depth_m: float = 0.04  # ... and sits this far below the measured ground
    wall_extrusion_m: float = 12.0  # walls continue this far above the LiDAR's view (0: off)
    wall_min_height_m: float = 3.0  # only open wall tops above this height are extruded
    carve_pool_m: float = 1.5  # evidence for carving extruded walls is pooled over voxels this big
    max_triangle_edge_m: float = 1.0  # larger background triangles are split (per-vertex LiDAR drop rates stay local)
    inpaint_max_gap_bins: int = 16  # dropped runs up to this many azimuth bins inside a surface are filled
    inpaint_tolerance: float = 0.08  # ... when the bounding returns' ranges agree within this share

    def __post_init__(self) -> None:
        if not 0.01 <= self.voxel_size_m <= 1.0:
            raise ValueError(f"geometry.voxel_size_m must lie in [0.01, 1.0] m, got {self.voxel_size_m}")


@dataclass(frozen=True)
class ActorConfig:
    """Actor meshes (``actors.py``) and which returns belong to actors rather than the background."""

    actor_voxel_size_m: float = 0.05
    actor_margin_m: float = 0.3  # returns this close around a box are not background
    ground_clearance_m: float = 0.12  # returns this low inside a box are ground, not actor


@dataclass(frozen=True)
class DynamicConfig:
    """Moving objects no track covers (``dynamic.py``): returns in space other sweeps saw through,
    clustered, tracked from sweep to sweep and turned into actors of their own ("auto-" tracks)."""

    enabled: bool = True
    neighbour_sweeps: int = 10  # each sweep is checked against this many sweeps nearest in time
    grid_azimuth_deg: float = 0.4  # visibility grid of a sweep (min range per cell over 3 x 3 cells)
    grid_elevation_deg: float = 0.5
    free_margin_m: float = 0.6  # a return is seen through when another ray passed it by this much ...
    free_margin_per_m: float = 0.03  # ... plus this share of its range
    min_free_votes: int = 2  # ... in at least this many other sweeps
    ground_cell_m: float = 1.0  # returns this close above the lowest return of their cell are ground
    ground_clearance_m: float = 0.3
    max_object_height_m: float = 4.2  # returns higher above the ground (trees, overpasses) are not traffic
    cluster_voxel_m: float = 0.2  # returns are put in bird's-eye cells, and cells this close joined:
    cluster_link_m: float = 0.45
    min_dynamic_points: int = 10  # a cluster moves when this many of its returns ...
    min_dynamic_share: float = 0.15  # ... and this share are seen through
    max_cluster_extent_m: float = 20.0  # larger clusters are structure (walls, fences)
    track_gate_m: float = 1.0  # clusters of consecutive sweeps whose points lie further apart (median, after
    # the chain's last motion) are not linked
    max_speed_mps: float = 30.0  # clusters whose centroids lie further apart per sweep period are not linked
    sweep_period_s: float = 0.1
    min_track_sweeps: int = 3


@dataclass(frozen=True)
class AppearanceConfig:
    """Texels, colours, exposures, the decoder MLP and its training, the sky map (``texturing.py``,
    ``appearance.py``)."""

    num_features: int = 5  # per texel: 3 colour + extra channels for the MLP
    hidden_units: int = 16
    residual_scale: float = 0.25
    min_texel_m: float = 0.02
    texel_smoothing_k: int = 6  # texels seen fewer than 3 times are blended with this many neighbours
    actor_edge_samples: bool = False  # True: also actor outline / grazing pixels where a texel has others
    unseen_fill_k: int = 16  # unseen texels: weighted mean of this many nearest seen ones (1: copy the nearest)
    texel_pixel_ratio: float = 1.5  # texel width in pixel footprints at the closest training view
    max_texel_resolution: int = 24
    exposure_rounds: int = 3
    per_image_exposure: bool = True  # one affine colour transform (exposure, white balance) per image
    behind_actor_margin_m: float = 0.0  # pixels whose rays reach the background through an actor box grown
    # by this much are not background samples (< 0: all are)
    train_steps: int = 400
    batch_size: int = 16384
    learning_rate: float = 0.005
    max_pixel_samples: int = 16_000_000  # bounds memory on long logs (pixels are strided beyond it)
    checkpoint_every: int = 50
    sky_bins_az: int = 360  # environment map resolution: azimuth bins
    sky_bins_el: int = 60  # ... elevation bins
    far_field_depth_m: float = 30.0  # pixels that miss the mesh are kept as photos, looked up at this depth (0: off)
    far_field_pixels: int = 12_000_000  # ... at most this many in all (photos are scaled down beyond it)
    keep_photos: bool = True  # the training photos travel with the scene for image-based rendering

    def __post_init__(self) -> None:
        for name in ("train_steps", "batch_size", "num_features", "hidden_units"):
            if getattr(self, name) < 1:
                raise ValueError(f"appearance.{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class LidarFitConfig:
    """The LiDAR model (``lidar_fit.py``, ``lidar/ray_drop.py``): reflectivity pooling, intensity fall-off, ray drop."""

    lidar_smoothing_m: float = 0.25  # LiDAR reflectivity evidence is pooled over voxels this big
    intensity_samples: int = 300_000  # returns used to fit the intensity fall-off
    ray_drop_folds: int = 4  # cross-fitting folds of the per-vertex drop rates
    ray_drop_hidden_units: int = 8  # ray-drop MLP width (two hidden layers)
    ray_drop_steps: int = 3000
    ray_drop_batch_size: int = 8192


@dataclass(frozen=True)
class ReconConfig:
    """Every reconstruction setting, one dataclass per stage; written in full to scene.json.

    Attributes:
        geometry: background geometry.
        actors: actor meshes.
        dynamic: moving objects without tracks.
        appearance: texels, decoder training, sky.
        lidar: the LiDAR model.
        holdout_every, holdout_phase: frames with index % holdout_every == holdout_phase are held out.
        seed: seeds every random draw (same seed, same bytes).
    """

    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    actors: ActorConfig = field(default_factory=ActorConfig)
    dynamic: DynamicConfig = field(default_factory=DynamicConfig)
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    lidar: LidarFitConfig = field(default_factory=LidarFitConfig)
    holdout_every: int = 5
    holdout_phase: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.holdout_every < 2 or not 0 <= self.holdout_phase < self.holdout_every:
            raise ValueError(
                f"holdout_every must be >= 2 and 0 <= holdout_phase < holdout_every, "
                f"got {self.holdout_every} and {self.holdout_phase}"
            )


# Named hold-out protocols: (every, phase). "every-5th" is this project's default; "every-other" is
# NeuRAD's / SplatAD's on PandaSet and KITTI (every second frame held out, the odd ones here).
HOLDOUT_PROTOCOLS: dict[str, tuple[int, int]] = {"every-5th": (5, 2), "every-other": (2, 1)}


def with_holdout(cfg: ReconConfig, protocol: str) -> ReconConfig:
    """``cfg`` holding out frames by a named protocol; one ValueError naming the known ones."""
    from dataclasses import replace

    if protocol not in HOLDOUT_PROTOCOLS:
        raise ValueError(f"--holdout must be one of {', '.join(HOLDOUT_PROTOCOLS)}, got '{protocol}'")
    every, phase = HOLDOUT_PROTOCOLS[protocol]
    return replace(cfg, holdout_every=every, holdout_phase=phase)


def holdout_protocol(cfg: ReconConfig) -> str:
    """The name of ``cfg``'s hold-out protocol ("every-5th", "every-other", or its numbers)."""
    for name, (every, phase) in HOLDOUT_PROTOCOLS.items():
        if (cfg.holdout_every, cfg.holdout_phase) == (every, phase):
            return name
    return f"1 frame in {cfg.holdout_every}, from frame {cfg.holdout_phase}"


def holdout_frames(num_frames: int, cfg: ReconConfig) -> list[int]:
    """Every ``holdout_every``-th frame; a log shorter than that (e.g. 3 samples) holds out its middle
    frame when it has at least 3, none when it has fewer (the metrics are then on training frames)."""
    if num_frames < cfg.holdout_every:
        return [num_frames // 2] if num_frames >= 3 else []
    return [f for f in range(num_frames) if f % cfg.holdout_every == cfg.holdout_phase]


def training_frames(num_frames: int, cfg: ReconConfig) -> list[int]:
    held = set(holdout_frames(num_frames, cfg))
    return [f for f in range(num_frames) if f not in held]


@contextmanager
def stage_step(progress: Progress | None, name: str) -> Iterator[None]:
    """Reports a stage without inner steps as 0/1 on entry and 1/1 when done, so a long step is
    never silent (the command line shows it as its own bar with the time elapsed)."""
    if progress:
        progress(name, 0, 1)
    yield
    if progress:
        progress(name, 1, 1)
