"""BatchNorm-γ channel removal that keeps what the network computed: β's constant folded forward.

A channel whose BatchNorm scale γ is 0 does not output 0: it outputs its shift β everywhere, and
after the ReLU the constant ``relu(β)``. Removing the channel physically drops that constant from
every layer that reads it. :func:`bn_export` first **folds** it into the next layer, then shrinks:

- a convolution reading the channel adds ``b = Σ_{h,w} relu(β)·W[h, w, c, :]`` to its output; the
  BatchNorm after it absorbs ``b`` into its running mean (``μ ← μ − b``); through a residual
  stream, every BatchNorm that reads the stream downstream absorbs it (until a projection
  shortcut starts a new stream);
- the head (after flattening or global pooling, both of which keep a constant constant) adds
  ``Σ relu(β)·W`` to its bias.

**Exactness.** The fold is exact for the head (VGG's flattened head, the ResNet head after
pooling) and for 1×1 convolutions without padding (ResNet projection shortcuts). A 3×3
convolution with zero ("SAME") padding sees the constant through the padding at the border: the
fold is exact at every output position whose 3×3 window lies inside the map, and at the one-pixel
border ring it adds the full window's sum where the masked network had only the in-map taps.
So :func:`bn_export` equals :func:`bn_masked` exactly when the removed channels feed only the
head or 1×1 convolutions, and at interior positions otherwise (tested).

The reference's variant (Zhuang et al.'s code, ``PolarizationPruning``): every γ starts at 0.5
(:func:`set_scales`), is clamped to ``[0, 1]`` after each step (:func:`clamp_scales`), and the
pruned network is fine-tuned (a training loop's job); its pruning zeroes γ and β alike.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprune.core.paths import flat_leaves, set_leaves
from jaxprune.models.vision import VisionModel
from jaxprune.structured.filters import FilterPruneResult, shrink

__all__ = ["bn_consumers", "bn_export", "bn_masked", "clamp_scales", "fold_removed", "set_scales"]

Params = dict


def _stream_readers_after(config, j: int) -> list[str]:
    """The BatchNorms reading block ``j``'s output stream: later blocks' ``bn1`` up to the next
    projecting block (included), or ``final_bn`` when the stream reaches the end."""
    readers = []
    for k in range(j + 1, len(config.mids)):
        readers.append(f"blocks/{k}/bn1")
        if config.projects(k):
            return readers
    return [*readers, "final_bn"]


def bn_consumers(model: VisionModel) -> dict[str, list[tuple[str, list[str]]]]:
    """``{BatchNorm: [(consumer kernel, [sinks])]}``: the kernels that read a BatchNorm's
    (ReLU-ed) output and where their constant lands: a BatchNorm prefix (its running mean) or
    ``"head"`` (the head's bias).

    Raises:
      ValueError: a family without BatchNorm routing (the MLP has no BatchNorm).
    """
    config = model.config
    if config.family == "vgg":
        n = len(config.conv_widths)
        return {
            f"convs/{i}/bn": [
                (f"convs/{i + 1}/conv/kernel", [f"convs/{i + 1}/bn"])
                if i + 1 < n
                else ("head/kernel", ["head"])
            ]
            for i in range(n)
        }
    if config.family == "resnet":
        out = {"final_bn": [("head/kernel", ["head"])]}
        for j in range(len(config.mids)):
            after = _stream_readers_after(config, j)
            out[f"blocks/{j}/bn1"] = [(f"blocks/{j}/conv1/kernel", [f"blocks/{j}/bn2"])]
            if config.projects(j):
                out[f"blocks/{j}/bn1"].append((f"blocks/{j}/shortcut/kernel", after))
            out[f"blocks/{j}/bn2"] = [(f"blocks/{j}/conv2/kernel", after)]
        return out
    raise ValueError(f"{config.family} has no BatchNorm channels to export")


def _removed(model: VisionModel, keep: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{BatchNorm prefix: bool (channels,)}``, True where ``keep`` removes the channel."""
    out = {}
    for group in model.channel_groups():
        channels = np.asarray(keep.get(group.name, np.ones(group.size, bool)), bool)
        for path, _ in group.members:
            if path.endswith("/scale"):
                out[path.rsplit("/", 1)[0]] = ~channels
    return out


def bn_masked(model: VisionModel, params: Params, keep: Mapping[str, np.ndarray]) -> Params:
    """``params`` with γ = 0 on every removed channel of every BatchNorm (β kept): the network
    the γ threshold describes, each removed channel emitting its constant ``relu(β)``."""
    leaves = flat_leaves(params)
    edited = {}
    for bn, removed in _removed(model, keep).items():
        scale = leaves[f"{bn}/scale"]
        edited[f"{bn}/scale"] = jnp.where(jnp.asarray(removed), 0.0, scale).astype(scale.dtype)
    return set_leaves(params, edited)


def fold_removed(
    model: VisionModel, params: Params, stats: Params, keep: Mapping[str, np.ndarray]
) -> tuple[Params, Params]:
    """``(params, stats)`` with every removed channel's ``relu(β)`` folded into its consumers'
    BatchNorm means or the head bias (module docstring); shapes unchanged."""
    leaves, stat_leaves = flat_leaves(params), flat_leaves(stats)
    heads = {"head/bias": jnp.asarray(leaves["head/bias"], jnp.float32)}
    means: dict[str, jax.Array] = {}
    for bn, removed in _removed(model, keep).items():
        if not removed.any():
            continue
        beta = jnp.asarray(leaves[f"{bn}/bias"], jnp.float32)
        constant = jnp.where(jnp.asarray(removed), jax.nn.relu(beta), 0.0)
        for kernel_path, sinks in bn_consumers(model)[bn]:
            kernel = jnp.asarray(leaves[kernel_path], jnp.float32)
            view = [1] * kernel.ndim
            view[-2] = kernel.shape[-2]
            # Every position's full window (exact for the head and 1×1 kernels, see above).
            b = jnp.sum(kernel * constant.reshape(view), axis=tuple(range(kernel.ndim - 1)))
            for sink in sinks:
                if sink == "head":
                    heads["head/bias"] = heads["head/bias"] + b
                else:
                    key = f"{sink}/mean"
                    means[key] = means.get(key, jnp.asarray(stat_leaves[key], jnp.float32)) - b
    new_params = set_leaves(params, {k: v.astype(leaves[k].dtype) for k, v in heads.items()})
    new_stats = set_leaves(stats, {k: v.astype(stat_leaves[k].dtype) for k, v in means.items()})
    return new_params, new_stats


def bn_export(
    model: VisionModel, params: Params, stats: Params, keep: Mapping[str, np.ndarray]
) -> FilterPruneResult:
    """The physically smaller model of ``keep`` with the removed channels' constants folded
    (:func:`fold_removed`), computing what :func:`bn_masked` computes (exactly or at interior
    positions, see the module docstring)."""
    folded, folded_stats = fold_removed(model, params, stats, keep)
    small, new_params, new_stats = shrink(model, folded, folded_stats, keep)
    keep = {k: np.asarray(v, bool) for k, v in keep.items()}
    return FilterPruneResult(small, new_params, new_stats, keep, model.flops(), small.flops())


def _scale_paths(model: VisionModel) -> list[str]:
    return sorted({p for g in model.channel_groups() for p, _ in g.members if p.endswith("/scale")})


def set_scales(model: VisionModel, params: Params, value: float) -> Params:
    """Every BatchNorm γ set to ``value`` (the reference initialises them at 0.5)."""
    leaves = flat_leaves(params)
    return set_leaves(params, {p: jnp.full_like(leaves[p], value) for p in _scale_paths(model)})


def clamp_scales(
    model: VisionModel, low: float = 0.0, high: float = 1.0
) -> optax.GradientTransformation:
    """Makes the last update land every BatchNorm γ in ``[low, high]`` (the reference's
    ``clamp_bn`` after each step); chain it last. Other leaves pass through.

    Raises:
      ValueError: (on update) no ``params`` given.
    """
    paths = _scale_paths(model)

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("clamp_scales needs params: call update(grads, state, params)")
        u, p = flat_leaves(updates), flat_leaves(params)
        clamped = {k: jnp.clip(p[k] + u[k], low, high) - p[k] for k in paths}
        return set_leaves(updates, clamped), state

    return optax.GradientTransformation(init, update)
