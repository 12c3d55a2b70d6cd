"""Gymnasium environments: ``gymnasium.make("neurodrive/ClosedLoop-v0", scenario=..., scene=...)``."""

from __future__ import annotations

ENV_ID = "neurodrive/ClosedLoop-v0"


def register() -> None:
    import gymnasium

    if ENV_ID not in gymnasium.registry:
        gymnasium.register(ENV_ID, entry_point="neurodrive.envs.closed_loop:ClosedLoopEnv")
