"""The ``neurodrive`` command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from neurodrive.errors import DataError

app = typer.Typer(help="neurodrive: neural closed-loop driving simulation on the CPU.", no_args_is_help=True)
console = Console(stderr=True)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _fail(err: Exception) -> None:
    console.print(f"[red]error:[/red] {err}")
    raise typer.Exit(code=2)


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the log into."),
    preset: str = typer.Option("town-small", help="Town preset: town-small or tiny."),
    seed: int = typer.Option(None, help="Random seed (default: the preset's)."),
    frames: int = typer.Option(None, help="Number of frames (default: the preset's)."),
    overwrite: bool = typer.Option(False, help="Replace an existing log at --out."),
) -> None:
    """Generate a procedural town driving log (cameras, LiDAR, tracks, map, ground-truth world)."""
    from neurodrive.scenarios.synthetic.generate import generate_log
    from neurodrive.scenarios.synthetic.presets import get_preset

    try:
        cfg = get_preset(preset, seed=seed, num_frames=frames)
    except (KeyError, ValueError) as e:
        _fail(e)
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"rendering {cfg.name}", total=cfg.num_frames)
            generate_log(cfg, out, overwrite=overwrite, progress=lambda done, total: bar.update(task, completed=done))
    except FileExistsError as e:
        _fail(e)
    console.print(f"wrote log '{cfg.name}' ({cfg.num_frames} frames) to {out}")


@app.command()
def info(log: Path = typer.Argument(..., help="Log folder.")) -> None:
    """Validate a log and print a summary."""
    from neurodrive.scenarios.log_io import load_log

    try:
        drv = load_log(log)
    except DataError as e:
        _fail(e)
    table = Table(title=f"log '{drv.name}'")
    table.add_column("item")
    table.add_column("value")
    duration = drv.timestamps_s[-1] - drv.timestamps_s[0]
    table.add_row("frames", f"{drv.num_frames} over {duration:.1f} s")
    for cam in drv.rig.cameras:
        table.add_row(f"camera {cam.name}", f"{cam.width_px}x{cam.height_px}, fx={cam.intrinsics[0, 0]:.1f}")
    lid = drv.rig.lidar
    table.add_row(f"lidar {lid.name}", f"{lid.num_beams} beams x {lid.azimuth_bins} azimuths, {lid.max_range_m:.0f} m")
    cats: dict[str, int] = {}
    for t in drv.tracks:
        cats[t.category] = cats.get(t.category, 0) + 1
    table.add_row("tracks", ", ".join(f"{n} {c}" for c, n in sorted(cats.items())) or "none")
    table.add_row("map", f"{len(drv.road_map.lanes)} lanes, {len(drv.road_map.drivable_areas)} drivable polygons")
    Console().print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
