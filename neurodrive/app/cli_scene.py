"""Scene commands: ``reconstruct`` a log, ``evaluate-recon`` a scene against its log, ``render`` it from
any pose with edited actors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from neurodrive.app.cli_common import console, fail, finite, interrupted, progress_bar, stage_progress
from neurodrive.errors import DataError

scene_app = typer.Typer()


@scene_app.command()
def reconstruct(
    log: Path = typer.Argument(..., help="Log folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the reconstructed scene."),
    steps: int = typer.Option(None, help="Appearance training steps (default from the config)."),
    voxel: float = typer.Option(None, help="Background voxel size in metres (default 0.1)."),
    seed: int = typer.Option(0, help="Random seed."),
    moving: bool = typer.Option(
        True, help="Find moving objects no track covers and reconstruct them as actors ('auto-' tracks)."
    ),
    holdout: str = typer.Option(
        "every-5th", help="Frames held out for evaluate-recon: every-5th, or every-other (NeuRAD's protocol)."
    ),
    overwrite: bool = typer.Option(False, help="Replace a finished scene at --out."),
    restart: bool = typer.Option(False, help="Discard the checkpoints of an unfinished run and start over."),
) -> None:
    """Reconstruct a scene from a log (LiDAR -> SDF mesh, images -> surface appearance, actors, sky).

    Interrupted runs resume from the checkpoints in OUT/checkpoints when started again.
    """
    from dataclasses import replace

    from neurodrive.logs.io import load_log
    from neurodrive.reconstruct.config import with_holdout
    from neurodrive.reconstruct.pipeline import ReconConfig
    from neurodrive.reconstruct.pipeline import reconstruct as run

    try:
        cfg = with_holdout(ReconConfig(seed=seed), holdout)
    except ValueError as e:
        fail(e)
    if not moving:
        cfg = replace(cfg, dynamic=replace(cfg.dynamic, enabled=False))
    try:  # the configs check their ranges
        if steps is not None:
            cfg = replace(cfg, appearance=replace(cfg.appearance, train_steps=steps))
        if voxel is not None:
            cfg = replace(cfg, geometry=replace(cfg.geometry, voxel_size_m=voxel))
    except ValueError as e:
        fail(ValueError(f"--{'steps' if 'train_steps' in str(e) else 'voxel'}: {e}"))
    try:
        drv = load_log(log)
        with progress_bar() as bar:
            model = run(drv, out, cfg, stage_progress(bar), overwrite=overwrite, restart=restart)
    except (DataError, ValueError, FileExistsError) as e:
        fail(e)
    except KeyboardInterrupt:
        interrupted(
            f"finished stages are kept in {out / 'checkpoints'}; run the same command again to resume "
            "(--restart to start over)"
        )
    stats = model.meta.stats
    photos = model.meta.photos
    size_mb = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file()) / 1e6
    console.print(
        f"wrote scene to {out}: {stats['background_triangles']} background triangles, "
        f"{len(model.actors)} actors, {stats['texels']} texels, "
        + (f"{photos.count} training photos ({photos.disk_bytes / 1e6:.1f} MB), " if photos else "")
        + f"{size_mb:.1f} MB on disk"
    )


@scene_app.command("evaluate-recon")
def evaluate_recon(
    scene: Path = typer.Argument(..., help="Reconstructed scene folder."),
    log: Path = typer.Argument(..., help="The log it was reconstructed from."),
    out: Path = typer.Option(None, "--out", "-o", help="Also write the metrics to this JSON file."),
    lane_shift: bool = typer.Option(True, help="Also compare against ground truth 2 m to the side (generated logs)."),
    figures: Path = typer.Option(None, help="Write ground truth | render | error PNGs of the frames to this folder."),
    actor_edits: bool = typer.Option(True, help="Also measure actor removal and close-ups (generated logs)."),
    appearance: str = typer.Option(
        "both", help="photos, texels, or both (photo-based, with the texels' image metrics beside it)."
    ),
    overwrite: bool = typer.Option(False, help="Replace an existing --out file."),
) -> None:
    """Metrics on held-out frames: PSNR / SSIM (whole image, outside moving objects, on actors), LiDAR
    depth / intensity / ray drop, Chamfer, lane shift, actor removal and close-up PSNR."""
    if appearance not in ("photos", "texels", "both"):
        fail(ValueError(f"--appearance must be photos, texels or both, got '{appearance}'"))
    import json

    from neurodrive.io_utils import atomic_write_json, check_output
    from neurodrive.logs.io import load_log
    from neurodrive.reconstruct.evaluate import evaluate_appearances
    from neurodrive.scene.model import SceneModel

    inputs = [("the scene", scene), ("the log", log)]
    try:
        if out is not None:
            check_output(out, overwrite, "file", inputs)
        if figures is not None:
            check_output(figures, overwrite, "folder", inputs)
        model = SceneModel.load(scene)
        drv = load_log(log)
        with progress_bar() as bar:
            task = bar.add_task("evaluating", total=len(model.meta.holdout_frames))
            metrics = evaluate_appearances(
                model,
                drv,
                appearance,
                lane_shift=lane_shift,
                progress=lambda s, d, n: bar.update(task, completed=d),
                figures=figures,
                actor_edits=actor_edits,
            )
    except (DataError, ValueError, FileExistsError) as e:
        fail(e)
    except KeyboardInterrupt:
        interrupted("nothing was written; run the same command again")
    if out is not None:
        atomic_write_json(out, metrics)
    protocol = metrics["protocol"]
    table = Table(
        title=f"reconstruction of '{drv.name}' on frames {metrics['frames']} (held out: {protocol['holdout']}; "
        f"psnr_db / ssim over all cameras, *_front: {protocol['front_camera']}; appearance: "
        f"{metrics['appearance']}{', texels.*: the texels alone' if 'texels' in metrics else ''})"
    )
    table.add_column("metric")
    table.add_column("value")
    skip = ("frames", "protocol", "psnr_db_per_camera", "ssim_per_camera", "actor_removal_views")
    rows = metrics | {f"texels.{k}": v for k, v in metrics.get("texels", {}).items()}
    for key, value in rows.items():
        if key in skip or key == "texels" or key.endswith("_note"):
            continue
        table.add_row(
            key, "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else json.dumps(value))
        )
    Console().print(table)


@scene_app.command()
def render(
    scene: Path = typer.Argument(..., help="Reconstructed scene folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the PNGs, LiDAR .npz/.ply and confidence.json."),
    log: Path = typer.Option(None, help="Log with the sensor rig and actor poses (default: the scene's source log)."),
    frame: int = typer.Option(0, help="Log frame whose ego pose and actor poses are used."),
    lane_shift: float = typer.Option(0.0, help="Shift the ego sideways by this many metres (left positive)."),
    pose: str = typer.Option(None, help="Ego pose 'x,y,yaw' (m, m, rad) in the world, instead of the log's."),
    edit: Path = typer.Option(
        None, help="Edits YAML: remove / repose / insert actors (see neurodrive.scenarios.edits)."
    ),
    scale: float = typer.Option(1.0, help="Render cameras at this multiple of the log's resolution."),
    appearance: str = typer.Option(
        "auto", help="Camera appearance: photos (blended training photos), texels, or auto (photos when kept)."
    ),
    overwrite: bool = typer.Option(False, help="Replace earlier renders in --out."),
) -> None:
    """Render camera images (+ depth, actor masks) and a LiDAR sweep of a scene from any ego pose."""
    import json

    from neurodrive.geometry import make_pose, pose_xyz_yaw
    from neurodrive.io_utils import check_output
    from neurodrive.logs.io import load_log
    from neurodrive.logs.model import WORLD_MARGIN_M
    from neurodrive.render.rendering import SceneRenderer
    from neurodrive.scenarios.edits import ActorEdits
    from neurodrive.scene.model import SceneModel
    from neurodrive.scene.tracks import log_with_scene_tracks
    from neurodrive.sim.edits import EditedActors

    finite(lane_shift, "--lane-shift")
    finite(scale, "--scale")
    try:
        model = SceneModel.load(scene)
        drv = log_with_scene_tracks(load_log(log or model.meta.log.path), model.meta)
        if not 0 <= frame < drv.num_frames:
            raise ValueError(f"--frame must lie in [0, {drv.num_frames}), got {frame}")
        if not 0.05 <= scale <= 8:
            raise ValueError(f"--scale must lie in [0.05, 8], got {scale}")
        edited = EditedActors.load(drv, model, edit) if edit else EditedActors(ActorEdits(), drv, model)
        if pose:
            try:
                x, y, yaw = (float(v) for v in pose.split(","))
            except ValueError as e:
                raise ValueError(f"--pose must be 'x,y,yaw', got '{pose}'") from e
            if not all(math.isfinite(v) for v in (x, y, yaw)):
                raise ValueError(f"--pose must hold finite numbers, got '{pose}'")
            if drv.outside_extent(np.array([x, y])):
                raise ValueError(
                    f"--pose {x:g},{y:g} lies far outside the log's world (more than 100 m beyond its extent)"
                )
            ego = pose_xyz_yaw(x, y, drv.ego_poses[frame][2, 3], yaw)
        else:
            ego = drv.ego_poses[frame]
        if abs(lane_shift) > WORLD_MARGIN_M:
            raise ValueError(f"--lane-shift must lie within ±{WORLD_MARGIN_M:.0f} m, got {lane_shift:g}")
        ego = ego @ make_pose([0.0, lane_shift, 0.0])
        check_output(out, overwrite, "folder", [("the scene", scene), ("the log", drv.root)])
        renderer = SceneRenderer(edited.scene, appearance=appearance)
        placed = renderer.place(edited.poses_at(frame))
        cams = tuple(c.scaled(scale) if scale != 1 else c for c in drv.rig.cameras)
        result = renderer.render_frame(placed, ego, cams, drv.rig.lidars, rng=np.random.default_rng(frame))
    except (DataError, ValueError, KeyError, FileExistsError) as e:
        fail(e)
    from neurodrive.app.render_files import write_render
    from neurodrive.io_utils import staged_directory

    try:
        with staged_directory(out, overwrite=True) as stage:  # all files appear together (policy checked above)
            write_render(stage, result, frame, lane_shift, placed.actor_ids)
    except KeyboardInterrupt:
        interrupted(f"nothing was written to {out}; run the same command again")
    c = result.confidence
    console.print(
        f"wrote {len(result.cameras)} cameras and {sum(r.sweep.num_returns for r in result.lidars.values())} "
        f"LiDAR points ({len(result.lidars)} LiDARs) to {out}; "
        f"realism confidence {c.score:.2f} "
        f"({json.dumps(round(c.distance_to_training_m, 2))} m from the nearest training view)"
    )
