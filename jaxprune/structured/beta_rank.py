"""Activation-based filter scores over calibration images: Beta-Rank and HRank.

**Beta-Rank** (Homayounfar et al. 2023, "Beta-Rank: A Robust Convolutional Filter Pruning Method
for Imbalanced Medical Image Analysis") scores a filter by its weights *and* by how it changes the
spread of the data it sees. For a producer kernel ``W`` with output channel ``k``, output position
``p`` and calibration images ``n``:

- ``σ_in(p)``: the standard deviation of the filter's receptive field at ``p`` (all its inputs,
  with the convolution's padding), over the images and the field's entries;
- ``σ_out(p, k)``: the standard deviation of the convolution's output (before BatchNorm) over
  the images;
- ``β(k) = mean|W_k| · mean_p r(p, k)`` with ``r = σ_in / σ_out`` (``ratio="paper"``, the
  paper's ratio of input to output spread) or ``r = σ_out / σ_in`` (``ratio="reference"``, what
  the authors' reference code computes: it accumulates ``|W_k|·σ_out/σ_in`` over positions).

``slicing="reference"`` reproduces the reference code's input slice instead of the receptive
field: its ``std_filters`` indexes the NCHW input ``inp[:, i·s : i·s + k_h, j·s : j·s + k_w, :]``
for output position ``(i, j)``, i.e. **channels** ``i·s …`` and **rows** ``j·s …``, every
column, the input unpadded (an empty channel slice gives NaN, skipped); and it reads **one
calibration batch** (``--limit 1``): with this slicing only the first ``batch_size`` images are
used. Convolutions only (a linear producer is refused).

Positions where either deviation is zero (an all-zero border patch of MNIST, a dead filter) add
nothing, as the reference skips its NaNs; a filter whose output never varies therefore scores 0
and goes first. Dense layers are convolutions with one position whose receptive field is the
whole input. The reference rescales each layer's scores to [0, 1]; ranks within a layer do not
change, and groups with several producers are combined like the L1 scores
(:func:`jaxprune.structured.filters.combine_producers`).

**HRank** (Lin et al. 2020) scores a channel by the average rank of its feature maps (after the
nonlinearity, ``H×W`` matrices) over the images; high-rank maps carry more information.

Statistics are accumulated batch by batch in float32 with Chan's pairwise merge of
(count, mean, M2), so no variance is taken as a difference of large sums.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxprune.core.paths import flat_leaves
from jaxprune.models.vision import ChannelGroup, VisionModel
from jaxprune.structured.filters import combine_producers

__all__ = ["beta_rank_scores", "hrank_scores", "merge_moments", "reference_sigma_in"]

Ratio = Literal["paper", "reference"]
Slicing = Literal["receptive_field", "reference"]


def _tap(kernel_path: str) -> str:
    return kernel_path[: -len("/kernel")]


def merge_moments(a, b):
    """Chan's merge of two ``(count, mean, M2)`` triples (element-wise)."""
    n_a, mean_a, m2_a = a
    n_b, mean_b, m2_b = b
    n = n_a + n_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / n)
    return n, mean, m2_a + m2_b + delta * delta * (n_a * n_b / n)


def _moments(x: jax.Array, axes: tuple[int, ...]):
    x = x.astype(jnp.float32)
    count = jnp.float32(np.prod([x.shape[a] for a in axes]))
    mean = jnp.mean(x, axis=axes)
    return count, mean, jnp.sum(jnp.square(x - jnp.expand_dims(mean, axes)), axis=axes)


def _batches(images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    if len(images) == 0:
        raise ValueError("calibration needs at least one image")
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size]


def _selected(model: VisionModel, include: str | None) -> list[ChannelGroup]:
    groups = list(model.channel_groups())
    if include is None:
        return groups
    chosen = [g for g in groups if re.fullmatch(include, g.name)]
    if not chosen:
        raise ValueError(f"group pattern {include!r} matches none of {[g.name for g in groups]}")
    return chosen


@functools.partial(jax.jit, static_argnums=(0, 4))
def _spread_step(model, params, stats, images, producers):
    _, taps = model.capture(params, stats, images)
    out = {}
    for path in producers:
        patches, y = taps[f"{_tap(path)}:patches"], taps[f"{_tap(path)}:out"]
        out[path] = (_moments(patches, (0, 3)), _moments(y, (0,)))
    return out


def beta_rank_scores(
    model: VisionModel,
    params: dict,
    stats: dict,
    images: np.ndarray,
    *,
    ratio: Ratio = "paper",
    batch_size: int = 256,
    include: str | None = None,
    progress: bool = False,
    slicing: Slicing = "receptive_field",
) -> dict[str, np.ndarray]:
    """``{group: β per channel}`` from calibration ``images`` (see the module docstring).

    Args:
      model, params, stats: the trained model.
      images: ``(n, h, w, c)`` float images, as the model is fed.
      ratio: ``"paper"`` (σ_in/σ_out) or ``"reference"`` (σ_out/σ_in).
      batch_size: images per compiled pass (the last batch may be smaller).
      include: regex of the group names to score (default all).
      progress: show a progress bar.
      slicing: ``"receptive_field"`` (σ_in over each output's padded field, every image) or
        ``"reference"`` (the reference code's slice, its first batch only).

    Raises:
      ValueError: an unknown ``ratio`` or ``slicing``, no images, a pattern matching no group,
        or reference slicing of a linear layer.
    """
    if ratio not in ("paper", "reference"):
        raise ValueError(
            f"ratio must be 'paper' (σ_in/σ_out) or 'reference' (σ_out/σ_in), got {ratio!r}"
        )
    if slicing not in ("receptive_field", "reference"):
        raise ValueError(f"slicing must be 'receptive_field' or 'reference', got {slicing!r}")
    groups = _selected(model, include)
    producers = tuple(dict.fromkeys(p for g in groups for p in g.producers))
    if slicing == "reference":
        return _reference_scores(model, params, stats, images[:batch_size], groups, ratio)
    total = None
    for batch in tqdm(list(_batches(images, batch_size)), desc="beta-rank", disable=not progress):
        step = _spread_step(model, params, stats, jnp.asarray(batch), producers)
        total = (
            step
            if total is None
            else jax.tree.map(
                merge_moments, total, step, is_leaf=lambda x: isinstance(x, tuple) and len(x) == 3
            )
        )
    kernels = flat_leaves(params)
    per_path = {p: _beta(kernels[p], *total[p], ratio) for p in producers}
    return {g.name: combine_producers([per_path[p] for p in g.producers]) for g in groups}


