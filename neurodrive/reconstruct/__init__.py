"""Offline fitting of a scene from a log: geometry (TSDF), appearance, actors, sky, LiDAR model."""
