"""The LiDAR model shared by reconstruction and rendering: sensors and sweeps, ray patterns, intensity, ray drop."""
