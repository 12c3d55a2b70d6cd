"""Sparse truncated signed distance field fitted to range measurements, and its mesh.

Each return (sensor origin o, point p) updates the voxels within ``truncation_m`` of p along the
ray with the projective signed distance ``|p - o| - (c - o) . d`` of the voxel centre c (positive in
front of the surface). Weighted averages are kept in a sparse, sorted voxel table, so memory grows
with the observed surface, not with the scene's bounding box. The zero level set is extracted by
marching cubes (scikit-image) tile by tile; triangles touching unobserved voxels are dropped, so no
surface is invented where nothing was measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.measure import marching_cubes

_BITS = 21
_OFFSET = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1


def pack_keys(idx: np.ndarray) -> np.ndarray:
    """Voxel indices (N, 3) -> int64 keys (21 bits per axis, +-1M voxels)."""
    i = idx.astype(np.int64) + _OFFSET
    return (i[:, 0] << (2 * _BITS)) | (i[:, 1] << _BITS) | i[:, 2]


def unpack_keys(keys: np.ndarray) -> np.ndarray:
    return np.stack([(keys >> (2 * _BITS)) & _MASK, (keys >> _BITS) & _MASK, keys & _MASK], axis=1) - _OFFSET


@dataclass
class SparseTsdf:
    voxel_size_m: float = 0.1
    truncation_m: float = 0.3

    def __post_init__(self) -> None:
        self.keys: np.ndarray = np.zeros(0, np.int64)
        self.sdf_sum: np.ndarray = np.zeros(0, np.float64)
        self.weight: np.ndarray = np.zeros(0, np.float64)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_size = 0

    @property
    def num_voxels(self) -> int:
        self._merge()
        return len(self.keys)

    def integrate(
        self,
        origins: np.ndarray,
        points: np.ndarray,
        weights: np.ndarray | None = None,
        truncation_per_m: float = 0.0,
        max_truncation_m: float | None = None,
    ) -> None:
        """Add returns: ``points`` (N, 3) seen from ``origins`` (N, 3) or (3,), same frame.

        With ``truncation_per_m`` > 0 the band around far returns widens to
        ``min(max_truncation_m, truncation_per_m * range)``, so sparse far returns (LiDAR rings on
        the ground) still close the surface between them.
        """
        if len(points) == 0:
            return
        origins = np.broadcast_to(np.asarray(origins, np.float64), points.shape)
        d = points - origins
        r = np.linalg.norm(d, axis=1)
        ok = r > 1e-3
        d, r, origins, points = d[ok] / r[ok, None], r[ok], origins[ok], points[ok]
        w_ray = np.ones(len(r)) if weights is None else np.asarray(weights, np.float64)[ok]
        vs = self.voxel_size_m
        tau_max = max_truncation_m or self.truncation_m
        tau = np.clip(truncation_per_m * r, self.truncation_m, tau_max)
        # bucket returns by band width so each bucket samples its band every half voxel
        levels = np.unique(np.ceil(tau / self.truncation_m))
        for level in levels:
            sel = np.ceil(tau / self.truncation_m) == level
            band = level * self.truncation_m
            offsets = np.arange(-band, band + 1e-9, vs / 2)
            self._integrate_band(origins[sel], points[sel], d[sel], r[sel], w_ray[sel], offsets, band)

    def _integrate_band(self, origins, points, d, r, w_ray, offsets, band) -> None:
        samples = points[:, None, :] + d[:, None, :] * offsets[None, :, None]  # (N, K, 3)
        idx = np.floor(samples / self.voxel_size_m).astype(np.int64).reshape(-1, 3)
        centres = (idx + 0.5) * self.voxel_size_m
        rep = np.repeat(np.arange(len(r)), len(offsets))
        sdf = r[rep] - np.einsum("ij,ij->i", centres - origins[rep], d[rep])
        keep = (sdf > -band) & (sdf < band)
        keys = pack_keys(idx[keep])
        # behind the surface the measurement says less: down-weight it
        w = w_ray[rep][keep] * np.where(sdf[keep] < 0, 0.5, 1.0)
        self._add(keys, np.clip(sdf[keep], -band, band) * w, w)

    def _add(self, keys: np.ndarray, sdf_w: np.ndarray, w: np.ndarray) -> None:
        uniq, inv = np.unique(keys, return_inverse=True)
        self._pending.append((uniq, np.bincount(inv, sdf_w, len(uniq)), np.bincount(inv, w, len(uniq))))
        self._pending_size += len(uniq)
        if self._pending_size > 4_000_000:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self.keys] + [p[0] for p in self._pending])
        sdf = np.concatenate([self.sdf_sum] + [p[1] for p in self._pending])
        w = np.concatenate([self.weight] + [p[2] for p in self._pending])
        self._pending, self._pending_size = [], 0
        self.keys, inv = np.unique(keys, return_inverse=True)
        self.sdf_sum = np.bincount(inv, sdf, len(self.keys))
        self.weight = np.bincount(inv, w, len(self.keys))

    def values(self, min_weight: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(voxel indices (M, 3), signed distances (M,)) of voxels with enough weight."""
        self._merge()
        ok = self.weight > max(min_weight, 1e-9)
        return unpack_keys(self.keys[ok]), self.sdf_sum[ok] / self.weight[ok]

    def query(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signed distance at the voxels containing ``points`` (N, 3), and whether observed.

        Looks the keys up in the merged voxels and in each pending batch without merging them (a merge
        sorts every voxel); the sums are taken in the order a merge would take them, so the values
        are the same bit for bit."""
        keys = pack_keys(np.floor(points / self.voxel_size_m).astype(np.int64))
        sdf_sum, weight, found = np.zeros(len(keys)), np.zeros(len(keys)), np.zeros(len(keys), bool)
        for batch_keys, batch_sdf, batch_w in [(self.keys, self.sdf_sum, self.weight), *self._pending]:
            if len(batch_keys) == 0:
                continue
            pos = np.minimum(np.searchsorted(batch_keys, keys), len(batch_keys) - 1)
            hit = batch_keys[pos] == keys
            sdf_sum[hit] += batch_sdf[pos[hit]]
            weight[hit] += batch_w[pos[hit]]
            found |= hit
        sdf = np.where(found, sdf_sum / np.maximum(weight, 1e-9), np.nan)
        return sdf, found

    def extract_mesh(
        self, min_weight: float = 1.0, tile: int = 48, fallback: SparseTsdf | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Zero level set as (vertices (V, 3) float64 metres, triangles (F, 3) int64).

        ``fallback`` is a coarser field (its voxel a whole multiple of this one's) that fills
        voxels this one never observed, e.g. between sparse far returns.
        """
        idx, sdf = self.values(min_weight)
        if len(idx) == 0 and fallback is None:
            return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
        tile_of = np.floor_divide(idx, tile)
        local = idx - tile_of * tile
        # a voxel on a tile's low face also belongs to the previous tile's block (one-voxel overlap)
        blocks_tile, blocks_local, blocks_sdf = [], [], []
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    dvec = np.array([dx, dy, dz])
                    sel = np.all((local == 0) | (dvec == 0), axis=1)
                    blocks_tile.append(tile_of[sel] - dvec)
                    blocks_local.append(local[sel] + tile * dvec)
                    blocks_sdf.append(sdf[sel])
        t_all = np.concatenate(blocks_tile)
        l_all = np.concatenate(blocks_local)
        s_all = np.concatenate(blocks_sdf)
        order = np.argsort(pack_keys(t_all), kind="stable")
        t_all, l_all, s_all = t_all[order], l_all[order], s_all[order]
        tkeys = pack_keys(t_all)
        starts = np.flatnonzero(np.r_[True, tkeys[1:] != tkeys[:-1]]) if len(tkeys) else np.zeros(0, int)
        ends = np.r_[starts[1:], len(tkeys)]
        tiles = {int(tkeys[s]): (s, e) for s, e in zip(starts, ends)}
        coarse = None
        if fallback is not None:
            ratio = int(round(fallback.voxel_size_m / self.voxel_size_m))
            if ratio < 1 or tile % ratio:
                raise ValueError("fallback voxel must be a whole multiple of the voxel and divide the tile")
            c_idx, c_sdf = fallback.values(min_weight)
            near = np.abs(c_sdf) < fallback.voxel_size_m * 1.5  # only tiles near the coarse surface
            c_keys = np.unique(pack_keys(np.floor_divide(c_idx[near] * ratio, tile)))
            for k in c_keys:
                tiles.setdefault(int(k), (0, 0))
            ck = pack_keys(c_idx)
            c_order = np.argsort(ck)
            coarse = (ck[c_order], c_sdf[c_order], ratio)
        n = tile + 1
        tau = self.truncation_m
        verts_out, tris_out, count = [], [], 0
        for key, (s, e) in tiles.items():
            t_idx = unpack_keys(np.array([key], np.int64))[0]
            vol = np.full((n, n, n), tau, np.float32)
            seen = np.zeros((n, n, n), bool)
            if coarse is not None:
                self._fill_from_coarse(vol, seen, t_idx, tile, coarse)
            if e > s:
                li = l_all[s:e]
                vol[li[:, 0], li[:, 1], li[:, 2]] = s_all[s:e]
                seen[li[:, 0], li[:, 1], li[:, 2]] = True
            if not seen.any():
                continue
            vals = vol[seen]
            if vals.min() >= 0 or vals.max() <= 0:
                continue
            try:
                v, f, _, _ = marching_cubes(vol, 0.0)
            except (ValueError, RuntimeError):
                continue
            lo, hi = np.floor(v).astype(int), np.ceil(v).astype(int)
            v_ok = seen[lo[:, 0], lo[:, 1], lo[:, 2]] & seen[hi[:, 0], hi[:, 1], hi[:, 2]]
            f = f[np.all(v_ok[f], axis=1)]
            if len(f) == 0:
                continue
            # marching cubes samples voxel centres: index i sits at (i + 0.5) * voxel size
            verts_out.append((v + t_idx * tile + 0.5) * self.voxel_size_m)
            tris_out.append(f + count)
            count += len(v)
        if not verts_out:
            return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
        return weld_vertices(np.concatenate(verts_out), np.concatenate(tris_out), 1e-5)

    def _fill_from_coarse(self, vol: np.ndarray, seen: np.ndarray, t_idx: np.ndarray, tile: int, coarse) -> None:
        """Trilinearly upsample the coarse field over one tile block (where it is observed)."""
        keys, values, ratio = coarse
        n = tile + 1
        # fine voxel centres of the block in coarse-voxel units
        fine = (t_idx * tile + np.arange(n)[:, None] + 0.5) / ratio - 0.5  # (n, 3)
        c0 = np.floor(fine.min(axis=0)).astype(np.int64)
        m = int(np.ceil(n / ratio)) + 2
        grid = np.stack(np.meshgrid(*[np.arange(m) + c0[a] for a in range(3)], indexing="ij"), -1).reshape(-1, 3)
        gk = pack_keys(grid)
        pos = np.clip(np.searchsorted(keys, gk), 0, len(keys) - 1)
        found = keys[pos] == gk
        if not found.any():
            return
        cvol = np.where(found, values[pos], np.nan).reshape(m, m, m)
        rel = fine - c0  # (n, 3) coordinates in the coarse block
        i0 = np.clip(np.floor(rel).astype(int), 0, m - 2)
        w = rel - i0
        acc = np.zeros((n, n, n))
        ok = np.ones((n, n, n), bool)
        for dx in (0, 1):
            wx = (w[:, 0] if dx else 1 - w[:, 0])[:, None, None]
            for dy in (0, 1):
                wy = (w[:, 1] if dy else 1 - w[:, 1])[None, :, None]
                for dz in (0, 1):
                    wz = (w[:, 2] if dz else 1 - w[:, 2])[None, None, :]
                    c = cvol[np.ix_(i0[:, 0] + dx, i0[:, 1] + dy, i0[:, 2] + dz)]
                    ok &= np.isfinite(c)
                    acc += wx * wy * wz * np.nan_to_num(c)
        vol[ok] = np.clip(acc[ok], -self.truncation_m, self.truncation_m)
        seen |= ok


def weld_vertices(vertices: np.ndarray, triangles: np.ndarray, tolerance_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge duplicate vertices (e.g. on tile borders) and drop unused ones and degenerate triangles."""
    q = np.round(vertices / tolerance_m).astype(np.int64)
    _, first, inv = np.unique(q, axis=0, return_index=True, return_inverse=True)
    tris = inv.reshape(-1)[triangles]
    ok = (tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])
    tris = tris[ok]
    used, remap = np.unique(tris, return_inverse=True)
    return vertices[first][used], remap.reshape(-1, 3)
