"""A pre-activation ResNet in the ResNet-20 style (He et al. 2016, "Identity Mappings").

A 3×3 stem convolution, then stages of basic blocks, one stage per entry of ``widths`` (each
after the first halves the resolution in its first block), then BatchNorm, ReLU, global average
pooling and a linear head. A block computes::

    h = relu(bn1(x));  shortcut = x, or a 1×1 strided convolution of h when the shape changes
    out = conv2(relu(bn2(conv1(h)))) + shortcut

``widths=(16, 32, 64), blocks=3`` is ResNet-20's layout. ``mids`` sets each block's inner width
(``conv1``'s filters), which filter pruning shrinks independently of the residual stream.

Channel groups (see :class:`~jaxprune.models.vision.base.ChannelGroup`):

- ``blocks/{j}/mid``: block ``j``'s inner channels (``conv1`` out, ``bn2``, ``conv2`` in);
- ``stage{s}``: stage ``s``'s residual stream. Every tensor added into it shares its channels:
  the stem (stage 0) or the stage's projection shortcut, every ``conv2`` of the stage, and every
  reader of the stream: ``bn1``, ``conv1`` and shortcut inputs of the blocks that follow, and the
  final BatchNorm and head for the last stage. Removing a stream channel removes it from all.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.models.vision.base import (
    ChannelGroup,
    conv_out,
    register_vision_config,
    tapped_conv,
)

__all__ = ["PreActBlock", "ResNet", "ResNetConfig"]

_BN = ("scale", "bias", "mean", "var")


@register_vision_config
@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """Attributes: stage ``widths``, ``blocks`` per stage, per-block ``mids`` (``None``: the
    stage's width), ``image_size``, ``in_channels``, ``num_classes``."""

    widths: tuple[int, ...] = (16, 32, 64)
    blocks: int = 3
    mids: tuple[int, ...] | None = None
    image_size: int = 28
    in_channels: int = 1
    num_classes: int = 10

    family: ClassVar[str] = "resnet"

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.mids is None:
            mids = tuple(w for w in self.widths for _ in range(self.blocks))
            object.__setattr__(self, "mids", mids)
        object.__setattr__(self, "mids", tuple(int(m) for m in self.mids))
        if self.blocks < 1 or not self.widths or min(self.widths) < 1:
            raise ValueError(f"need positive widths and blocks, got {self.widths}, {self.blocks}")
        if len(self.mids) != len(self.widths) * self.blocks or min(self.mids) < 1:
            raise ValueError(f"mids needs one positive width per block, got {self.mids}")

    @property
    def module_cls(self) -> type:
        return ResNet

    def stage_of(self, j: int) -> int:
        return j // self.blocks

    def in_width(self, j: int) -> int:
        """Width of block ``j``'s input stream."""
        return self.widths[max(self.stage_of(j) - (j % self.blocks == 0), 0)]

    def projects(self, j: int) -> bool:
        return j > 0 and j % self.blocks == 0

    def channel_groups(self) -> tuple[ChannelGroup, ...]:
        n = len(self.mids)
        groups = [self._mid_group(j) for j in range(n)]
        for s, width in enumerate(self.widths):
            first = s * self.blocks
            producers = ["stem/kernel" if s == 0 else f"blocks/{first}/shortcut/kernel"]
            producers += [f"blocks/{j}/conv2/kernel" for j in range(first, first + self.blocks)]
            members = [(p, -1) for p in producers]
            # Readers of stage s: the blocks after its first one, the next stage's first block,
            # and for stage 0 also block 0 (which reads the stem).
            readers = range(first + 1 if s else 0, min(first + self.blocks + 1, n))
            for j in readers:
                members += [(f"blocks/{j}/bn1/{leaf}", 0) for leaf in _BN]
                members.append((f"blocks/{j}/conv1/kernel", -2))
                if self.projects(j):
                    members.append((f"blocks/{j}/shortcut/kernel", -2))
            if s == len(self.widths) - 1:
                members += [(f"final_bn/{leaf}", 0) for leaf in _BN] + [("head/kernel", -2)]
            groups.append(
                ChannelGroup(f"stage{s}", width, tuple(producers), tuple(members), f"stage{s}:act")
            )
        return tuple(groups)

    def _mid_group(self, j: int) -> ChannelGroup:
        kernel = f"blocks/{j}/conv1/kernel"
        members = (
            (kernel, -1),
            *((f"blocks/{j}/bn2/{leaf}", 0) for leaf in _BN),
            (f"blocks/{j}/conv2/kernel", -2),
        )
        return ChannelGroup(f"blocks/{j}/mid", self.mids[j], (kernel,), members, f"blocks/{j}:act")

    def with_widths(self, widths: dict[str, int]) -> ResNetConfig:
        stages = tuple(widths.get(f"stage{s}", w) for s, w in enumerate(self.widths))
        mids = tuple(widths.get(f"blocks/{j}/mid", m) for j, m in enumerate(self.mids))
        return dataclasses.replace(self, widths=stages, mids=mids)

    def kernel_positions(self) -> dict[str, int]:
        size = self.image_size
        positions = {"stem/kernel": size * size}
        for j in range(len(self.mids)):
            if self.projects(j):
                size = conv_out(size, 2)
                positions[f"blocks/{j}/shortcut/kernel"] = size * size
            positions[f"blocks/{j}/conv1/kernel"] = size * size
            positions[f"blocks/{j}/conv2/kernel"] = size * size
        return positions | {"head/kernel": 1}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResNetConfig:
        return cls(**{**d, "mids": tuple(d["mids"]) if d.get("mids") else None})


class PreActBlock(nnx.Module):
    def __init__(self, c_in: int, mid: int, c_out: int, stride: int, rngs: nnx.Rngs):
        self.bn1 = nnx.BatchNorm(c_in, momentum=0.9, rngs=rngs)
        self.conv1 = nnx.Conv(c_in, mid, (3, 3), (stride, stride), use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(mid, momentum=0.9, rngs=rngs)
        self.conv2 = nnx.Conv(mid, c_out, (3, 3), use_bias=False, rngs=rngs)
        self.shortcut = (
            nnx.Conv(c_in, c_out, (1, 1), (stride, stride), use_bias=False, rngs=rngs)
            if stride != 1 or c_in != c_out
            else None
        )

    def __call__(self, x, train: bool, taps: dict | None, name: str) -> jax.Array:
        h = jax.nn.relu(self.bn1(x, use_running_average=not train))
        shortcut = (
            x if self.shortcut is None else tapped_conv(self.shortcut, h, taps, f"{name}/shortcut")
        )
        h = tapped_conv(self.conv1, h, taps, f"{name}/conv1")
        h = jax.nn.relu(self.bn2(h, use_running_average=not train))
        if taps is not None:
            taps[f"{name}:act"] = h
        return tapped_conv(self.conv2, h, taps, f"{name}/conv2") + shortcut


class ResNet(nnx.Module):
    def __init__(self, config: ResNetConfig, *, rngs: nnx.Rngs):
        self.blocks_per_stage = config.blocks
        self.stem = nnx.Conv(
            config.in_channels, config.widths[0], (3, 3), use_bias=False, rngs=rngs
        )
        self.blocks = nnx.List(
            [
                PreActBlock(
                    config.in_width(j),
                    mid,
                    config.widths[config.stage_of(j)],
                    2 if config.projects(j) else 1,
                    rngs,
                )
                for j, mid in enumerate(config.mids)
            ]
        )
        self.final_bn = nnx.BatchNorm(config.widths[-1], momentum=0.9, rngs=rngs)
        self.head = nnx.Linear(config.widths[-1], config.num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool = False, taps: dict | None = None) -> jax.Array:
        x = tapped_conv(self.stem, x, taps, "stem")
        for j, block in enumerate(self.blocks):
            x = block(x, train, taps, f"blocks/{j}")
            if taps is not None and (j + 1) % self.blocks_per_stage == 0:
                taps[f"stage{j // self.blocks_per_stage}:act"] = x
        x = jax.nn.relu(self.final_bn(x, use_running_average=not train))
        return self.head(jnp.mean(x, axis=(1, 2))).astype(jnp.float32)