def _beta(kernel, moments_in, moments_out, ratio: Ratio) -> np.ndarray:
    n_in, _, m2_in = (np.asarray(x, np.float64) for x in moments_in)
    n_out, _, m2_out = (np.asarray(x, np.float64) for x in moments_out)
    sigma_in = np.sqrt(np.maximum(m2_in / n_in, 0.0))[..., None]  # (h, w, 1)
    sigma_out = np.sqrt(np.maximum(m2_out / n_out, 0.0))  # (h, w, channels)
    valid = (sigma_in > 0) & (sigma_out > 0)
    top, bottom = (sigma_in, sigma_out) if ratio == "paper" else (sigma_out, sigma_in)
    r = np.where(valid, top / np.where(valid, bottom, 1.0), 0.0)
    mean_ratio = r.reshape(-1, r.shape[-1]).mean(axis=0)
    kernel = np.abs(np.asarray(kernel, np.float64))
    return (kernel.reshape(-1, kernel.shape[-1]).mean(axis=0) * mean_ratio).astype(np.float32)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _inputs_outputs(model, params, stats, images, producers):
    _, taps = model.capture(params, stats, images)
    return {p: (taps[f"{_tap(p)}:in"], taps[f"{_tap(p)}:out"]) for p in producers}


def reference_sigma_in(x: np.ndarray, out_hw: tuple[int, int], kernel_hw: tuple[int, int]):
    """``(H_out, W_out)`` σ_in of the reference's slice of the NHWC input ``x``: channels
    ``i·s … i·s + k_h``, rows ``j·s … j·s + k_w``, every column (``s`` = the width ratio, as the
    reference computes it); NaN where the channel slice is empty."""
    x = np.asarray(x, np.float64)
    (out_h, out_w), (k_h, k_w) = out_hw, kernel_hw
    stride = x.shape[2] // out_w
    sigma = np.full((out_h, out_w), np.nan)
    for i in range(out_h):
        channels = x[..., i * stride : i * stride + k_h]
        if channels.shape[-1] == 0:
            continue
        for j in range(out_w):
            block = channels[:, j * stride : j * stride + k_w]
            if block.size:
                sigma[i, j] = block.std()
    return sigma


def _reference_scores(model, params, stats, images, groups, ratio: Ratio) -> dict[str, np.ndarray]:
    producers = tuple(dict.fromkeys(p for g in groups for p in g.producers))
    kernels = flat_leaves(params)
    flat = [p for p in producers if np.ndim(kernels[p]) != 4]
    if flat:
        raise ValueError(f"reference slicing is defined for convolutions, not {flat}")
    taps = _inputs_outputs(model, params, stats, jnp.asarray(images), producers)
    per_path = {}
    for path in producers:
        x, y = (np.asarray(t, np.float64) for t in taps[path])
        kernel = np.asarray(kernels[path], np.float64)
        sigma_in = reference_sigma_in(x, y.shape[1:3], kernel.shape[:2])[..., None]
        sigma_out = y.std(axis=0)  # (h, w, channels)
        valid = np.isfinite(sigma_in) & (sigma_in > 0) & (sigma_out > 0)
        top, bottom = (sigma_in, sigma_out) if ratio == "paper" else (sigma_out, sigma_in)
        r = np.where(valid, top / np.where(valid, bottom, 1.0), 0.0)
        mean_ratio = r.reshape(-1, r.shape[-1]).mean(axis=0)
        weight = np.abs(kernel).reshape(-1, kernel.shape[-1]).mean(axis=0)
        per_path[path] = (weight * mean_ratio).astype(np.float32)
    return {g.name: combine_producers([per_path[p] for p in g.producers]) for g in groups}


@functools.partial(jax.jit, static_argnums=(0, 4))
def _rank_step(model, params, stats, images, activations):
    _, taps = model.capture(params, stats, images)
    out = {}
    for name in activations:
        maps = jnp.moveaxis(taps[name].astype(jnp.float32), -1, 1)  # (n, c, h, w)
        out[name] = jnp.sum(jnp.linalg.matrix_rank(maps), axis=0).astype(jnp.float32)
    return out


def hrank_scores(
    model: VisionModel,
    params: dict,
    stats: dict,
    images: np.ndarray,
    *,
    batch_size: int = 256,
    include: str | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """``{group: mean feature-map rank per channel}`` over calibration ``images`` (HRank)."""
    groups = _selected(model, include)
    activations = tuple(dict.fromkeys(g.activation for g in groups))
    sums = None
    for batch in tqdm(list(_batches(images, batch_size)), desc="hrank", disable=not progress):
        step = _rank_step(model, params, stats, jnp.asarray(batch), activations)
        sums = step if sums is None else jax.tree.map(jnp.add, sums, step)
    return {g.name: np.asarray(sums[g.activation]) / len(images) for g in groups}
