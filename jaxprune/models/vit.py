"""Vision Transformer (ViT, DeiT, DINOv2) in Flax NNX, with taps for token pruning.

One readable file: a patch-embedding convolution, prefix tokens (CLS, and DeiT's distillation
token), learned position embeddings resized bicubically to the image's patch grid (as DINOv2 and
Hugging Face do), pre-norm blocks with optional LayerScale, exact-GELU MLPs, a final LayerNorm and
an optional linear classifier on the CLS token.

Parameter names follow Hugging Face's DINOv2 (``layers/3/attention/query/kernel``,
``layers/3/mlp/fc1/kernel``); kernels use the Flax layout ``(in, out)``. Images are ``(batch,
height, width, channels)`` float arrays, already normalised.

A block called with ``capture=True`` also returns its **taps**: the attention probabilities
``attn`` ``(batch, heads, tokens, tokens)`` (float32, rows sum to one) and the keys ``keys``
``(batch, tokens, hidden)``; token-pruning methods (:mod:`jaxprune.token_pruning`) read them.
A block takes any number of tokens, so a forward pass may shrink the sequence between blocks;
``key_bias`` ``(batch, tokens)`` is added to the attention logits of every query (ToMe's
proportional attention, ``log`` of the number of patches a merged token stands for).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.core.deprecation import renamed
from jaxprune.models.base import Params

HEADS = ("cls", "cls+mean")


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Hyper-parameters of a Vision Transformer (names follow ``transformers.ViTConfig``).

    Attributes:
      image_size: side of the (square) input images the model is applied to.
      patch_size: side of a patch; the patch grid is ``image_size // patch_size`` per side.
      num_prefix_tokens: tokens before the patches: 1 (CLS) or 2 (CLS, DeiT's distillation token).
      position_grid: side of the grid the stored position embeddings were trained on (DINOv2:
        37, from 518-pixel images); ``None`` means the image's own patch grid.
      layer_scale: DINOv2's per-channel LayerScale after attention and MLP.
      num_labels: size of the classifier on top (0: a backbone without one).
      head: ``"cls"`` (classifier on the CLS token) or ``"cls+mean"`` (on CLS concatenated with
        the mean of the other tokens, as ``Dinov2ForImageClassification``).
    """

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-12
    layer_scale: bool = False
    num_prefix_tokens: int = 1
    position_grid: int | None = None
    num_labels: int = 0
    head: str = "cls"

    family = "vit"

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not a multiple of "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.num_prefix_tokens not in (1, 2):
            raise ValueError(f"num_prefix_tokens must be 1 or 2, got {self.num_prefix_tokens}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")

    @property
    def grid(self) -> int:
        """Patches per side of the input images."""
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Tokens entering the first block: prefix tokens plus one per patch."""
        return self.num_prefix_tokens + self.grid**2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def bicubic_matrix(n_in: int, n_out: int, a: float = -0.75) -> np.ndarray:
    """The ``(n_out, n_in)`` matrix of 1-D bicubic resampling, as PyTorch and ONNX compute it.

    Keys' cubic kernel with ``a = -0.75``, half-pixel centres (``align_corners=False``), taps past
    the border clamped to the edge sample.
    """
    weights = np.zeros((n_out, n_in), np.float64)
    scale = n_in / n_out
    for i in range(n_out):
        x = (i + 0.5) * scale - 0.5
        x0 = math.floor(x)
        t = x - x0
        for k in range(-1, 3):
            d = abs(k - t)
            if d <= 1:
                w = (a + 2) * d**3 - (a + 3) * d**2 + 1
            elif d < 2:
                w = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
            else:
                w = 0.0
            weights[i, min(max(x0 + k, 0), n_in - 1)] += w
    return weights.astype(np.float32)


def _linear(d_in: int, d_out: int, rngs: nnx.Rngs, dtype) -> nnx.Linear:
    return nnx.Linear(
        d_in,
        d_out,
        dtype=dtype,
        param_dtype=dtype,
        kernel_init=nnx.initializers.normal(0.02),
        rngs=rngs,
    )


def _norm(config: ViTConfig, rngs: nnx.Rngs, dtype) -> nnx.LayerNorm:
    return nnx.LayerNorm(
        config.hidden_size,
        epsilon=config.layer_norm_eps,
        use_fast_variance=False,
        dtype=dtype,
        param_dtype=dtype,
        rngs=rngs,
    )


class LayerScale(nnx.Module):
    def __init__(self, dim: int, dtype):
        self.lambda1 = nnx.Param(jnp.ones((dim,), dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.lambda1[...]


class Attention(nnx.Module):
    def __init__(self, config: ViTConfig, rngs: nnx.Rngs, dtype):
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query = _linear(d, d, rngs, dtype)
        self.key = _linear(d, d, rngs, dtype)
        self.value = _linear(d, d, rngs, dtype)
        self.output = _linear(d, d, rngs, dtype)

    def __call__(self, x: jax.Array, key_bias: jax.Array | None, taps: dict | None) -> jax.Array:
        b, n, d = x.shape
        h = self.num_heads
        keys = self.key(x)
        q = self.query(x).reshape(b, n, h, d // h)
        k = keys.reshape(b, n, h, d // h)
        v = self.value(x).reshape(b, n, h, d // h)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(d // h)
        if key_bias is not None:
            logits = logits + key_bias[:, None, None, :]
        probs = jax.nn.softmax(logits, axis=-1)
        if taps is not None:
            taps["attn"], taps["keys"] = probs, keys
        out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v).reshape(b, n, d)
        return self.output(out)


class MLP(nnx.Module):
    def __init__(self, config: ViTConfig, rngs: nnx.Rngs, dtype):
        self.fc1 = _linear(config.hidden_size, config.intermediate_size, rngs, dtype)
        self.fc2 = _linear(config.intermediate_size, config.hidden_size, rngs, dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
    def __init__(self, config: ViTConfig, rngs: nnx.Rngs, dtype=jnp.float32):
        self.norm1 = _norm(config, rngs, dtype)
        self.attention = Attention(config, rngs, dtype)
        self.norm2 = _norm(config, rngs, dtype)
        self.mlp = MLP(config, rngs, dtype)
        if config.layer_scale:
            self.layer_scale1 = LayerScale(config.hidden_size, dtype)
            self.layer_scale2 = LayerScale(config.hidden_size, dtype)
        self.layer_scale = config.layer_scale

    def __call__(
        self, x: jax.Array, *, key_bias: jax.Array | None = None, capture: bool = False
    ) -> tuple[jax.Array, dict | None]:
        """Returns the block output and, with ``capture``, its taps (``attn``, ``keys``)."""
        taps: dict | None = {} if capture else None
        a = self.attention(self.norm1(x), key_bias, taps)
        x = x + (self.layer_scale1(a) if self.layer_scale else a)
        m = self.mlp(self.norm2(x))
        x = x + (self.layer_scale2(m) if self.layer_scale else m)
        return x, taps


class Embeddings(nnx.Module):
    def __init__(self, config: ViTConfig, rngs: nnx.Rngs, dtype):
        c = config
        self.config = c
        init = nnx.initializers.normal(0.02)
        self.cls_token = nnx.Param(init(rngs.params(), (1, 1, c.hidden_size), dtype))
        if c.num_prefix_tokens == 2:
            self.distillation_token = nnx.Param(init(rngs.params(), (1, 1, c.hidden_size), dtype))
        grid = c.position_grid or c.grid
        shape = (1, c.num_prefix_tokens + grid**2, c.hidden_size)
        self.position_embeddings = nnx.Param(init(rngs.params(), shape, dtype))
        self.patch_embeddings = nnx.Conv(
            c.num_channels,
            c.hidden_size,
            kernel_size=(c.patch_size, c.patch_size),
            strides=(c.patch_size, c.patch_size),
            padding="VALID",
            dtype=dtype,
            param_dtype=dtype,
            rngs=rngs,
        )

    def positions(self) -> jax.Array:
        """Position embeddings of the prefix tokens and the image's patch grid (bicubic resize)."""
        c = self.config
        table = self.position_embeddings[...]
        grid = c.position_grid or c.grid
        if grid == c.grid:
            return table
        prefix, patches = table[:, : c.num_prefix_tokens], table[:, c.num_prefix_tokens :]
        resize = jnp.asarray(bicubic_matrix(grid, c.grid))
        patches = patches.reshape(grid, grid, c.hidden_size).astype(jnp.float32)
        patches = jnp.einsum("ij,jkd,lk->ild", resize, patches, resize)
        patches = patches.reshape(1, c.grid**2, c.hidden_size).astype(table.dtype)
        return jnp.concatenate([prefix, patches], axis=1)

    def __call__(self, images: jax.Array) -> jax.Array:
        c = self.config
        if images.shape[1:] != (c.image_size, c.image_size, c.num_channels):
            raise ValueError(
                f"images must be (batch, {c.image_size}, {c.image_size}, {c.num_channels}), got "
                f"{images.shape}; resize them or build the config with image_size="
                f"{images.shape[1]}"
            )
        patches = self.patch_embeddings(images.astype(self.cls_token.dtype))
        b = patches.shape[0]
        patches = patches.reshape(b, -1, c.hidden_size)
        prefix = [self.cls_token[...]]
        if c.num_prefix_tokens == 2:
            prefix.append(self.distillation_token[...])
        prefix = [jnp.broadcast_to(t, (b, 1, c.hidden_size)) for t in prefix]
        return jnp.concatenate([*prefix, patches], axis=1) + self.positions()


