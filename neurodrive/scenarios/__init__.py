"""Closed-loop scenario files (YAML): scene or log, start, route, duration, seed, actor edits, sensors."""

from neurodrive.scenarios.scenario import Scenario

__all__ = ["Scenario"]
