"""Fitting the surface appearance: texel colours, per-image (or per-camera) exposure and white
balance, a tiny view-dependent MLP, and the sky environment map.

1. Closed form: alternate per-texel mean colours (exposure removed) and one affine colour transform
   per exposure group (an image, or a camera) fitted by least squares (the first is the reference).
2. Gradient descent (PyTorch, CPU): extra texel feature channels (sparse updates), the
   MLP and the exposures, trained jointly on random pixel batches with resumable checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from neurodrive.errors import DataError
from neurodrive.io_utils import atomic_write_bytes, atomic_write_json
from neurodrive.reconstruct.config import AppearanceConfig
from neurodrive.scene.decoder import AppearanceDecoder
from neurodrive.scene.sky import SkyModel


@dataclass
class PixelSamples:
    """Training pixels whose rays hit the reconstructed surface."""

    texel: np.ndarray  # (N,) int64 global texel index
    dirs: np.ndarray  # (N, 3) float32 world ray direction
    camera: np.ndarray  # (N,) int32 exposure group: the camera, or its image (per-image exposure)
    rgb: np.ndarray  # (N, 3) uint8 observed colour


@dataclass
class SkySamples:
    dirs: np.ndarray  # (M, 3) float32
    camera: np.ndarray  # (M,) int32 exposure group
    rgb: np.ndarray  # (M, 3) uint8


def apply_inverse_exposure(rgb: np.ndarray, camera: np.ndarray, exposures: np.ndarray) -> np.ndarray:
    out = np.empty_like(rgb)
    for c in range(len(exposures)):
        sel = camera == c
        a, b = exposures[c, :, :3], exposures[c, :, 3]
        out[sel] = (rgb[sel] - b.astype(rgb.dtype)) @ np.linalg.inv(a).T.astype(rgb.dtype)
    return out


def texel_means(texel: np.ndarray, values: np.ndarray, num_texels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-texel mean of ``values`` (N, 3) and the sample count per texel."""
    count = np.bincount(texel, minlength=num_texels).astype(np.float64)
    mean = np.stack([np.bincount(texel, values[:, k], minlength=num_texels) for k in range(values.shape[1])], 1)
    return mean / np.maximum(count, 1)[:, None], count


def fit_colours_and_exposure(
    samples: PixelSamples, num_texels: int, num_cameras: int, rounds: int, rng: np.random.Generator
):
    """Closed-form alternation; returns (texel colours (T, 3), sample counts (T,), exposures (C, 3, 4))."""
    rgb = samples.rgb.astype(np.float32) / np.float32(255.0)
    exposures = np.tile(np.eye(3, 4), (num_cameras, 1, 1))
    colours, count = texel_means(samples.texel, rgb, num_texels)
    for _ in range(rounds):
        for c in range(1, num_cameras):
            idx = np.nonzero(samples.camera == c)[0]
            if len(idx) < 100:
                continue
            idx = rng.choice(idx, size=min(len(idx), 400_000), replace=False)
            x = np.concatenate([colours[samples.texel[idx]], np.ones((len(idx), 1))], axis=1)
            sol, *_ = np.linalg.lstsq(x, rgb[idx], rcond=None)
            exposures[c] = sol.T
        colours, count = texel_means(samples.texel, apply_inverse_exposure(rgb, samples.camera, exposures), num_texels)
    return np.clip(colours, 0.0, 1.0), count, exposures


def sky_cells(dirs: np.ndarray, bins_az: int, bins_el: int, min_el_rad: float, max_el_rad: float) -> np.ndarray:
    """Flat index (row * bins_az + column) of the environment-map bin of each unit direction (n, 3)."""
    az = np.arctan2(dirs[:, 1], dirs[:, 0]) % (2 * np.pi)
    el = np.arcsin(np.clip(dirs[:, 2], -1, 1))
    ix = np.clip((az / (2 * np.pi) * bins_az).astype(int), 0, bins_az - 1)
    iy = np.clip(((el - min_el_rad) / (max_el_rad - min_el_rad) * bins_el).astype(int), 0, bins_el - 1)
    return iy * bins_az + ix


def fit_sky(
    sky: SkySamples,
    exposures: np.ndarray,
    bins_az: int = 360,
    bins_el: int = 60,
    min_el_rad: float = np.deg2rad(-10.0),
    max_el_rad: float = np.deg2rad(90.0),
) -> SkyModel:
    """Environment map: mean exposure-corrected colour per direction bin, holes filled from the nearest bin."""
    image = np.zeros((bins_el, bins_az, 3))
    if len(sky.dirs):
        rgb = apply_inverse_exposure(sky.rgb.astype(np.float64) / 255.0, sky.camera, exposures)
        cells = sky_cells(sky.dirs, bins_az, bins_el, min_el_rad, max_el_rad)
        mean, count = texel_means(cells, rgb, bins_el * bins_az)
        image = mean.reshape(bins_el, bins_az, 3)
        empty = count.reshape(bins_el, bins_az) == 0
        if empty.all():
            image[:] = 0.6
        elif empty.any():
            _, (ry, rx) = ndimage.distance_transform_edt(empty, return_indices=True)
            image = image[ry, rx]
        image = ndimage.gaussian_filter(image, sigma=(0.7, 0.7, 0))
    else:
        image[:] = 0.6
    return SkyModel(np.clip(image, 0, 1).astype(np.float32), float(min_el_rad), float(max_el_rad))


