"""The ``neurodrive`` command line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from neurodrive.errors import DataError

app = typer.Typer(help="neurodrive: neural closed-loop driving simulation on the CPU.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)  # long paths in messages stay on one line


class LazyProgress(Progress):
    """Progress bars whose display starts with the first bar: an error raised before any work is one
    line, with no empty bar printed around it."""

    def __enter__(self) -> LazyProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.live.is_started:
            self.stop()

    def add_task(self, *args, **kwargs) -> TaskID:
        if not self.live.is_started:
            self.start()
        return super().add_task(*args, **kwargs)


def progress_bar() -> Progress:
    return LazyProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def stage_progress(bar: Progress):
    """A ``progress(stage, done, total)`` callback that shows one bar per stage."""
    tasks: dict[str, TaskID] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return progress


def _fail(err: Exception) -> None:
    console.print(f"[red]error:[/red] {err}")
    raise typer.Exit(code=2)


def interrupted(kept: str) -> None:
    """Ctrl-C: one line saying what was kept and how to go on; exit status 130 (128 + SIGINT)."""
    console.print(f"[yellow]interrupted:[/yellow] {kept}")
    raise typer.Exit(code=130)


def _finite(value: float, option: str) -> float:
    if not math.isfinite(value):
        _fail(ValueError(f"{option} must be a finite number, got {value}"))
    return value


@app.command()
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
        _fail(e)
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"rendering {cfg.name}", total=cfg.num_frames)
            generate_log(cfg, out, overwrite=overwrite, progress=lambda done, total: bar.update(task, completed=done))
    except FileExistsError as e:
        _fail(e)
    except KeyboardInterrupt:
        interrupted(f"nothing was written to {out} (logs are staged and moved into place when complete); run it again")
    console.print(f"wrote log '{cfg.name}' ({cfg.num_frames} frames) to {out}")


@app.command()
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
        _fail(e)
    if not moving:
        cfg = replace(cfg, dynamic=replace(cfg.dynamic, enabled=False))
    try:  # the configs check their ranges
        if steps is not None:
            cfg = replace(cfg, appearance=replace(cfg.appearance, train_steps=steps))
        if voxel is not None:
            cfg = replace(cfg, geometry=replace(cfg.geometry, voxel_size_m=voxel))
    except ValueError as e:
        _fail(ValueError(f"--{'steps' if 'train_steps' in str(e) else 'voxel'}: {e}"))
    try:
        drv = load_log(log)
        with progress_bar() as bar:
            model = run(drv, out, cfg, stage_progress(bar), overwrite=overwrite, restart=restart)
    except (DataError, ValueError, FileExistsError) as e:
        _fail(e)
    except KeyboardInterrupt:
        interrupted(
            f"finished stages are kept in {out / 'checkpoints'}; run the same command again to resume "
            "(--restart to start over)"
        )
    stats = model.meta.stats
    console.print(
        f"wrote scene to {out}: {stats['background_triangles']} background triangles, "
        f"{len(model.actors)} actors, {stats['texels']} texels"
    )


@app.command("evaluate-recon")
def evaluate_recon(
    scene: Path = typer.Argument(..., help="Reconstructed scene folder."),
    log: Path = typer.Argument(..., help="The log it was reconstructed from."),
    out: Path = typer.Option(None, "--out", "-o", help="Also write the metrics to this JSON file."),
    lane_shift: bool = typer.Option(True, help="Also compare against ground truth 2 m to the side (generated logs)."),
    figures: Path = typer.Option(None, help="Write ground truth | render | error PNGs of the frames to this folder."),
    actor_edits: bool = typer.Option(True, help="Also measure actor removal and close-ups (generated logs)."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out file."),
) -> None:
    """Metrics on held-out frames: PSNR / SSIM (whole image, outside moving objects, on actors), LiDAR
    depth / intensity / ray drop, Chamfer, lane shift, actor removal and close-up PSNR."""
    import json

    from neurodrive.io_utils import atomic_write_json, check_output
    from neurodrive.logs.io import load_log
    from neurodrive.reconstruct.evaluate import evaluate_reconstruction
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
            metrics = evaluate_reconstruction(
                model,
                drv,
                lane_shift=lane_shift,
                progress=lambda s, d, n: bar.update(task, completed=d),
                figures=figures,
                actor_edits=actor_edits,
            )
    except (DataError, ValueError, FileExistsError) as e:
        _fail(e)
    except KeyboardInterrupt:
        interrupted("nothing was written; run the same command again")
    if out is not None:
        atomic_write_json(out, metrics)
    protocol = metrics["protocol"]
    table = Table(
        title=f"reconstruction of '{drv.name}' on frames {metrics['frames']} (held out: {protocol['holdout']}; "
        f"psnr_db / ssim over all cameras, *_front: {protocol['front_camera']})"
    )
    table.add_column("metric")
    table.add_column("value")
    skip = ("frames", "protocol", "psnr_db_per_camera", "ssim_per_camera", "actor_removal_views")
    for key, value in metrics.items():
        if key in skip or key.endswith("_note"):
            continue
        table.add_row(
            key, "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else json.dumps(value))
        )
    Console().print(table)


@app.command()
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

    _finite(lane_shift, "--lane-shift")
    _finite(scale, "--scale")
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
        renderer = SceneRenderer(edited.scene)
        placed = renderer.place(edited.poses_at(frame))
        cams = tuple(c.scaled(scale) if scale != 1 else c for c in drv.rig.cameras)
        result = renderer.render_frame(placed, ego, cams, drv.rig.lidars, rng=np.random.default_rng(frame))
    except (DataError, ValueError, KeyError, FileExistsError) as e:
        _fail(e)
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


@app.command()
def replay(
    scenario: Path = typer.Argument(..., help="Scenario YAML."),
    agent: str = typer.Option(
        "expert", "--agent", "-a", help="Agent: expert, idm, constant-velocity, lidar-aeb (or a plug-in)."
    ),
    out: Path = typer.Option(
        Path("replay_out"), "--out", "-o", help="Folder for video.mp4, metrics.json and plot.png."
    ),
    video: bool = typer.Option(True, help="Render the cameras and write the mp4 (needs the scenario's scene)."),
    seed: int = typer.Option(None, help="Episode seed (default: the scenario's)."),
    rerun: Path = typer.Option(None, help="Also write a Rerun recording (.rrd) of the episode here."),
    overwrite: bool = typer.Option(False, help="Replace an earlier result in --out (and the --rerun file)."),
) -> None:
    """Run an agent in closed loop through a scenario; write an mp4, metrics.json and a plot (and a
    Rerun recording: cameras, LiDAR, boxes, ego path, route, per-step metrics)."""
    from neurodrive.app.replay import replay as run_replay

    try:
        with progress_bar() as bar:
            task = bar.add_task(f"{agent} on {scenario.name}", total=None)
            metrics = run_replay(
                scenario,
                agent,
                out,
                video=video,
                seed=seed,
                overwrite=overwrite,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                rerun_path=rerun,
            )
    except (DataError, KeyError, ValueError, FileExistsError, RuntimeError) as e:
        _fail(e)
    except KeyboardInterrupt:
        interrupted(f"no partial result was left in {out}; run the same command again")
    table = Table(title=f"{metrics['scenario']} - {agent}")
    table.add_column("metric")
    table.add_column("score", justify="right")
    table.add_column("value", justify="right")
    for name, m in metrics["metrics"].items():
        value = "inf" if m["value"] is None else f"{m['value']:.3g} {m['unit']}"
        table.add_row(name, f"{m['score']:.2f}", value)
    table.add_row("[bold]nuPlan-style score", f"[bold]{metrics['nuplan_score']:.3f}", "")
    table.add_row("[bold]NeuroNCAP score", f"[bold]{metrics['neuroncap_score']:.2f}", "of 5")
    console.print(table)
    console.print(f"wrote {out}/metrics.json, plot.png" + (", video.mp4" if (out / "video.mp4").is_file() else ""))
    if rerun is not None:
        console.print(f"wrote the Rerun recording {rerun} (open it with: rerun {rerun})")


@app.command("eval")
def evaluate(
    scenarios: Path = typer.Argument(..., help="Folder of scenario YAML files."),
    agent: str = typer.Option("expert", "--agent", "-a"),
    out: Path = typer.Option(Path("eval_out"), "--out", "-o"),
    workers: int = typer.Option(1, min=1, help="Local worker processes."),
    ray_address: str = typer.Option(
        None, help="Run on this Ray cluster ('auto', 'ray://host:10001', or 'local' for a Ray instance here)."
    ),
    video: bool = typer.Option(False, help="Also write each scenario's mp4."),
    rerun: bool = typer.Option(False, help="Also write each scenario's Rerun recording (OUT/<name>/episode.rrd)."),
    overwrite: bool = typer.Option(False, help="Re-run scenarios that already have metrics."),
) -> None:
    """Run an agent on every scenario of a folder (in parallel); write OUT/summary.json."""
    from neurodrive.app.evaluation import evaluate_scenarios

    finished: list[str] = []

    def reuse_note(reused: list[str], stale: list[str]) -> None:
        if reused:
            console.print(
                f"reusing {len(reused)} finished result(s) made with the same agent, scenario, scene and code: "
                f"{', '.join(reused)} (--overwrite runs them again)"
            )
        if stale:
            console.print(
                f"running again {len(stale)} result(s) made with another agent, scenario content or code version: "
                f"{', '.join(stale)}"
            )

    def done(name: str, result: dict) -> None:
        finished.append(name)
        bar.advance(task)

    try:
        with progress_bar() as bar:
            task = bar.add_task(f"{agent}", total=len(list(scenarios.glob("*.y*ml"))) if scenarios.is_dir() else None)
            summary = evaluate_scenarios(
                scenarios,
                agent,
                out,
                workers,
                ray_address,
                video,
                overwrite,
                rerun=rerun,
                on_done=done,
                on_reuse=reuse_note,
            )
    except (DataError, RuntimeError, FileExistsError) as e:
        _fail(e)
    except KeyboardInterrupt as e:  # EvalInterrupted once the workers have stopped: its list is final
        kept = getattr(e, "finished", finished)
        interrupted(
            f"queued and running scenarios were stopped; {len(kept)} finished this run and are kept in {out}; "
            "run the same command again to resume"
        )
    table = Table(title=f"{agent}: {summary['scenarios']} scenarios")
    for col in ("scenario", "nuPlan score", "NeuroNCAP", "collisions"):
        table.add_column(col)
    for name, r in summary["results"].items():
        if "error" in r:
            table.add_row(name, "[red]error", r["error"][:60], "")
        else:
            table.add_row(name, f"{r['nuplan_score']:.3f}", f"{r['neuroncap_score']:.2f}", str(len(r["collisions"])))
    console.print(table)
    console.print(f"wrote {out}/summary.json")


@app.command()
def view(
    target: Path = typer.Argument(..., help="A reconstructed scene folder or a scenario YAML."),
    save: Path = typer.Option(Path("edited_scenario.yaml"), help="Where S saves the edits as a scenario."),
    size: str = typer.Option(None, help="Largest window size 'WIDTHxHEIGHT' in pixels (default: fit the screen)."),
    camera_scale: float = typer.Option(
        None,
        min=0.05,
        max=4.0,
        help="Camera resolution factor (default: the scenario's; for a scene, what keeps the rig near 1.5 Mpx).",
    ),
) -> None:
    """Interactive viewer: drive with the arrow keys, click/drag actors, X removes, I inserts, S saves."""
    from neurodrive.app.viewer import NoDisplayError, Viewer

    max_size = None
    if size is not None:
        try:
            w, h = (int(v) for v in size.lower().split("x"))
        except ValueError:
            _fail(ValueError(f"--size must be 'WIDTHxHEIGHT' (e.g. 1600x900), got '{size}'"))
        if not (320 <= w <= 16384 and 240 <= h <= 16384):
            _fail(ValueError(f"--size must lie between 320x240 and 16384x16384, got '{size}'"))
        max_size = (w, h)
    try:
        viewer = Viewer(target, save, max_size_px=max_size, camera_scale=camera_scale)
    except (DataError, ValueError, NoDisplayError) as e:
        _fail(e)
    try:
        viewer.run()
    finally:
        viewer.close()


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Folder for the log, scene, videos and report."),
    preset: str = typer.Option("town-small", help="Town preset to generate."),
) -> None:
    """Generate a town log, reconstruct it, run a cut-in scenario in closed loop; write videos + a report."""
    from neurodrive.app.demo import run_demo
    from neurodrive.raycast.embree import caster_description

    try:
        with progress_bar() as bar:
            results = run_demo(out, preset, progress=stage_progress(bar), log_only=console.print)
    except (DataError, KeyError, ValueError) as e:
        _fail(e)
    except KeyboardInterrupt:
        interrupted(f"the finished log and scene stages are kept in {out}; run `neurodrive demo` again to resume")
    console.print((out / "report.md").read_text())
    console.print(f"videos: {', '.join(str(out / 'replay' / a / 'video.mp4') for a in results)}")
    console.print(caster_description())


from neurodrive.app.cli_data import register as _register_data_commands  # noqa: E402

_register_data_commands(app, _fail)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
