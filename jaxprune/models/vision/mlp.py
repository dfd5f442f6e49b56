"""A multilayer perceptron on flattened images (LeNet-300-100 by default)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.models.vision.base import ChannelGroup, register_vision_config

__all__ = ["MLP", "MLPConfig"]


@register_vision_config
@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """Attributes: ``hidden`` widths, input ``image_size``/``in_channels``, ``num_classes``."""

    hidden: tuple[int, ...] = (300, 100)
    image_size: int = 28
    in_channels: int = 1
    num_classes: int = 10

    family: ClassVar[str] = "mlp"

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden widths must be positive, got {self.hidden}")

    @property
    def module_cls(self) -> type:
        return MLP

    @property
    def in_features(self) -> int:
        return self.image_size * self.image_size * self.in_channels

    def channel_groups(self) -> tuple[ChannelGroup, ...]:
        """One group per hidden layer: its units, through the next layer's inputs."""
        groups = []
        for i, width in enumerate(self.hidden):
            kernel = f"layers/{i}/kernel"
            members = ((kernel, -1), (f"layers/{i}/bias", 0), (f"layers/{i + 1}/kernel", -2))
            groups.append(ChannelGroup(f"layers/{i}", width, (kernel,), members, f"layers/{i}:act"))
        return tuple(groups)

    def with_widths(self, widths: dict[str, int]) -> MLPConfig:
        hidden = [widths.get(f"layers/{i}", h) for i, h in enumerate(self.hidden)]
        return dataclasses.replace(self, hidden=tuple(hidden))

    def kernel_positions(self) -> dict[str, int]:
        return {f"layers/{i}/kernel": 1 for i in range(len(self.hidden) + 1)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MLPConfig:
        return cls(**d)


class MLP(nnx.Module):
    def __init__(self, config: MLPConfig, *, rngs: nnx.Rngs):
        widths = (config.in_features, *config.hidden, config.num_classes)
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )

    def __call__(self, x: jax.Array, train: bool = False, taps: dict | None = None) -> jax.Array:
        h = x.reshape(x.shape[0], -1)
        for i, layer in enumerate(self.layers):
            if taps is not None:
                # A linear is a convolution with one output position: its receptive field is h.
                taps[f"layers/{i}:patches"] = h[:, None, None, :]
            h = layer(h)
            if taps is not None:
                taps[f"layers/{i}:out"] = h[:, None, None, :]
            if i < len(self.layers) - 1:
                h = jax.nn.relu(h)
                if taps is not None:
                    taps[f"layers/{i}:act"] = h[:, None, None, :]
        return h.astype(jnp.float32)
