"""Log commands: ``generate`` (the procedural town), ``import`` (datasets -> logs), ``info`` (validate a
log, summarise it, draw overlays, record it for Rerun) and ``export`` (a log -> a nerfstudio dataset)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from neurodrive.app.cli_common import console, fail, interrupted, progress_bar, stage_progress
from neurodrive.errors import DataError

data_app = typer.Typer()


@data_app.command()
def generate(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the log into."),
    preset: str = typer.Option("town-small", help="Town preset: town-small or tiny."),
    seed: int = typer.Option(None, help="Random seed (default: the preset's)."),
    frames: int = typer.Option(None, help="Number of frames (default: the preset's)."),
    overwrite: bool = typer.Option(False, help="Replace an existing log at --out."),
) -> None:
    """Generate a procedural town driving log (cameras, LiDAR, tracks, map, ground-truth world)."""
    from neurodrive.sources.synthetic.generate import generate_log
    from neurodrive.sources.synthetic.presets import get_preset

    try:
        cfg = get_preset(preset, seed=seed, num_frames=frames)
    except (KeyError, ValueError) as e:
        fail(e)
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"rendering {cfg.name}", total=cfg.num_frames)
            generate_log(cfg, out, overwrite=overwrite, progress=lambda done, total: bar.update(task, completed=done))
    except FileExistsError as e:
        fail(e)
    except KeyboardInterrupt:
        interrupted(f"nothing was written to {out} (logs are staged and moved into place when complete); run it again")
    console.print(f"wrote log '{cfg.name}' ({cfg.num_frames} frames) to {out}")


@data_app.command("import")
def import_log(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="kitti-raw, nuscenes, av2, dgp, pandaset (or a plug-in)."),
    src: Path = typer.Argument(..., help="The dataset's folder or file (see docs/datasets.md)."),
    out: Path = typer.Option(..., "--out", "-o", help="Log folder to write."),
    scene: str = typer.Option(None, help="nuscenes: scene name; dgp: scene folder or file."),
    version: str = typer.Option(None, help="nuscenes: table version (default v1.0-mini)."),
    calib: Path = typer.Option(None, help="kitti-raw: the day's calibration folder (default: the parent)."),
    sequence: str = typer.Option(None, help="pandaset: sequence folder name, e.g. 002."),
    frames: int = typer.Option(None, help="kitti-raw, pandaset: import only the first N frames."),
    overwrite: bool = typer.Option(False, help="Replace an existing log at --out."),
) -> None:
    """Import a recorded drive from a public dataset into a log (written atomically)."""
    from neurodrive.logs.io import load_log
    from neurodrive.sources import get_source

    try:
        source = get_source(fmt)
    except KeyError as e:
        fail(ValueError(str(e).strip("'\"")))
    from neurodrive.io_utils import check_output

    options = {
        "scene": scene,
        "version": version,
        "calib": calib,
        "sequence": sequence,
        "frames": frames,
        "overwrite": overwrite,
    }
    try:
        check_output(out, overwrite, "folder", [("the dataset", src)])  # before the import's work
        with progress_bar() as bar:
            source.write_log(src, out, **options, progress=stage_progress(bar))
        log = load_log(out)
    except (DataError, ValueError, FileExistsError) as e:
        fail(e)
    except KeyboardInterrupt:
        interrupted(f"nothing was written to {out} (logs are staged and moved into place when complete); run it again")
    Console().print(f"imported {fmt} '{log.name}' ({log.num_frames} frames) to {out}")


@data_app.command()
def info(
    log: Path = typer.Argument(..., help="Log folder."),
    overlay: Path = typer.Option(None, help="Write camera + LiDAR + box overlays and a bird's-eye view here."),
    overlay_frames: int = typer.Option(3, min=1, max=100, help="How many frames the overlays show."),
    rerun: Path = typer.Option(None, help="Write a Rerun recording (.rrd) of the log here."),
    overwrite: bool = typer.Option(False, help="Replace an existing --rerun file."),
) -> None:
    """Validate a log and print a summary (and draw overlays to check an import by eye, or record it
    for the Rerun viewer: cameras, LiDAR, boxes with ids, ego path, map)."""
    from neurodrive.io_utils import check_apart, check_output
    from neurodrive.logs.io import load_log

    try:
        drv = load_log(log)
        if rerun is not None:
            check_output(rerun, overwrite, "file", [("the log", log)])
        if overlay is not None:
            check_apart(overlay, [("the log", log)])
    except (DataError, FileExistsError) as e:
        fail(e)
    Console().print(summary_table(drv))
    if overlay is not None:
        from neurodrive.app.overlay import write_overlays

        try:
            written = write_overlays(drv, overlay, overlay_frames)
        except DataError as e:
            fail(e)
        Console().print(f"wrote {len(written)} overlay images to {overlay}")
    if rerun is not None:
        from neurodrive.interop.rerun_recording import record_log

        try:
            frames = record_log(drv, rerun)
        except (DataError, RuntimeError) as e:
            fail(e)
        except KeyboardInterrupt:
            interrupted(f"no recording was written to {rerun} (it is renamed into place when complete)")
        Console().print(f"wrote the Rerun recording {rerun} ({frames} frames; open it with: rerun {rerun})")


@data_app.command()
def export(
    log: Path = typer.Argument(..., help="Log folder."),
    fmt: str = typer.Option("nerfstudio", "--format", help="Dataset format to write: nerfstudio."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the dataset into."),
    voxel: float = typer.Option(0.1, help="LiDAR points are averaged per voxel of this size (m); 0: all."),
    max_points: int = typer.Option(500_000, help="At most this many points in points3D.ply."),
    mask_moving: bool = typer.Option(True, help="Write masks hiding the moving tracked actors."),
    scene: Path = typer.Option(
        None, help="A scene reconstructed from LOG: use its held-out frames and mask its auto-tracked movers too."
    ),
    overwrite: bool = typer.Option(False, help="Replace an existing dataset at --out."),
) -> None:
    """Export a log as a dataset for another tool (nerfstudio: transforms.json, images, masks, LiDAR
    points), holding out the frames evaluate-recon holds out."""
    from neurodrive.interop.nerfstudio_export import export_nerfstudio
    from neurodrive.io_utils import check_output
    from neurodrive.logs.io import load_log

    if fmt != "nerfstudio":
        fail(ValueError(f"unknown export format '{fmt}' (known: nerfstudio)"))
    inputs = [("the log", log)] + ([("the scene", scene)] if scene is not None else [])
    try:
        check_output(out, overwrite, "folder", inputs)
        drv = load_log(log)
        result = export_nerfstudio(
            drv,
            out,
            overwrite=overwrite,
            voxel_m=voxel,
            max_points=max_points,
            mask_moving=mask_moving,
            scene=scene,
        )
    except (DataError, ValueError, FileExistsError) as e:
        fail(e)
    except KeyboardInterrupt:
        interrupted(f"nothing was written to {out} (the dataset is staged and moved into place when complete)")
    held = (
        f"frames {result.holdout_frames}"
        if result.holdout_frames
        else "the log is too short to hold frames out: evaluated on its training images"
    )
    Console().print(
        f"wrote nerfstudio dataset of '{drv.name}' to {out}: {result.images} images "
        f"({result.train_images} train, {result.test_images} held out: {held}), "
        f"{result.points} LiDAR points, {result.masked_images} images with moving actors masked"
    )


def summary_table(drv) -> Table:
    table = Table(title=f"log '{drv.name}'")
    table.add_column("item")
    table.add_column("value")
    duration = drv.timestamps_s[-1] - drv.timestamps_s[0]
    table.add_row("frames", f"{drv.num_frames} over {duration:.1f} s")
    ps = drv.pose_source
    table.add_row("ego poses", f"{ps.get('kind')} ({ps.get('method')})")
    for cam in drv.rig.cameras:
        table.add_row(f"camera {cam.name}", f"{cam.width_px}x{cam.height_px}, fx={cam.intrinsics[0, 0]:.1f}")
    if not drv.rig.lidars:
        table.add_row("lidar", "none")
    for lid in drv.rig.lidars:
        rows, cols = lid.pattern.image_shape
        kind = f"{rows} beams x {cols} azimuths" if lid.measured_pattern is None else f"measured {rows} x {cols} rays"
        sweeps = sum(drv.has_lidar(f, lid.name) for f in range(drv.num_frames))
        table.add_row(f"lidar {lid.name}", f"{kind}, {lid.max_range_m:.0f} m, {sweeps} sweeps")
    cats: dict[str, int] = {}
    for t in drv.tracks:
        cats[t.category] = cats.get(t.category, 0) + 1
    table.add_row("tracks", ", ".join(f"{n} {c}" for c, n in sorted(cats.items())) or "none")
    if drv.has_map:
        table.add_row("map", f"{len(drv.road_map.lanes)} lanes, {len(drv.road_map.drivable_areas)} drivable polygons")
    else:
        table.add_row("map", "none: routes and off-road use a corridor around the logged ego path")
    return table
