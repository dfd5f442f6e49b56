"""Polarization: structured pruning in one training pass, through channel gates driven to 0 or 1.

Every channel group of a vision model (:meth:`~jaxprune.models.vision.VisionModel.channel_groups`)
gets one gate logit per channel, trained jointly with the weights. The forward pass uses the
**binary** gate ``[logit > 0]`` (straight-through: the backward pass is the sigmoid's), multiplied
into every member of the group (the producers' output channels, BatchNorm's scale and bias, the
consumers' input channels), so at any step the gated network *is* a channel-masked network. Two
penalties shape the gates (:func:`gate_penalty`):

- **budget** ``b·(mean gate − d)²`` drives the mean binary gate to the target density ``d``;
- **polarization** ``p·mean min(σ, 1 − σ)`` pushes every gate away from ½, towards 0 or 1.

The BatchNorm-γ regulariser of Zhuang et al. ("Neuron-level Structured Pruning using Polarization
Regularizer", NeurIPS 2020), ``λ·Σ(t·|γ| − |γ − mean γ|)`` over all the network's scaling factors,
is :func:`bn_polarization`; :func:`bn_keep` prunes the channels whose γ fell below a threshold
(export with :func:`jaxprune.structured.bn_export.bn_export`).

After training, :func:`export` turns the gates into keep-masks and shrinks the model physically
(:func:`jaxprune.structured.filters.shrink`): the small model computes exactly what the gated one
computed, so there is no separate fine-tuning stage::

    gated = GatedModel(VisionModel(VGGConfig()))
    params, stats = gated.init(seed=0)                 # {"weights": ..., "gates": ...}
    tx = optax.chain(add_penalty_gradient(lambda p: gate_penalty(p["gates"], 0.5)),
                     gate_optimizer(optax.adam(1e-3), optax.adam(1e-2)))
    run = train(gated, params, stats, tx, data.train, epochs=2)    # jaxprune.training.loop
    result = export(gated, run.params, run.stats)      # FilterPruneResult: smaller model, FLOPs
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprune.core.paths import flat_leaves, set_leaves
from jaxprune.models.vision import VisionModel
from jaxprune.structured.filters import FilterPruneResult, shrink

__all__ = [
    "GatedModel",
    "add_penalty_gradient",
    "binary_gates",
    "bn_keep",
    "bn_polarization",
    "bn_scales",
    "export",
    "gate_keep",
    "gate_penalty",
    "gate_optimizer",
    "gated_params",
    "init_gates",
    "polarization",
]

Params = dict[str, Any]
_STATISTICS = ("mean", "var")


def init_gates(model: VisionModel, logit: float = 3.0) -> dict[str, jax.Array]:
    """``{group: (size,) logits}``, all ``logit`` (3 → σ ≈ 0.95: every channel starts open)."""
    return {g.name: jnp.full((g.size,), logit, jnp.float32) for g in model.channel_groups()}


def binary_gates(logits: jax.Array) -> jax.Array:
    """Straight-through binary gates of one group: forward ``[logit > 0]`` (and always the
    group's largest logit, so no group closes entirely), backward ``d σ(logit)``.

    The forward value is exactly 0.0 or 1.0: the surrogate is added as ``σ − stop_grad(σ)``,
    which is exactly zero, rather than as ``σ + stop_grad(hard − σ)``, which rounds.
    """
    logits = jnp.asarray(logits, jnp.float32)
    hard = ((logits > 0) | (logits == jnp.max(logits))).astype(jnp.float32)
    soft = jax.nn.sigmoid(logits)
    return hard + (soft - jax.lax.stop_gradient(soft))


def gate_keep(gates: Mapping[str, jax.Array]) -> dict[str, np.ndarray]:
    """``{group: bool (size,)}``: the channels the binary gates keep."""
    return {name: np.asarray(binary_gates(g)) > 0.5 for name, g in gates.items()}


def gated_params(model: VisionModel, params: Params, gates: Mapping[str, jax.Array]) -> Params:
    """``params`` with every group member multiplied by its channels' binary gates.

    Gates at 0/1 give exactly :func:`jaxprune.structured.filters.masked_params` of those keeps.
    BatchNorm statistics are not params and are left alone (a zero-scale, zero-bias BatchNorm
    outputs zero whatever they are).

    Raises:
      ValueError: gates for an unknown group, or of the wrong size.
    """
    groups = {g.name: g for g in model.channel_groups()}
    unknown = sorted(set(gates) - set(groups))
    if unknown:
        raise ValueError(f"gates for unknown groups {unknown}; groups: {sorted(groups)}")
    leaves = flat_leaves(params)
    edited: dict[str, jax.Array] = {}
    for name, logits in gates.items():
        group = groups[name]
        if tuple(jnp.shape(logits)) != (group.size,):
            raise ValueError(f"gates of {name!r} have shape {jnp.shape(logits)}, not {group.size}")
        values = binary_gates(logits)
        for path, axis in group.members:
            if path.rsplit("/", 1)[-1] in _STATISTICS:
                continue
            leaf = edited.get(path, leaves[path])
            view = [1] * leaf.ndim
            view[axis] = group.size
            edited[path] = leaf * values.reshape(view).astype(leaf.dtype)
    return set_leaves(params, edited)


@dataclasses.dataclass(frozen=True)
class GatedModel:
    """A vision model whose channels are gated: params are ``{"weights": ..., "gates": ...}``.

    It applies like a :class:`~jaxprune.models.vision.VisionModel` (``apply(params, stats, x,
    train)``), so :func:`jaxprune.training.loop.train` and ``evaluate`` run it unchanged.
    """

    model: VisionModel

    def init(self, seed: int = 0, logit: float = 3.0) -> tuple[Params, Params]:
        weights, stats = self.model.init(seed)
        return {"weights": weights, "gates": init_gates(self.model, logit)}, stats

    def apply(
        self, params: Params, stats: Params, images: jax.Array, train: bool = False
    ) -> tuple[jax.Array, Params]:
        weights = gated_params(self.model, params["weights"], params["gates"])
        return self.model.apply(weights, stats, images, train)

    def capture(self, params: Params, stats: Params, images: jax.Array):
        weights = gated_params(self.model, params["weights"], params["gates"])
        return self.model.capture(weights, stats, images)

    def flops(self, params: Params | None = None) -> int:
        """MACs per image of the model the gates select (the dense model's without ``params``)."""
        if params is None:
            return self.model.flops()
        keep = gate_keep(params["gates"])
        return self.model.with_widths({k: int(v.sum()) for k, v in keep.items()}).flops()

    def to_dict(self) -> dict[str, Any]:
        return {**self.model.to_dict(), "gated": True}


def export(gated: GatedModel, params: Params, stats: Params) -> FilterPruneResult:
    """Gates → channel keep-masks → the physically smaller model, in one call.

    The result's model computes exactly the gated model's outputs (no fine-tuning stage).
    """
    keep = gate_keep(params["gates"])
    small, weights, new_stats = shrink(gated.model, params["weights"], stats, keep)
    return FilterPruneResult(small, weights, new_stats, keep, gated.model.flops(), small.flops())


def gate_penalty(
    gates: Mapping[str, jax.Array],
    density: float,
    budget: float = 10.0,
    polarize: float = 1.0,
    per_group: bool = True,
) -> jax.Array:
    """``budget·(mean g − density)² + polarize·mean min(σ, 1 − σ)``.

    The polarizing term is 0 at σ = 0 or 1 and its slope never vanishes (σ(1 − σ) would be flat
    at ½, exactly where the binary gate flips, and leaves closed gates hovering there).

    ``g`` are the binary gates (:func:`binary_gates`): the budget is on the density the network
    actually runs (its gradient is the straight-through one), not on the mean sigmoid, which can
    sit at the target with far fewer gates open. With ``per_group`` (default) the budget term is
    the mean over groups of each group's ``(mean g − density)²``, so every group keeps about
    ``density`` of its channels; without, one mean over all channels, which lets the penalty
    close whole early layers (cheap in channels, fatal for accuracy).

    Raises:
      ValueError: ``density`` outside ``(0, 1]`` or negative weights.
    """
    if not 0.0 < density <= 1.0 or budget < 0 or polarize < 0:
        raise ValueError(
            f"need density in (0, 1] and non-negative weights, got {density}, {budget}, {polarize}"
        )
    logits = [jnp.ravel(g) for g in gates.values()]
    hard = [binary_gates(g) for g in logits]
    if per_group:
        gap = jnp.mean(jnp.stack([(jnp.mean(h) - density) ** 2 for h in hard]))
    else:
        gap = (jnp.mean(jnp.concatenate(hard)) - density) ** 2
    soft = jax.nn.sigmoid(jnp.concatenate(logits))
    return budget * gap + polarize * jnp.mean(jnp.minimum(soft, 1.0 - soft))


def polarization(values: jax.Array, t: float) -> jax.Array:
    """Zhuang et al.'s polarization regulariser ``Σ t·|v| − |v − mean v|`` (eq. 2, without λ)."""
    values = jnp.ravel(values).astype(jnp.float32)
    return jnp.sum(t * jnp.abs(values) - jnp.abs(values - jnp.mean(values)))


def _scale_paths(model: VisionModel) -> dict[str, list[str]]:
    out = {}
    for group in model.channel_groups():
        out[group.name] = [p for p, _ in group.members if p.rsplit("/", 1)[-1] == "scale"]
    if not any(out.values()):
        raise ValueError(f"{model.config.family} has no BatchNorm scales to polarize")
    return out


def bn_polarization(model: VisionModel, params: Params, t: float, strength: float) -> jax.Array:
    """``strength·Σ(t·|γ| − |γ − γ̄|)`` over every BatchNorm scale of every channel group, γ̄ the
    mean of them all (the network-wide mean, as in the paper).

    Raises:
      ValueError: the model has no BatchNorm (the MLP).
    """
    leaves = flat_leaves(params)
    paths = sorted({p for ps in _scale_paths(model).values() for p in ps})
    gammas = jnp.concatenate([jnp.ravel(leaves[p]) for p in paths])
    return strength * polarization(gammas, t)


def bn_scales(model: VisionModel, params: Params) -> dict[str, np.ndarray]:
    """``{group: (size,) max |γ|}`` over the group's BatchNorm scales (what :func:`bn_keep`
    thresholds; groups without BatchNorm are left out)."""
    leaves = flat_leaves(params)
    out = {}
    for name, paths in _scale_paths(model).items():
        if paths:
            out[name] = np.max([np.abs(np.asarray(leaves[p], np.float32)) for p in paths], axis=0)
    return out


def bn_keep(model: VisionModel, params: Params, threshold: float) -> dict[str, np.ndarray]:
    """``{group: bool}``: channels whose largest |γ| is above ``threshold`` (and each group's
    largest, so none closes). A removed channel still emitted its constant ``relu(β)``:
    :func:`jaxprune.structured.bn_export.bn_export` folds it into the next layer before shrinking
    (:func:`~jaxprune.structured.filters.shrink` alone drops it)."""
    keep = {}
    for name, scale in bn_scales(model, params).items():
        keep[name] = (scale > threshold) | (scale == scale.max())
    return keep


def add_penalty_gradient(penalty: Callable[[Any], jax.Array]) -> optax.GradientTransformation:
    """Adds ``∇ penalty(params)`` to the gradients: the same updates as adding ``penalty`` to the
    loss, for any training loop that hands ``params`` to ``update``.

    Raises:
      ValueError: (on update) no ``params`` given.
    """

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("add_penalty_gradient needs params: call update(grads, state, params)")
        extra = jax.grad(penalty)(params)
        return jax.tree.map(lambda g, e: g + e.astype(g.dtype), updates, extra), state

    return optax.GradientTransformation(init, update)


def gate_optimizer(
    weights: optax.GradientTransformation, gates: optax.GradientTransformation
) -> optax.GradientTransformation:
    """``weights`` for ``params["weights"]`` and ``gates`` for ``params["gates"]`` (gates usually
    want a larger learning rate: they move a channel only when their sign changes)."""

    def labels(params):
        return {k: jax.tree.map(lambda _, k=k: k, v) for k, v in params.items()}

    return optax.multi_transform({"weights": weights, "gates": gates}, labels)
