"""Small image classifiers seen through one protocol: params and BatchNorm statistics as dicts.

A :class:`VisionModel` wraps a config (:class:`~jaxprune.models.vision.MLPConfig`,
:class:`~jaxprune.models.vision.VGGConfig`, :class:`~jaxprune.models.vision.ResNetConfig`) and
applies its NNX module to plain nested-dict ``params`` and ``stats`` (BatchNorm running means and
variances), so training stays functional: Optax sees only ``params``, and a training step returns
the new ``stats`` instead of mutating a module::

    model = VisionModel(VGGConfig(widths=(16, "M", 32, "M", 64)))
    params, stats = model.init(seed=0)
    logits, stats = model.apply(params, stats, images, train=True)    # batch statistics
    logits, _ = model.apply(params, stats, images)                     # running statistics

Filter pruning needs to know which leaves share a channel: :meth:`VisionModel.channel_groups`
lists, for every prunable set of channels, the kernels producing it (scored) and every
``(path, axis)`` indexed by it (the producers' output axis, BatchNorm's vectors, the consumers'
input axis, through residual adds), so masking and physical shrinking are generic.
:meth:`VisionModel.capture` returns the taps the activation-based scores read.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.core.paths import flat_leaves

Params = dict[str, Any]

__all__ = ["ChannelGroup", "ConvBN", "VisionModel", "register_vision_config"]


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Channels that exist together: removing channel ``c`` removes index ``c`` of every member.

    Attributes:
      name: the group's name (also the key of :meth:`VisionModel.with_widths`).
      size: the number of channels.
      producers: kernel paths whose output channels (last axis) make the group; scores read them.
      members: ``(path, axis)`` of every params or stats leaf indexed by the group's channels.
      activation: the tap holding the group's feature maps after their nonlinearity.
    """

    name: str
    size: int
    producers: tuple[str, ...]
    members: tuple[tuple[str, int], ...]
    activation: str


VISION_CONFIGS: dict[str, type] = {}


def register_vision_config(cls: type) -> type:
    """Class decorator: makes ``cls`` (with a ``family`` class attribute) loadable by name."""
    VISION_CONFIGS[cls.family] = cls
    return cls


def conv_out(size: int, stride: int) -> int:
    """Spatial size after a ``SAME``-padded convolution or pooling with ``stride``."""
    return math.ceil(size / stride)


class ConvBN(nnx.Module):
    """A bias-free convolution followed by BatchNorm (ReLU is the caller's)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, rngs: nnx.Rngs):
        self.stride = stride
        self.conv = nnx.Conv(
            c_in, c_out, (kernel, kernel), (stride, stride), use_bias=False, rngs=rngs
        )
        self.bn = nnx.BatchNorm(c_out, momentum=0.9, rngs=rngs)

    def __call__(self, x, train: bool, taps: dict | None, name: str):
        y = tapped_conv(self.conv, x, taps, f"{name}/conv")
        return self.bn(y, use_running_average=not train)


def tapped_conv(conv: nnx.Conv, x: jax.Array, taps: dict | None, name: str) -> jax.Array:
    """``conv(x)``; with ``taps``, records ``name:in`` (the input, unpadded), ``name:patches``
    (each output's receptive field) and ``name:out``."""
    y = conv(x)
    if taps is not None:
        taps[f"{name}:in"] = x
        strides = conv.strides
        strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
        taps[f"{name}:patches"] = jax.lax.conv_general_dilated_patches(
            x,
            tuple(conv.kernel_size),
            strides,
            conv.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        taps[f"{name}:out"] = y
    return y


@dataclasses.dataclass(frozen=True)
class VisionModel:
    """An image classifier of some config, applied to dict params and stats. Holds no arrays."""

    config: Any

    FORMAT: ClassVar[str] = "jaxprune-vision"

    @functools.cached_property
    def _graphdef(self):
        abstract = nnx.eval_shape(lambda: self.config.module_cls(self.config, rngs=nnx.Rngs(0)))
        graphdef, _, _ = nnx.split(abstract, nnx.Param, nnx.BatchStat)
        return graphdef

    def init(self, seed: int = 0) -> tuple[Params, Params]:
        """``(params, stats)`` of a freshly initialised model, as nested dicts."""
        module = self.config.module_cls(self.config, rngs=nnx.Rngs(seed))
        _, params, stats = nnx.split(module, nnx.Param, nnx.BatchStat)
        return nnx.to_pure_dict(params), nnx.to_pure_dict(stats)

    def module(self, params: Params, stats: Params) -> nnx.Module:
        """The NNX module carrying ``params`` and ``stats`` (works inside ``jit``)."""
        return nnx.merge(self._graphdef, params, stats)

    def apply(
        self, params: Params, stats: Params, images: jax.Array, train: bool = False
    ) -> tuple[jax.Array, Params]:
        """``(logits, stats)``: with ``train``, BatchNorm uses and updates batch statistics."""
        module = self.module(params, stats)
        logits = module(images, train=train)
        return logits, nnx.to_pure_dict(nnx.state(module, nnx.BatchStat))

    def capture(self, params: Params, stats: Params, images: jax.Array):
        """``(logits, taps)`` in inference mode; taps: ``{path:patches, path:out, group:act}``."""
        taps: dict[str, jax.Array] = {}
        logits = self.module(params, stats)(images, train=False, taps=taps)
        return logits, taps

    def channel_groups(self) -> tuple[ChannelGroup, ...]:
        return self.config.channel_groups()

    def with_widths(self, widths: Mapping[str, int]) -> VisionModel:
        """The same architecture with some channel groups resized (by group name)."""
        known = {g.name for g in self.channel_groups()}
        unknown = sorted(set(widths) - known)
        if unknown:
            raise ValueError(f"no channel groups {unknown}; groups: {sorted(known)}")
        if any(int(w) < 1 for w in widths.values()):
            raise ValueError(f"every group keeps at least one channel, got {dict(widths)}")
        return VisionModel(self.config.with_widths(dict(widths)))

    def flops(self, params: Params | None = None) -> int:
        """Multiply-accumulates per image of the convolutions and linears.

        With ``params``, only non-zero weights count (unstructured sparsity's FLOPs, as in
        Rethinking's Scratch-B budget); without, the dense architecture's.
        """
        positions = self.config.kernel_positions()
        if params is None:
            shapes = {p: s for p, s in self._kernel_shapes().items() if p in positions}
            return sum(math.prod(s) * positions[p] for p, s in shapes.items())
        leaves = flat_leaves(params)
        return sum(int(jnp.count_nonzero(leaves[p])) * n for p, n in positions.items())

    def _kernel_shapes(self) -> dict[str, tuple[int, ...]]:
        abstract = nnx.eval_shape(lambda: self.config.module_cls(self.config, rngs=nnx.Rngs(0)))
        state = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
        return {p: tuple(x.shape) for p, x in flat_leaves(state).items()}

    def num_params(self) -> int:
        return sum(math.prod(s) for s in self._kernel_shapes().values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able config (``{"format", "family", **fields}``) for checkpoints."""
        return {"format": self.FORMAT, "family": self.config.family, **self.config.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VisionModel:
        """Inverse of :meth:`to_dict`."""
        family = d.get("family")
        if family not in VISION_CONFIGS:
            raise ValueError(f"unknown vision family {family!r}; known: {sorted(VISION_CONFIGS)}")
        fields = {k: v for k, v in d.items() if k not in ("format", "family")}
        return cls(VISION_CONFIGS[family].from_dict(fields))
