"""LiDAR intensity (fall-off with incidence and range, times a per-surface reflectivity) and ray drop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurodrive.lidar.ray_drop import DROP_NEIGHBOURS, HitRays, RayDropModel


@dataclass(frozen=True)
class LidarIntensityModel:
    """One LiDAR's response: intensity = gain * reflectivity * (alpha + (1 - alpha) cos(incidence)) *
    exp(-beta * range), the reflectivity a property of the surface shared by every LiDAR of the rig;
    drop probability of a hit ray from the ray-drop MLP (the 16-neighbour vertex rate alone without it)."""

    alpha: float
    beta_per_m: float
    drop: RayDropModel | None = None
    gain: float = 1.0  # this LiDAR's intensity scale relative to the rig's primary LiDAR

    def falloff(self, cos_incidence: np.ndarray, range_m: np.ndarray) -> np.ndarray:
        shape = (self.alpha + (1 - self.alpha) * cos_incidence) * np.exp(-self.beta_per_m * range_m)
        return shape if self.gain == 1.0 else self.gain * shape

    def drop_probability(self, rates: np.ndarray, rays: HitRays) -> np.ndarray:
        """Of hit ``rays``, given their vertex drop rates (n, K)."""
        if self.drop is None:
            return rates[:, DROP_NEIGHBOURS.index(16)]
        return self.drop.probability(rays.features(rates))
