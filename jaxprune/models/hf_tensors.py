"""Hugging Face tensor names and nested-dict params, both ways, for the families' converters.

Every family that mirrors Hugging Face's module names (``layers/3/mlp/up_proj/kernel`` is
``model.layers.3.mlp.up_proj.weight``) converts its params with these helpers; linear weights are
``(out, in)`` in PyTorch and ``(in, out)`` in Flax, so kernels are transposed both ways.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = [
    "check_tensor_names",
    "hf_name",
    "params_from_hf_names",
    "params_to_hf",
    "params_to_hf_names",
    "uniform_widths",
]


def check_tensor_names(
    present: Iterable[str], expected: Iterable[str], ignore: Callable[[str], bool], model: str
) -> None:
    """Checks a checkpoint's tensor names against those a model needs.

    Args:
      present: the checkpoint's tensor names.
      expected: the names the model needs.
      ignore: names the checkpoint may carry that are not parameters (a tied ``lm_head``, rotary
        buffers).
      model: the model, for the message (``"an 18-layer Gemma 3 model"``).

    Raises:
      ValueError: naming the missing and the unexpected tensors.
    """
    present, expected = set(present), set(expected)
    missing = sorted(expected - present)
    unexpected = sorted(n for n in present - expected if not ignore(n))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint tensors do not match {model}: missing {_preview(missing)}; "
            f"unexpected {_preview(unexpected)}"
        )


def _preview(names: list[str], limit: int = 8) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def hf_name(keys: tuple[Any, ...], prefix: str = "model.") -> str:
    """The Hugging Face name of a params leaf.

    ``("layers", 0, "mlp", "up_proj", "kernel")`` → ``"model.layers.0.mlp.up_proj.weight"``;
    ``kernel``/``scale``/``embedding`` leaves are ``weight``, biases ``bias``; the LM head sits
    outside ``prefix``.
    """
    *module, leaf = (str(k) for k in keys)
    name = ".".join([*module, "bias" if leaf == "bias" else "weight"])
    return name if module == ["lm_head"] else f"{prefix}{name}"


def params_from_hf_names(
    tensors: Mapping[str, np.ndarray],
    module: Callable[[], nnx.Module],
    dtype: Any,
    *,
    model: str,
    ignore: Callable[[str], bool] = lambda name: False,
    prefix: str = "model.",
) -> dict[str, Any]:
    """Params of ``module()``'s exact tree read from Hugging Face tensors by :func:`hf_name`.

    Args:
      tensors: name → array in Hugging Face layout (read lazily, one at a time).
      module: builds the family's module for the config (only its shapes are used).
      dtype: dtype of the returned arrays.
      model: the model, for messages (``"a 2-layer Qwen2 model"``).
      ignore: names the checkpoint may carry that are not parameters.
      prefix: the names' prefix (``"model."``).

    Raises:
      ValueError: naming missing, unexpected or misshapen tensors.
    """
    shapes = nnx.to_pure_dict(nnx.state(nnx.eval_shape(module), nnx.Param))
    leaves = jax.tree_util.tree_flatten_with_path(shapes)[0]
    names = [hf_name(tuple(k.key for k in path), prefix) for path, _ in leaves]
    check_tensor_names(tensors, names, ignore, model)

    def convert(path, spec):
        name = hf_name(tuple(k.key for k in path), prefix)
        # Arrays as given (numpy, or tracers when the sliced loader traces this conversion).
        value, kernel = tensors[name], path[-1].key == "kernel"
        expected = tuple(spec.shape[::-1] if kernel else spec.shape)
        if tuple(value.shape) != expected:
            raise ValueError(f"tensor {name} has shape {tuple(value.shape)}, expected {expected}")
        return jnp.asarray(value.T if kernel else value, dtype=dtype)

    return jax.tree_util.tree_map_with_path(convert, shapes)


def params_to_hf_names(params: Mapping[str, Any], prefix: str = "model.") -> dict[str, jax.Array]:
    """Hugging Face name → array for every leaf of ``params`` (kernels back to ``(out, in)``)."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    tensors = {}
    for path, value in leaves:
        keys = tuple(k.key for k in path)
        tensors[hf_name(keys, prefix)] = jnp.asarray(value.T if keys[-1] == "kernel" else value)
    return tensors


def params_to_hf(params: Mapping[str, Any], config: Any) -> dict[str, jax.Array]:
    """``HfSpec.params_to_hf`` of the families whose names all follow :func:`hf_name`."""
    del config  # the names follow the params' tree
    return params_to_hf_names(params)


def uniform_widths(config: Any, names: tuple[str, str, str]) -> dict[str, int]:
    """``{names[k]: width}`` of a config whose blocks all have the same widths.

    Args:
      config: a config with ``layer_widths(i)`` (query heads, key/value heads, MLP width).
      names: the Hugging Face keys of the three widths (``num_attention_heads``,
        ``num_key_value_heads``, ``intermediate_size``).

    Raises:
      ValueError: naming the first block whose widths differ from block 0's.
    """
    first = dict(zip(names, config.layer_widths(0), strict=True))
    for i in range(1, config.num_hidden_layers):
        widths = dict(zip(names, config.layer_widths(i), strict=True))
        if widths != first:
            differ = {k: (first[k], widths[k]) for k in names if widths[k] != first[k]}
            raise ValueError(
                f"cannot export to Hugging Face: block {i} has {differ} (block 0 first), and "
                "transformers' config holds one width of each kind for every block; prune every "
                "block to the same widths (per-block allocation over all blocks), or export to a "
                "format that holds per-layer widths"
            )
    return first
