"""The Hugging Face mapping of ViT, DeiT and DINOv2: ``config.json`` and tensor names.

Shared by the loaders of Hugging Face directories (:mod:`jaxprune.models.loaders.vit`) and of ONNX
exports (:mod:`jaxprune.models.loaders.vit_onnx`, which renames its tensors to these names).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxprune.models.base import Params
from jaxprune.models.vit import ViTConfig

VIT_MODEL_TYPES = ("vit", "deit", "dinov2")


def config_from_hf(
    hf_config: dict[str, Any], image_size: int | None = None, num_labels: int = 0
) -> ViTConfig:
    """A :class:`ViTConfig` from a ViT/DeiT/DINOv2 ``config.json`` dict.

    Raises:
      ValueError: another model type, or a feature the jaxprune ViT does not implement.
    """
    kind = hf_config.get("model_type")
    if kind not in VIT_MODEL_TYPES:
        raise ValueError(f"model_type {kind!r} is not a ViT (supported: {VIT_MODEL_TYPES})")
    if hf_config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"hidden_act {hf_config['hidden_act']!r} is not supported (only 'gelu')")
    if hf_config.get("use_swiglu_ffn"):
        raise ValueError("DINOv2 with a SwiGLU MLP (use_swiglu_ffn=true) is not supported")
    if not hf_config.get("qkv_bias", True):
        raise ValueError("qkv_bias=false is not supported")
    hidden, patch = hf_config["hidden_size"], hf_config["patch_size"]
    mlp = hf_config.get("intermediate_size") or int(hidden * hf_config.get("mlp_ratio", 4))
    trained_size = hf_config.get("image_size", 224)
    return ViTConfig(
        image_size=image_size or trained_size,
        patch_size=patch,
        num_channels=hf_config.get("num_channels", 3),
        hidden_size=hidden,
        num_hidden_layers=hf_config["num_hidden_layers"],
        num_attention_heads=hf_config["num_attention_heads"],
        intermediate_size=mlp,
        layer_norm_eps=hf_config.get("layer_norm_eps", 1e-12),
        layer_scale=kind == "dinov2",
        num_prefix_tokens=2 if kind == "deit" else 1,
        position_grid=trained_size // patch,
        num_labels=num_labels,
        head="cls+mean" if kind == "dinov2" else "cls",
    )


def hf_block_names(kind: str) -> dict[tuple[str, ...], str]:
    """``{(group, name) in the params: Hugging Face module name}`` of a block's norms and
    linears (``kind``: ``vit``, ``deit`` or ``dinov2``)."""
    dino = kind == "dinov2"
    names = {
        ("norm1",): "norm1" if dino else "layernorm_before",
        ("norm2",): "norm2" if dino else "layernorm_after",
        ("attention", "query"): "attention.attention.query",
        ("attention", "key"): "attention.attention.key",
        ("attention", "value"): "attention.attention.value",
        ("attention", "output"): "attention.output.dense",
        ("mlp", "fc1"): "mlp.fc1" if dino else "intermediate.dense",
        ("mlp", "fc2"): "mlp.fc2" if dino else "output.dense",
    }
    return names


def params_from_hf(
    tensors: Mapping[str, np.ndarray],
    config: ViTConfig,
    prefix: str,
    kind: str,
    dtype: Any = jnp.float32,
) -> Params:
    """Converts Hugging Face ViT/DeiT/DINOv2 tensors to nested-dict params (kernels ``(in, out)``).

    Raises:
      ValueError: a missing tensor or one whose shape does not match the config.
    """

    def get(name, shape=None):
        full = prefix + name
        if full not in tensors and name not in tensors:
            raise ValueError(f"the checkpoint has no tensor {full!r}")
        value = np.asarray(tensors[full if full in tensors else name], np.float32)
        if shape is not None and value.shape != shape:
            raise ValueError(f"{full} has shape {value.shape}, expected {shape}")
        return jnp.asarray(value, dtype)

    c = config
    d = c.hidden_size
    widths = {"fc1": (c.intermediate_size, d), "fc2": (d, c.intermediate_size)}

    def block(i):
        out: dict = {"attention": {}, "mlp": {}}
        for key, hf in hf_block_names(kind).items():
            base = f"encoder.layer.{i}.{hf}"
            if key[0].startswith("norm"):
                out[key[0]] = {"scale": get(base + ".weight", (d,)), "bias": get(base + ".bias")}
                continue
            w = get(base + ".weight", widths.get(key[1], (d, d)))
            out[key[0]][key[1]] = {"kernel": w.T, "bias": get(base + ".bias")}
        if c.layer_scale:
            for n in (1, 2):
                out[f"layer_scale{n}"] = {
                    "lambda1": get(f"encoder.layer.{i}.layer_scale{n}.lambda1")
                }
        return out

    grid = c.position_grid or c.grid
    embeddings = {
        "cls_token": get("embeddings.cls_token", (1, 1, d)),
        "position_embeddings": get(
            "embeddings.position_embeddings", (1, c.num_prefix_tokens + grid**2, d)
        ),
        "patch_embeddings": {
            "kernel": get("embeddings.patch_embeddings.projection.weight").transpose(2, 3, 1, 0),
            "bias": get("embeddings.patch_embeddings.projection.bias", (d,)),
        },
    }
    if c.num_prefix_tokens == 2:
        embeddings["distillation_token"] = get("embeddings.distillation_token", (1, 1, d))
    params = {
        "embeddings": embeddings,
        "layers": {i: block(i) for i in range(c.num_hidden_layers)},
        "layernorm": {"scale": get("layernorm.weight", (d,)), "bias": get("layernorm.bias")},
    }
    if c.num_labels:
        params["classifier"] = {
            "kernel": get("classifier.weight").T,
            "bias": get("classifier.bias"),
        }
    return params


__all__ = ["VIT_MODEL_TYPES", "config_from_hf", "hf_block_names", "params_from_hf"]
