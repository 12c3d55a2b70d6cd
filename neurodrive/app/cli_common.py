"""What every command of the command line shares: the console, progress bars, one-line errors and
interruptions."""

from __future__ import annotations

import math

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


def fail(err: Exception) -> None:
    console.print(f"[red]error:[/red] {err}")
    raise typer.Exit(code=2)


def interrupted(kept: str) -> None:
    """Ctrl-C: one line saying what was kept and how to go on; exit status 130 (128 + SIGINT)."""
    console.print(f"[yellow]interrupted:[/yellow] {kept}")
    raise typer.Exit(code=130)


def finite(value: float, option: str) -> float:
    if not math.isfinite(value):
        fail(ValueError(f"{option} must be a finite number, got {value}"))
    return value
