"""Procedural synthetic driving logs: a ground-truth world (meshes + materials), its ray-cast
renderer, and the town generator that writes logs from it."""
