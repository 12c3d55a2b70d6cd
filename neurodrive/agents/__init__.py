"""Planners and policies that drive the ego vehicle."""
