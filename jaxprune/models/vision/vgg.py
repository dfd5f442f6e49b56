"""A VGG-style CNN: 3×3 convolutions with BatchNorm and ReLU, max pooling, a linear head.

``widths`` reads like the VGG papers' configurations: an int is a conv-BN-ReLU layer with that
many filters, ``"M"`` a 2×2 max pool. The last feature maps are flattened into a linear head whose
kernel is kept as ``(positions, channels, classes)``, so a filter of the last convolution owns one
slice of it (axis ``-2``), like any other consumer. (Global average pooling before the head, as in
VGG variants for CIFAR, trains far more slowly at these sizes: about 70% against 96% on MNIST
after 100 steps.)
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.models.vision.base import ChannelGroup, ConvBN, register_vision_config

__all__ = ["VGG", "VGGConfig", "SpatialHead"]

_BN = ("bn/scale", "bn/bias", "bn/mean", "bn/var")


@register_vision_config
@dataclasses.dataclass(frozen=True)
class VGGConfig:
    """Attributes: ``widths`` (ints, ``"M"``), ``image_size``, ``in_channels``, ``num_classes``."""

    widths: tuple[int | str, ...] = (16, "M", 32, "M", 64)
    image_size: int = 28
    in_channels: int = 1
    num_classes: int = 10

    family: ClassVar[str] = "vgg"

    def __post_init__(self):
        widths = tuple(w if w == "M" else int(w) for w in self.widths)
        object.__setattr__(self, "widths", widths)
        if not self.conv_widths or min(self.conv_widths) < 1:
            raise ValueError(f"widths need at least one positive conv width, got {self.widths}")

    @property
    def module_cls(self) -> type:
        return VGG

    @property
    def conv_widths(self) -> tuple[int, ...]:
        return tuple(w for w in self.widths if w != "M")

    def channel_groups(self) -> tuple[ChannelGroup, ...]:
        """One group per convolution: its filters, its BatchNorm, the next layer's inputs."""
        groups, n = [], len(self.conv_widths)
        for i, width in enumerate(self.conv_widths):
            kernel = f"convs/{i}/conv/kernel"
            consumer = f"convs/{i + 1}/conv/kernel" if i + 1 < n else "head/kernel"
            members = ((kernel, -1), *((f"convs/{i}/{leaf}", 0) for leaf in _BN), (consumer, -2))
            groups.append(ChannelGroup(f"convs/{i}", width, (kernel,), members, f"convs/{i}:act"))
        return tuple(groups)

    def with_widths(self, widths: dict[str, int]) -> VGGConfig:
        out, i = [], 0
        for w in self.widths:
            if w == "M":
                out.append(w)
            else:
                out.append(widths.get(f"convs/{i}", w))
                i += 1
        return dataclasses.replace(self, widths=tuple(out))

    @property
    def final_size(self) -> int:
        """Height (= width) of the last feature maps."""
        return self.image_size // 2 ** self.widths.count("M")

    def kernel_positions(self) -> dict[str, int]:
        positions, size, i = {}, self.image_size, 0
        for w in self.widths:
            if w == "M":
                size = size // 2
            else:
                positions[f"convs/{i}/conv/kernel"] = size * size
                i += 1
        return positions | {"head/kernel": 1}  # the head's kernel already spans the positions

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VGGConfig:
        return cls(**d)


class VGG(nnx.Module):
    def __init__(self, config: VGGConfig, *, rngs: nnx.Rngs):
        self.plan = tuple(config.widths)
        ins = (config.in_channels, *config.conv_widths[:-1])
        self.convs = nnx.List(
            [ConvBN(a, b, 3, 1, rngs) for a, b in zip(ins, config.conv_widths, strict=True)]
        )
        self.head = SpatialHead(
            config.final_size**2, config.conv_widths[-1], config.num_classes, rngs=rngs
        )

    def __call__(self, x: jax.Array, train: bool = False, taps: dict | None = None) -> jax.Array:
        i = 0
        for w in self.plan:
            if w == "M":
                x = nnx.max_pool(x, (2, 2), (2, 2), padding="VALID")
                continue
            x = jax.nn.relu(self.convs[i](x, train, taps, f"convs/{i}"))
            if taps is not None:
                taps[f"convs/{i}:act"] = x
            i += 1
        return self.head(x).astype(jnp.float32)


class SpatialHead(nnx.Module):
    """A linear layer on flattened ``(h, w, channels)`` maps, kernel ``(h·w, channels, out)``."""

    def __init__(self, positions: int, channels: int, out: int, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()
        flat = init(rngs.params(), (positions * channels, out), jnp.float32)
        self.kernel = nnx.Param(flat.reshape(positions, channels, out))
        self.bias = nnx.Param(jnp.zeros((out,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        maps = x.reshape(x.shape[0], -1, x.shape[-1])
        return jnp.einsum("nsc,sco->no", maps, self.kernel[...]) + self.bias[...]
