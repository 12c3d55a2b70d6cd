"""Learned LiDAR ray drop: which rays that hit the reconstructed surface return nothing.

Two parts, both fitted on the training sweeps:

- a field on the surface: every mesh vertex keeps the drop rate of the k training rays that hit
  the mesh closest to it, for k in ``DROP_NEIGHBOURS`` (sharp near window edges with small k,
  steady with large k); a hit reads it by barycentric interpolation (no search at render time);
- a small MLP that turns those rates and the ray's own geometry (incidence, range, depth edges in
  the rendered range image) into a drop probability.

Training features are cross-fitted: the rates for the rays of one fold of frames come from the
other folds only, as they do for a new view; the rates stored in the scene use every frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.spatial import cKDTree

from neurodrive.lidar.pattern import RayPattern, from_image, to_image
from neurodrive.lidar.sensor import LidarSpec
from neurodrive.spatial import near_reference, one_per_cell

DROP_NEIGHBOURS = (4, 16, 64)  # training rays behind each vertex's drop rates
# a vertex with no training ray in its 2 m cell or the 26 around it (none within 2 m) reads its rates
# from one ray per such cell: a k-d tree query from far outside the rays is slow
DROP_EVIDENCE_CELL_M = 2.0
NUM_FEATURES = len(DROP_NEIGHBOURS) + 6
_JUMP_MISSING_M = 100.0  # range jump counted towards a neighbour ray that hits nothing
_MAX_RELATIVE_JUMP = 10.0


def range_image_edges(t_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth-edge cues of a (B, W) range image of the mesh (inf where a ray hits nothing):
    the largest range jump to the four neighbour rays relative to the range (capped), and how
    many of the four hit nothing. Azimuth wraps around; the first and last beams repeat."""
    t = np.asarray(t_m, np.float32)
    padded = np.concatenate([t[:1], t, t[-1:]])
    jump = np.zeros(t.shape, np.float32)
    missing = np.zeros(t.shape, np.float32)
    with np.errstate(invalid="ignore"):
        for nb in (np.roll(t, 1, axis=1), np.roll(t, -1, axis=1), padded[:-2], padded[2:]):
            finite = np.isfinite(nb)
            missing += ~finite
            np.maximum(jump, np.where(finite, np.abs(nb - t), _JUMP_MISSING_M), out=jump)
    jump /= np.maximum(np.where(np.isfinite(t), t, 1.0), 1.0)
    return np.minimum(np.nan_to_num(jump, nan=0.0), _MAX_RELATIVE_JUMP), missing


