"""Episode plots: speed, acceleration and progress over time with collisions marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurodrive.io_utils import atomic_write_bytes
from neurodrive.sim.simulator import Simulator


def plot_figure(sim: Simulator, agent_name: str = ""):
    """A matplotlib figure of speed, acceleration and progress over time, collisions marked and
    named in a legend, titled with the scenario and the agent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = sim.record
    t = np.array(rec.times_s)
    e = rec.ego_array()
    fig, axes = plt.subplots(3, 1, figsize=(7, 6), sharex=True)
    axes[0].plot(t, e[:, 3], label="ego speed")
    axes[0].set_ylabel("speed (m/s)")
    axes[1].plot(t, e[:, 4])
    axes[1].set_ylabel("accel (m/s²)")
    axes[2].plot(t, rec.progress_m())
    axes[2].set_ylabel("progress (m)")
    axes[2].set_xlabel("time (s)")
    for c in rec.collisions:
        for ax in axes:
            ax.axvline(
                c.time_s, color="red", linestyle="--", label=f"collision with {c.actor_id}" if ax is axes[0] else None
            )
    axes[0].legend(loc="best", fontsize="small")
    fig.suptitle(f"{sim.scenario.name} - agent {agent_name}" if agent_name else sim.scenario.name)
    fig.tight_layout()
    return fig


def write_plot(sim: Simulator, path: Path, agent_name: str = "") -> None:
    """``plot_figure`` as a PNG, written atomically with the same file mode as every other output."""
    import io

    import matplotlib.pyplot as plt

    fig = plot_figure(sim, agent_name)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