class VisionTransformer(nnx.Module):
    """A ViT; ``model(images)`` returns the final-normed tokens ``(batch, tokens, hidden)``."""

    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.config = config
        self.embeddings = Embeddings(config, rngs, dtype)
        self.layers = nnx.List(
            [Block(config, rngs, dtype) for _ in range(config.num_hidden_layers)]
        )
        self.layernorm = _norm(config, rngs, dtype)
        if config.num_labels:
            width = config.hidden_size * (2 if config.head == "cls+mean" else 1)
            self.classifier = _linear(width, config.num_labels, rngs, dtype)

    def classify(self, tokens: jax.Array) -> jax.Array:
        """Logits from final-normed tokens (any number of them; the CLS token first)."""
        if not self.config.num_labels:
            raise ValueError("this model has no classifier (num_labels=0); use its CLS features")
        pooled = tokens[:, 0]
        if self.config.head == "cls+mean":
            rest = tokens[:, self.config.num_prefix_tokens :].mean(axis=1)
            pooled = jnp.concatenate([pooled, rest], axis=-1)
        return self.classifier(pooled)

    def __call__(self, images: jax.Array) -> jax.Array:
        x = self.embeddings(images)
        for layer in self.layers:
            x, _ = layer(x)
        return self.layernorm(x)