def ray_edges(pattern: RayPattern, t_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`range_image_edges` of per-ray mesh ranges ``t_m`` (N,) (inf where a ray hits
    nothing), read back per ray: neighbours are those of the pattern's range image."""
    edge, missing = range_image_edges(to_image(pattern, t_m, np.inf))
    return from_image(pattern, edge), from_image(pattern, missing)


@dataclass(frozen=True)
class HitRays:
    """The rays of one sweep that hit the mesh within the LiDAR's range, with what the ray-drop model
    reads of each: one recipe for fitting (``reconstruct/lidar_fit.py``) and rendering
    (``render/rendering.py``), so the two cannot drift apart."""

    index: np.ndarray  # (n,) rays of the pattern
    range_m: np.ndarray  # (n,) distance to the hit
    cos_incidence: np.ndarray  # (n,) |cos| of the angle between the ray and the surface normal
    relative_range: np.ndarray  # (n,) range / the LiDAR's maximum range
    edge: np.ndarray  # (n,) largest relative range jump to a neighbour ray (range_image_edges)
    missing: np.ndarray  # (n,) neighbour rays that hit nothing

    @staticmethod
    def of_sweep(lidar: LidarSpec, hit: np.ndarray, t_m: np.ndarray, normals: np.ndarray, dirs: np.ndarray) -> HitRays:
        """From a cast of every ray of ``lidar``'s pattern: ``hit`` (N,), ``t_m`` (N,), ``normals``
        (N, 3) of the surfaces hit and the ray directions ``dirs`` (N, 3), one frame."""
        in_range = hit & (t_m >= lidar.min_range_m) & (t_m <= lidar.max_range_m)
        edge, missing = ray_edges(lidar.pattern, np.where(in_range, t_m, np.inf))
        idx = np.flatnonzero(in_range)
        cos = np.abs(np.einsum("ij,ij->i", np.take(normals, idx, axis=0), np.take(dirs, idx, axis=0)))
        return HitRays(idx, t_m[idx], cos, t_m[idx] / lidar.max_range_m, edge[idx], missing[idx])

    def features(self, rates: np.ndarray) -> np.ndarray:
        """The MLP inputs of these rays given their vertex drop rates (n, K)."""
        return ray_drop_features(rates, self.cos_incidence, self.relative_range, self.edge, self.missing)


def ray_drop_features(
    rates: np.ndarray, cos_incidence: np.ndarray, relative_range: np.ndarray, edge: np.ndarray, missing: np.ndarray
) -> np.ndarray:
    """(n, NUM_FEATURES) float32 MLP inputs of n hit rays: vertex drop rates (n, K) as logits,
    incidence, range / max range, depth-edge jump and missing neighbours."""
    q = np.clip(rates, 1e-3, 1 - 1e-3)
    cos = np.asarray(cos_incidence, np.float32)
    rel = np.asarray(relative_range, np.float32)
    return np.column_stack(
        [
            np.log(q / (1 - q)),
            cos,
            np.clip((0.1 - cos) / 0.1, 0, 1),  # near-grazing
            rel,
            np.clip((rel - 0.8) / 0.2, 0, 1),  # weak echoes near the maximum range
            np.log1p(10 * edge),
            missing,
        ]
    ).astype(np.float32)


@dataclass(frozen=True)
class RayDropModel:
    """P(no return | hit) = sigmoid(MLP((features - mean) / scale)), ReLU hidden layers."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    weights: tuple[np.ndarray, ...]  # (D, H), (H, H), ..., (H, 1)
    biases: tuple[np.ndarray, ...]

    @cached_property
    def _layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The layers with the input standardisation folded into the first one."""
        w0, b0 = self.weights[0] / self.scale[:, None], self.biases[0] - (self.mean / self.scale) @ self.weights[0]
        return [(w0.astype(np.float32), b0.astype(np.float32))] + list(zip(self.weights[1:], self.biases[1:]))

    def probability(self, features: np.ndarray) -> np.ndarray:
        h = features
        for k, (w, b) in enumerate(self._layers):
            h = h @ w
            h += b
            if k < len(self._layers) - 1:
                np.maximum(h, 0, out=h)
        return 1 / (1 + np.exp(-np.clip(h[:, 0], -30, 30)))

    def tensors(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}.mean": self.mean, f"{prefix}.scale": self.scale}
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            out |= {f"{prefix}.w{k}": w, f"{prefix}.b{k}": b}
        return out

    @staticmethod
    def from_tensors(t: dict[str, np.ndarray], prefix: str) -> RayDropModel | None:
        """The model stored under ``prefix`` (None if absent); KeyError / ValueError if malformed."""
        if f"{prefix}.mean" not in t:
            return None
        weights: list[np.ndarray] = []
        biases: list[np.ndarray] = []
        while f"{prefix}.w{len(weights)}" in t:
            weights.append(t[f"{prefix}.w{len(weights)}"].astype(np.float32))
            biases.append(t[f"{prefix}.b{len(biases)}"].astype(np.float32))
        if any(w.ndim != 2 for w in weights):
            raise ValueError(f"'{prefix}' weights must be matrices")
        dims = [t[f"{prefix}.mean"].shape[0]] + [w.shape[1] for w in weights]
        if (
            not weights
            or any(w.shape != (i, o) for w, i, o in zip(weights, dims[:-1], dims[1:]))
            or dims[-1] != 1
            or dims[0] != NUM_FEATURES
            or any(b.shape != (o,) for b, o in zip(biases, dims[1:]))
        ):
            raise ValueError(f"'{prefix}' layers do not chain from {NUM_FEATURES} inputs to 1 output")
        return RayDropModel(
            t[f"{prefix}.mean"].astype(np.float32),
            t[f"{prefix}.scale"].astype(np.float32),
            tuple(weights),
            tuple(biases),
        )


def vertex_drop_rates(
    vertices: np.ndarray,
    hit_points: np.ndarray,
    dropped: np.ndarray,
    prior: float,
    query: np.ndarray | None = None,
    chunk: int = 100_000,
) -> np.ndarray:
    """(V, K) drop rate of the k training rays that hit closest to each vertex, for k in
    ``DROP_NEIGHBOURS``, shrunk towards ``prior`` with the weight of two rays. ``query`` limits
    the work to those vertex indices (the other rows keep the prior). A vertex with no training ray
    in its ``DROP_EVIDENCE_CELL_M`` cell or the 26 around it takes the rates of the nearest of one
    ray per such cell (a k-d tree query from far outside the rays is slow; at that distance the
    coarser set finds the same neighbourhood)."""
    rates = np.full((len(vertices), len(DROP_NEIGHBOURS)), prior, np.float32)
    rows = np.arange(len(vertices)) if query is None else query
    if len(hit_points) == 0 or len(rows) == 0:
        return rates
    near = near_reference(vertices[rows], hit_points, DROP_EVIDENCE_CELL_M)
    tree = cKDTree(hit_points)
    rates[rows[near]] = _nearest_ray_rates(tree, dropped, vertices[rows[near]], prior, chunk)
    far = rows[~near]
    if len(far):
        coarse = hit_points[one_per_cell(hit_points, DROP_EVIDENCE_CELL_M)]
        coarse_rates = _nearest_ray_rates(tree, dropped, coarse, prior, chunk)
        _, nearest = cKDTree(coarse).query(vertices[far], workers=-1)
        rates[far] = coarse_rates[nearest]
    return rates


def _nearest_ray_rates(tree: cKDTree, dropped: np.ndarray, points: np.ndarray, prior: float, chunk: int) -> np.ndarray:
    """(n, K) shrunk drop rates of the k rays (``tree`` of their hit points) nearest each point."""
    out = np.empty((len(points), len(DROP_NEIGHBOURS)), np.float32)
    k_max = min(max(DROP_NEIGHBOURS), tree.n)
    for start in range(0, len(points), chunk):  # in chunks: the neighbour lists stay small
        part = slice(start, start + chunk)
        _, nn = tree.query(points[part], k=k_max, workers=-1)
        counts = np.cumsum(dropped[nn.reshape(-1, k_max)], axis=1, dtype=np.float32)  # drops among the nearest 1..k_max
        for j, k in enumerate(DROP_NEIGHBOURS):
            k = min(k, k_max)
            out[part, j] = (counts[:, k - 1] + 2 * prior) / (k + 2)
    return out


def barycentric(corners: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(n, K) values at hits from their triangles' corner values (n, 3 K), corner by corner, and
    barycentric uv (n, 2). Column by column: numpy is slow on axes of length 3."""
    k_dim = corners.shape[1] // 3
    u, v = uv[:, 0], uv[:, 1]
    w0 = 1 - u - v
    out = np.empty((len(corners), k_dim), np.float32)
    for k in range(k_dim):
        column = corners[:, k] * w0
        column += corners[:, k_dim + k] * u
        column += corners[:, 2 * k_dim + k] * v
        out[:, k] = column
    return out


def interpolate_vertices(values: np.ndarray, triangles: np.ndarray, triangle: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Per-vertex ``values`` (V, K) at hits (triangle (n,), barycentric uv (n, 2))."""
    return barycentric(values[triangles[triangle]].reshape(len(triangle), -1), uv)


@dataclass
class DropSamples:
    """The training rays that hit the meshes (n of them)."""

    mesh: np.ndarray  # (n,) int mesh index
    triangle: np.ndarray  # (n,) int
    uv: np.ndarray  # (n, 2) barycentric coordinates of the hit
    point: np.ndarray  # (n, 3) hit point in the mesh's own frame (m)
    frame: np.ndarray  # (n,) position of the ray's frame among the training frames
    dropped: np.ndarray  # (n,) bool: no return
    cos_incidence: np.ndarray  # (n,)
    relative_range: np.ndarray  # (n,) hit distance / max range
    edge: np.ndarray  # (n,) from range_image_edges
    missing: np.ndarray  # (n,)
    sensor: np.ndarray | None = None  # (n,) int index of the ray's LiDAR in the rig; None: all one LiDAR


def fit_ray_drop(
    meshes: list[tuple[np.ndarray, np.ndarray]],
    s: DropSamples,
    folds: int = 4,
    hidden_units: int = 8,
    steps: int = 3000,
    batch_size: int = 8192,
    seed: int = 0,
    num_sensors: int = 1,
) -> tuple[list[np.ndarray], list[RayDropModel | None]]:
    """Per-vertex drop rates of every mesh (from all rays of every LiDAR) and one MLP per LiDAR
    (``s.sensor``; None for a LiDAR with too few rays, or with all or none of them dropped)."""
    prior = float(s.dropped.mean()) if len(s.dropped) else 0.0
    groups = [np.flatnonzero(s.mesh == m) for m in range(len(meshes))]
    rates = [vertex_drop_rates(v, s.point[g], s.dropped[g], prior) for (v, _), g in zip(meshes, groups)]
    sensor = s.sensor if s.sensor is not None else np.zeros(len(s.dropped), np.int64)
    trainable = [
        np.sum(sensor == k) >= 1000 and s.dropped[sensor == k].any() and not s.dropped[sensor == k].all()
        for k in range(num_sensors)
    ]
    if not any(trainable):
        return rates, [None] * num_sensors
    cross = np.empty((len(s.dropped), len(DROP_NEIGHBOURS)), np.float32)
    # Cross-fitted rates: each ray's from rays of other frames (as rendering sees a new sweep). With a
    # single training sweep there are no other frames (every rate would be the prior, a constant the
    # MLP cannot learn from but rendering then varies): rays are interleaved into folds instead.
    by_frame = len(np.unique(s.frame)) >= 2
    for (v, t), g in zip(meshes, groups):
        fold = s.frame[g] % folds if by_frame else np.arange(len(g)) % folds
        for i in range(folds):
            held, rest = g[fold == i], g[fold != i]
            if len(held) == 0:
                continue
            corners = np.unique(t[s.triangle[held]])
            r = vertex_drop_rates(v, s.point[rest], s.dropped[rest], prior, query=corners)
            cross[held] = interpolate_vertices(r, t, s.triangle[held], s.uv[held])
    x = ray_drop_features(cross, s.cos_incidence, s.relative_range, s.edge, s.missing)
    models: list[RayDropModel | None] = []
    for k, ok in enumerate(trainable):  # the rates are shared; each LiDAR learns its own response to them
        rows = sensor == k
        models.append(
            train_drop_mlp(x[rows], s.dropped[rows], hidden_units, steps, batch_size, seed + k) if ok else None
        )
    return rates, models


MIN_FEATURE_STD = 1e-2  # features varying less than this over the training rays are frozen out
FROZEN_FEATURE_SCALE = 1e6  # the normalising scale of a frozen feature


def train_drop_mlp(
    x: np.ndarray, dropped: np.ndarray, hidden_units: int, steps: int, batch_size: int, seed: int
) -> RayDropModel:
    """Binary cross-entropy on random batches (Adam), seeded: same rays, same model."""
    import torch

    mean, std = x.mean(axis=0), x.std(axis=0)
    # a feature (nearly) constant over the training rays taught the MLP nothing: it is frozen out (its
    # normalised input stays 0), so a different value when rendering cannot push the MLP off its range
    scale = np.where(std >= MIN_FEATURE_STD, std, FROZEN_FEATURE_SCALE)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xs = torch.from_numpy((x - mean) / scale)
    ys = torch.from_numpy(dropped.astype(np.float32))
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden_units),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden_units, hidden_units),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden_units, 1),
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = torch.randint(0, len(ys), (batch_size,), generator=gen)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xs[batch])[:, 0], ys[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    return RayDropModel(
        mean.astype(np.float32),
        scale.astype(np.float32),
        tuple(m.weight.detach().numpy().T.copy() for m in layers),
        tuple(m.bias.detach().numpy().copy() for m in layers),
    )
