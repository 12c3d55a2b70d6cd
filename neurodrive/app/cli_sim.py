"""Closed-loop commands: ``replay`` a scenario with an agent, ``eval`` a folder of scenarios, ``view``
a scene or scenario interactively, and the ``demo``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from neurodrive.app.cli_common import console, fail, interrupted, progress_bar, stage_progress
from neurodrive.errors import DataError

sim_app = typer.Typer()


@sim_app.command()
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
        fail(e)
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


@sim_app.command("eval")
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
        fail(e)
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


@sim_app.command()
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
            fail(ValueError(f"--size must be 'WIDTHxHEIGHT' (e.g. 1600x900), got '{size}'"))
        if not (320 <= w <= 16384 and 240 <= h <= 16384):
            fail(ValueError(f"--size must lie between 320x240 and 16384x16384, got '{size}'"))
        max_size = (w, h)
    try:
        viewer = Viewer(target, save, max_size_px=max_size, camera_scale=camera_scale)
    except (DataError, ValueError, NoDisplayError) as e:
        fail(e)
    try:
        viewer.run()
    finally:
        viewer.close()


@sim_app.command()
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
        fail(e)
    except KeyboardInterrupt:
        interrupted(f"the finished log and scene stages are kept in {out}; run `neurodrive demo` again to resume")
    console.print((out / "report.md").read_text())
    console.print(f"videos: {', '.join(str(out / 'replay' / a / 'video.mp4') for a in results)}")
    console.print(caster_description())