@dataclasses.dataclass(frozen=True)
class ViTModel:
    """A ViT applied to nested-dict params (``params["layers"][i]``). Holds no weights."""

    config: ViTConfig
    dtype: Any = jnp.float32

    @property
    def num_blocks(self) -> int:
        return self.config.num_hidden_layers

    @functools.cached_property
    def _graphdef(self):
        abstract = nnx.eval_shape(
            lambda: VisionTransformer(self.config, rngs=nnx.Rngs(0), dtype=self.dtype)
        )
        return nnx.split(abstract)[0]

    def init_params(self, seed: int = 0) -> Params:
        """Random params (for tests and benchmarks), as a nested dict."""
        module = VisionTransformer(self.config, rngs=nnx.Rngs(seed), dtype=self.dtype)
        return nnx.to_pure_dict(nnx.state(module, nnx.Param))

    def module(self, params: Params) -> VisionTransformer:
        """The NNX module carrying ``params`` (works inside ``jit``)."""
        return nnx.merge(self._graphdef, params)

    def tokens(self, params: Params, images: jax.Array) -> jax.Array:
        """Final-normed tokens ``(batch, tokens, hidden)`` of the dense forward."""
        return self.module(params)(images)

    def features(self, params: Params, images: jax.Array) -> jax.Array:
        """The final-normed CLS token ``(batch, hidden)`` (DINOv2's image feature)."""
        return self.tokens(params, images)[:, 0]

    def logits(self, params: Params, images: jax.Array) -> jax.Array:
        module = self.module(params)
        return module.classify(module(images))


__all__ = ["HEADS", "ViTConfig", "ViTModel", "VisionTransformer", "bicubic_matrix"]

# Old names, kept for a while: each warns and gives the new one.
__getattr__ = renamed(__name__, {"VisionModel": "ViTModel"})
