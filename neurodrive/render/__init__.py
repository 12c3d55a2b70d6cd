"""Scene reconstruction from a log and camera / LiDAR rendering of the reconstructed scene."""