def train_decoder(
    samples: PixelSamples,
    colours: np.ndarray,
    exposures: np.ndarray,
    camera_names: list[str],
    cfg: AppearanceConfig,
    seed: int,
    checkpoint_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, AppearanceDecoder, list[float]]:
    """Joint gradient descent (``cfg``: features, MLP width, residual scale, steps, batch, learning
    rate, checkpoint interval); resumes from the newest checkpoint in ``checkpoint_dir``.

    Returns (texel features (T, D), decoder, loss per step run in this call).
    """
    import torch

    torch.manual_seed(seed)
    num_texels = len(colours)
    extra = cfg.num_features - 3
    # colours come from the closed-form fit and stay fixed; the extra channels are learned
    base_colour = torch.from_numpy(colours.astype(np.float32))
    extras, mlp, exp_a, exp_b = _decoder_modules(num_texels, extra, cfg.num_features, cfg.hidden_units, exposures)
    opt_sparse = torch.optim.SparseAdam(list(extras.parameters()), lr=cfg.learning_rate)
    opt_dense = torch.optim.Adam(list(mlp.parameters()) + [exp_a, exp_b], lr=cfg.learning_rate)

    ckpt = checkpoint_dir / "appearance.safetensors"
    meta = checkpoint_dir / "appearance.json"
    optimizers = {"opt_sparse": opt_sparse, "opt_dense": opt_dense}
    start = 0
    if ckpt.is_file() and meta.is_file():
        start = _load_training_checkpoint(ckpt, meta, extras, mlp, exp_a, exp_b, optimizers)

    def save(step: int) -> None:
        _save_training_checkpoint(ckpt, meta, step, extras, mlp, exp_a, exp_b, optimizers)

    training = _Training(extras, mlp, exp_a, exp_b, opt_sparse, opt_dense, extra)
    losses = _run_steps(samples, base_colour, training, cfg, seed, range(start, cfg.train_steps), save, progress)
    w = {k: v.detach().numpy() for k, v in mlp.state_dict().items()}
    exp = np.concatenate([exp_a.detach().numpy(), exp_b.detach().numpy()[:, :, None]], axis=2)
    decoder = AppearanceDecoder(
        w1=w["0.weight"].T.copy(),
        b1=w["0.bias"],
        w2=w["2.weight"].T.copy(),
        b2=w["2.bias"],
        residual_scale=cfg.residual_scale,
        exposures={name: exp[i] for i, name in enumerate(camera_names)},
    )
    features = np.concatenate([colours.astype(np.float32), extras.weight.detach().numpy()[:, :extra]], axis=1)
    return features, decoder, losses


def _decoder_modules(num_texels: int, extra: int, num_features: int, hidden_units: int, exposures: np.ndarray):
    """The trained parts: extra texel channels (zero), the MLP (near-zero output), exposures (a, b)."""
    import torch

    extras = torch.nn.Embedding(num_texels, max(extra, 1), sparse=True)
    with torch.no_grad():
        extras.weight.zero_()
    mlp = torch.nn.Sequential(
        torch.nn.Linear(num_features + 3, hidden_units), torch.nn.ReLU(), torch.nn.Linear(hidden_units, 3)
    )
    with torch.no_grad():
        out_layer: torch.nn.Linear = mlp[2]  # type: ignore[assignment]
        out_layer.weight.mul_(0.01)
        out_layer.bias.zero_()
    exp_a = torch.nn.Parameter(torch.from_numpy(exposures[:, :, :3].astype(np.float32)).clone())
    exp_b = torch.nn.Parameter(torch.from_numpy(exposures[:, :, 3].astype(np.float32)).clone())
    return extras, mlp, exp_a, exp_b


def _save_training_checkpoint(ckpt: Path, meta: Path, step: int, extras, mlp, exp_a, exp_b, optimizers: dict) -> None:
    """Parameters and optimizer moments (a resumed run continues exactly), then the step reached."""
    import torch
    from safetensors.torch import save as save_safetensors

    state = {"extras": extras.weight.detach(), "exp_a": exp_a.detach(), "exp_b": exp_b.detach()}
    state |= {f"mlp.{k}": v.detach() for k, v in mlp.state_dict().items()}
    scalars: list[str] = []
    for prefix, opt in optimizers.items():
        for idx, entry in opt.state_dict()["state"].items():
            for key, value in entry.items():
                name = f"{prefix}.{idx}.{key}"
                if not torch.is_tensor(value):
                    scalars.append(name)
                    value = torch.tensor(value)
                state[name] = value
    atomic_write_bytes(ckpt, save_safetensors({k: v.contiguous() for k, v in state.items()}))
    atomic_write_json(meta, {"step": step, "python_scalars": scalars})


