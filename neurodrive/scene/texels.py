"""Per-triangle texel patches: the surface parametrisation that holds appearance.

Triangle t gets an n x n grid over its barycentric (u, v) coordinates, of which the
n (n + 1) / 2 cells with i + j < n are stored. n follows the triangle's size and how closely it was
seen, so texels are about one training pixel wide. A hit (triangle, u, v) maps to its texel by
arithmetic alone, which keeps rendering a gather, not a search.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class TexelAtlas:
    offset: np.ndarray  # (F,) int64 index of each triangle's first texel
    resolution: np.ndarray  # (F,) int32 cells per triangle edge (n)

    @cached_property
    def packed(self) -> np.ndarray:
        """(F,) int64: first texel << 8 | cells per edge (at most 255)."""
        return (self.offset.astype(np.int64) << 8) | self.resolution.astype(np.int64)

    @property
    def num_texels(self) -> int:
        n = self.resolution.astype(np.int64)
        return int(self.offset[-1] + n[-1] * (n[-1] + 1) // 2) if len(n) else 0

    @staticmethod
    def build(
        vertices: np.ndarray, triangles: np.ndarray, texel_size_m: np.ndarray, max_resolution: int = 24
    ) -> TexelAtlas:
        """``texel_size_m`` (F,) is the wanted texel width of each triangle."""
        if len(triangles) == 0:
            return TexelAtlas(np.zeros(0, np.int64), np.zeros(0, np.int32))
        tri = vertices[triangles]
        edge = np.max(np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2), axis=1)
        n = np.clip(np.ceil(edge / np.maximum(texel_size_m, 1e-4)), 1, max_resolution).astype(np.int64)
        counts = n * (n + 1) // 2
        offset = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return TexelAtlas(offset.astype(np.int64), n.astype(np.int32))

    def lookup(self, triangle: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Texel index of hits (triangle (n,), barycentric uv (n, 2))."""
        packed = np.take(self.packed, triangle)  # one gather for both per-triangle values
        n = (packed & 255).astype(np.int32)
        last = n - 1
        i = np.minimum((uv[:, 0] * n).astype(np.int32), last)  # u, v >= 0: truncation is floor
        last -= i
        j = np.minimum((uv[:, 1] * n).astype(np.int32), last)
        row_start = i * n - ((i * (i - 1)) >> 1)
        row_start += j
        return (packed >> 8) + row_start

    def texel_centres(self, vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
        """(T, 3) a point inside each texel's cell (for nearest-texel filling)."""
        n = self.resolution.astype(np.int64)
        counts = n * (n + 1) // 2
        tri_of = np.repeat(np.arange(len(n)), counts)
        k = np.arange(len(tri_of)) - self.offset[tri_of]
        nn = n[tri_of]
        # invert k = i*n - i*(i-1)/2 + j row by row
        i = np.zeros_like(k)
        for _ in range(int(n.max()) if len(n) else 0):
            row_end = (i + 1) * nn - (i + 1) * i // 2
            i = np.where(k >= row_end, i + 1, i)
        j = k - (i * nn - i * (i - 1) // 2)
        u = ((i + 1.0 / 3.0) / nn).astype(np.float32)[:, None]
        v = ((j + 1.0 / 3.0) / nn).astype(np.float32)[:, None]
        del k, nn, i, j
        verts = vertices.astype(np.float32)
        out = verts[triangles[tri_of, 0]] * (1 - u - v)
        out += verts[triangles[tri_of, 1]] * u
        out += verts[triangles[tri_of, 2]] * v
        return out
