"""Seeded, vectorised value noise for procedural textures."""

from __future__ import annotations

import numpy as np


def _hash(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: int) -> np.ndarray:
    """Integer lattice hash -> float in [0, 1)."""
    h = (
        ix.astype(np.int64) * 374761393
        + iy.astype(np.int64) * 668265263
        + iz.astype(np.int64) * 2147483647
        + seed * 1013904223
    ) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF).astype(np.float64) / float(0x1000000)


def value_noise(x: np.ndarray, y: np.ndarray, z: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Smooth value noise in [0, 1) on a unit lattice (trilinear with smoothstep)."""
    if z is None:
        z = np.zeros_like(x)
    x0, y0, z0 = np.floor(x), np.floor(y), np.floor(z)
    fx, fy, fz = x - x0, y - y0, z - z0
    fx, fy, fz = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy), fz * fz * (3 - 2 * fz)
    out = np.zeros_like(x, dtype=np.float64)
    for dx in (0, 1):
        wx = fx if dx else 1 - fx
        for dy in (0, 1):
            wy = fy if dy else 1 - fy
            for dz in (0, 1):
                wz = fz if dz else 1 - fz
                out += wx * wy * wz * _hash(x0 + dx, y0 + dy, z0 + dz, seed)
    return out


def fbm(x: np.ndarray, y: np.ndarray, z: np.ndarray | None = None, octaves: int = 3, seed: int = 0) -> np.ndarray:
    """Fractal sum of value noise, normalised to [0, 1)."""
    total = np.zeros_like(x, dtype=np.float64)
    amplitude, norm = 1.0, 0.0
    for o in range(octaves):
        f = 2.0**o
        total += amplitude * value_noise(x * f, y * f, None if z is None else z * f, seed + 17 * o)
        norm += amplitude
        amplitude *= 0.5
    return total / norm


def cell_random(ix: np.ndarray, iy: np.ndarray, seed: int = 0) -> np.ndarray:
    """A random value in [0, 1) per integer cell (for per-tile / per-window variation)."""
    return _hash(ix, iy, np.zeros_like(ix), seed)
