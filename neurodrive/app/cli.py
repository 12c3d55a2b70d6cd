"""The ``neurodrive`` command line: one flat set of commands, defined by meaning in ``cli_data.py`` (logs),
``cli_scene.py`` (scenes) and ``cli_sim.py`` (closed loop); shared helpers in ``cli_common.py``."""

from __future__ import annotations

import typer

from neurodrive.app.cli_data import data_app
from neurodrive.app.cli_scene import scene_app
from neurodrive.app.cli_sim import sim_app

app = typer.Typer(help="neurodrive: neural closed-loop driving simulation on the CPU.", no_args_is_help=True)
for commands in (data_app, scene_app, sim_app):
    app.add_typer(commands)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
