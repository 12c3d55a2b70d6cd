"""Closed-loop simulation: world state, vehicle dynamics, actor behaviours, collisions, metrics."""
