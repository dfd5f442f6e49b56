"""Export to Hugging Face: ``config.json``, ``model.safetensors`` and the tokenizer.

The directory loads with transformers' ``AutoModelForCausalLM.from_pretrained(directory)`` (and
back into jaxprune with ``load_pretrained``). Kernels go back to PyTorch's ``(out, in)`` layout;
pruned entries stay zeros (a dense tensor: transformers has no sparse storage).

The widths written into ``config.json`` are read from the params, not the config, so a model
whose heads or MLP channels were removed exports with its real sizes — as long as every block has
the same sizes, since transformers' LLaMA config holds one ``intermediate_size`` and one head count
for all blocks; a model whose blocks differ is refused with the widths that differ.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from jaxprune.models.base import Params

_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


def block_widths(params: Params, head_dim: int) -> list[dict[str, int]]:
    """Per block: ``num_attention_heads``, ``num_key_value_heads``, ``intermediate_size``."""
    widths = []
    for i in sorted(params["layers"]):
        block = params["layers"][i]
        widths.append(
            {
                "num_attention_heads": block["self_attn"]["q_proj"]["kernel"].shape[1] // head_dim,
                "num_key_value_heads": block["self_attn"]["k_proj"]["kernel"].shape[1] // head_dim,
                "intermediate_size": block["mlp"]["gate_proj"]["kernel"].shape[1],
            }
        )
    return widths


def llama_hf_config(config: Any, params: Params) -> dict[str, Any]:
    """The ``config.json`` of a LLaMA-family model, widths taken from ``params``.

    Raises:
      ValueError: blocks of different widths (transformers cannot represent them).
    """
    widths = block_widths(params, config.head_dim)
    for i, w in enumerate(widths):
        if w != widths[0]:
            differ = {k: (widths[0][k], w[k]) for k in w if w[k] != widths[0][k]}
            raise ValueError(
                f"cannot export to Hugging Face: block {i} has {differ} (block 0 first), and "
                "transformers' LlamaConfig holds one intermediate_size and one head count for "
                "every block; shrink all blocks to the same widths to export"
            )
    c = config.to_dict()
    out = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        # FLAP's compensation gives LLaMA linears biases (a whole group's, as in transformers).
        "attention_bias": bool(c.get("attention_bias", False)),
        "mlp_bias": bool(c.get("mlp_bias", False)),
        **{k: c[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "head_dim")},
        **widths[0],
        **{k: c[k] for k in ("rms_norm_eps", "rope_theta", "tie_word_embeddings")},
        "max_position_embeddings": c["max_position_embeddings"],
        "bos_token_id": c["bos_token_id"],
        "eos_token_id": c["eos_token_id"],
    }
    if c.get("rope_scaling"):
        out["rope_scaling"] = {"rope_type": "llama3", **dict(c["rope_scaling"])}
    return out


def llama_hf_tensors(params: Params, config: Any) -> dict[str, Any]:
    """Hugging Face names → arrays (linear weights ``(out, in)``)."""
    tensors = {
        "model.embed_tokens.weight": params["embed_tokens"]["embedding"],
        "model.norm.weight": params["norm"]["scale"],
    }
    if not config.tie_word_embeddings:
        tensors["lm_head.weight"] = params["lm_head"]["kernel"].T
    for i in sorted(params["layers"]):
        block, prefix = params["layers"][i], f"model.layers.{i}"
        for group, names in (("self_attn", _ATTN), ("mlp", _MLP)):
            for name in names:
                kernel = block[group][name]["kernel"]
                tensors[f"{prefix}.{group}.{name}.weight"] = kernel.T
                if "bias" in block[group][name]:
                    tensors[f"{prefix}.{group}.{name}.bias"] = block[group][name]["bias"]
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"{prefix}.{norm}.weight"] = block[norm]["scale"]
    return {k: jnp.asarray(v) for k, v in tensors.items()}


def _tokenizer_files(tokenizer: Any, directory: Path) -> None:
    tokenizer.save(directory)
    vocab = tokenizer.backend
    special = {}
    for kind in ("bos", "eos"):
        token_id = getattr(tokenizer, f"{kind}_token_id")
        if token_id is not None:
            special[f"{kind}_token"] = vocab.id_to_token(token_id)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False, **special}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def export_hf(
    directory: str | os.PathLike,
    model: Any,
    params: Params,
    tokenizer: Any = None,
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Writes a Hugging Face model directory that transformers' torch classes load.

    Args:
      directory: the directory to create (atomically: nothing is left there on failure).
      model: the :class:`jaxprune.models.LanguageModel` (its config; LLaMA family).
      params: its params (dense, pruned or structurally shrunk with equal blocks).
      tokenizer: a :class:`jaxprune.models.tokenizer.Tokenizer`, or ``None``.
      overwrite: replace an existing directory.

    Returns:
      ``{"path", "config", "tensors", "bytes"}``.

    Raises:
      ValueError: a family other than LLaMA, blocks of different widths, or an existing target.
    """
    from safetensors.flax import save_file

    config = model.config
    if getattr(config, "family", None) != "llama":
        raise ValueError(
            f"Hugging Face export supports the llama family (LLaMA, Mistral, SmolLM); this model "
            f"is {getattr(config, 'family', None)!r}"
        )
    target = Path(directory).absolute()
    if target.exists() and not overwrite:
        raise ValueError(f"{target} exists; choose a new directory or pass overwrite=True")
    hf_config = llama_hf_config(config, params)
    tensors = llama_hf_tensors(params, config)
    dtypes = {str(v.dtype) for v in tensors.values()}
    hf_config["torch_dtype"] = dtypes.pop() if len(dtypes) == 1 else "float32"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            _tokenizer_files(tokenizer, tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(f.stat().st_size for f in target.iterdir() if f.is_file())
    return {"path": str(target), "config": hf_config, "tensors": len(tensors), "bytes": size}


__all__ = ["block_widths", "export_hf", "llama_hf_config", "llama_hf_tensors"]
