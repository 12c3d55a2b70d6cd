"""Planners and policies that drive the ego: built-in agents and plug-ins.

Plug-ins register a factory under the entry-point group ``neurodrive.agents``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from neurodrive.agents.base import Agent
from neurodrive.agents.constant_velocity import ConstantVelocity
from neurodrive.agents.emergency_brake import LidarEmergencyBrake
from neurodrive.agents.expert import LogReplayExpert
from neurodrive.agents.idm import IDMLaneFollower
from neurodrive.agents.keyboard import KeyboardAgent

BUILTIN_AGENTS: dict[str, Callable[[], Agent]] = {
    a.name: a for a in (LogReplayExpert, IDMLaneFollower, ConstantVelocity, LidarEmergencyBrake, KeyboardAgent)
}


def available_agents() -> dict[str, Callable[[], Agent]]:
    found = {ep.name: ep.load for ep in entry_points(group="neurodrive.agents")}
    plugins: dict[str, Callable[[], Agent]] = {name: _plugin_factory(load) for name, load in found.items()}
    return {**plugins, **BUILTIN_AGENTS}


def _plugin_factory(load: Callable[[], Callable[[], Agent]]) -> Callable[[], Agent]:
    """A factory that loads the plug-in's entry point only when the agent is made."""
    return lambda: load()()


def make_agent(name: str) -> Agent:
    agents = available_agents()
    if name not in agents:
        raise KeyError(f"unknown agent '{name}' (available: {', '.join(sorted(agents))})")
    return agents[name]()


__all__ = ["Agent", "available_agents", "make_agent", "BUILTIN_AGENTS"]