def _load_training_checkpoint(ckpt: Path, meta: Path, extras, mlp, exp_a, exp_b, optimizers: dict) -> int:
    """Restores parameters and optimizer moments; returns the step to go on from (0 when the
    checkpoint belongs to a different texel layout). A corrupt checkpoint is one DataError."""
    import json

    import torch
    from safetensors.torch import load_file

    hint = f"corrupt checkpoint: delete {ckpt.parent} (or run `neurodrive reconstruct --restart`) to start over"
    try:
        info = json.loads(meta.read_text())
        step = info["step"]
        scalars = set(info.get("python_scalars", []))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(meta, "step", f"{hint} ({e})") from e
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise DataError(meta, "step", f"{hint} (expected a whole number of steps >= 0, got {step!r})")
    if ckpt.is_dir():
        raise DataError(ckpt, None, f"{hint} (is a folder, expected a safetensors file)")
    try:
        state = load_file(str(ckpt))
    except Exception as e:  # safetensors raises its own error types on corrupt headers
        raise DataError(ckpt, None, f"{hint} ({e})") from e
    if "extras" not in state or state["extras"].shape != extras.weight.shape:
        return 0
    try:
        with torch.no_grad():
            extras.weight.copy_(state["extras"])
            exp_a.copy_(state["exp_a"])
            exp_b.copy_(state["exp_b"])
            mlp.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("mlp.")})
        for prefix, opt in optimizers.items():
            entries: dict[int, dict] = {}
            for name, value in state.items():
                if name.startswith(prefix + "."):
                    _, idx, key = name.split(".", 2)
                    entries.setdefault(int(idx), {})[key] = value.item() if name in scalars else value
            if entries:
                opt.load_state_dict({"state": entries, "param_groups": opt.state_dict()["param_groups"]})
    except (KeyError, RuntimeError, ValueError) as e:
        raise DataError(ckpt, None, f"{hint} ({e})") from e
    return step


@dataclass
class _Training:
    """What gradient steps update: per-texel extra channels, the MLP, the exposures, their optimisers."""

    extras: Any  # torch.nn.Embedding (texels, extra channels)
    mlp: Any  # torch.nn.Sequential
    exp_a: Any  # (cameras, 3, 3) torch parameter
    exp_b: Any  # (cameras, 3)
    opt_sparse: Any
    opt_dense: Any
    extra: int  # learned channels per texel


def _run_steps(
    samples: PixelSamples,
    base_colour,
    training: _Training,
    cfg: AppearanceConfig,
    seed: int,
    step_range: range,
    save: Callable[[int], None],
    progress: Callable[[int, int], None] | None,
) -> list[float]:
    """The gradient steps of ``step_range``; returns the loss of each."""
    import torch

    extras, mlp, exp_a, exp_b = training.extras, training.mlp, training.exp_a, training.exp_b
    opt_sparse, opt_dense, extra = training.opt_sparse, training.opt_dense, training.extra
    residual_scale, batch_size, checkpoint_every = cfg.residual_scale, cfg.batch_size, cfg.checkpoint_every
    steps = step_range.stop
    texel_t = torch.from_numpy(samples.texel)
    dirs_t = torch.from_numpy(samples.dirs.astype(np.float32))
    cam_t = torch.from_numpy(samples.camera.astype(np.int64))
    rgb_t = torch.from_numpy(samples.rgb)
    losses: list[float] = []
    n = len(samples.texel)
    # bit-reproducible: without this, multi-threaded sparse-gradient sums add in a varying order (one
    # thread would also do, at half the speed)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for step in step_range:
            # the batch depends only on (seed, step): a resumed run sees the same batches
            idx = torch.from_numpy(np.random.default_rng([seed, step]).integers(0, n, batch_size))
            tex = texel_t[idx]
            f = torch.cat([base_colour[tex], extras(tex)[:, :extra]], dim=1)
            d = dirs_t[idx]
            c = cam_t[idx]
            base = f[:, :3] + residual_scale * torch.tanh(mlp(torch.cat([f, d], dim=1)))
            base = base.clamp(0.0, 1.0)
            pred = torch.einsum("nij,nj->ni", exp_a[c], base) + exp_b[c]
            target = rgb_t[idx].float() / 255.0
            loss = torch.nn.functional.mse_loss(pred, target)
            if extra > 0:
                loss = loss + 1e-4 * (f[:, 3:] ** 2).mean()
            opt_sparse.zero_grad()
            opt_dense.zero_grad()
            loss.backward()
            opt_sparse.step()
            opt_dense.step()
            with torch.no_grad():  # the first camera is the exposure reference
                exp_a[0] = torch.eye(3)
                exp_b[0] = 0.0
            losses.append(loss.item())
            if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
                save(step + 1)
            if progress:
                progress(step + 1, steps)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    return losses
