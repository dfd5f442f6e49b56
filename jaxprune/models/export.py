"""Export to Hugging Face: ``config.json``, ``model.safetensors`` and the tokenizer.

The directory loads with transformers' ``AutoModelForCausalLM.from_pretrained(directory)`` (and
back into jaxprune with ``load_pretrained``). The model's family record converts both ways
(``HfSpec.config_to_hf``/``params_to_hf`` beside ``config_from_hf``/``params_from_hf``): kernels
go back to PyTorch's ``(out, in)`` layout (fused where transformers fuses them, Phi-3); pruned
entries stay zeros (a dense tensor: transformers has no sparse storage).

The widths written into ``config.json`` are read from the params, not the config, so a model
whose heads or MLP channels were removed exports with its real sizes — as long as every block has
the same sizes, since transformers' configs hold one head count and one MLP width for all blocks;
a model whose blocks differ is refused with the widths that differ (other formats hold them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jaxprune.core.files import atomic_target, new_target, write_json, written_directory
from jaxprune.models.base import Family, LanguageModel, LayerWidths, Params, family_of

__all__ = [
    "check_hf_export",
    "config_with_param_widths",
    "export_hf",
    "hf_config",
    "hf_directory",
    "hf_tensors",
    "write_hf_directory",
]


def _hf_spec(config: Any) -> Any:
    family: Family = family_of(config)
    if family.hf is None or family.hf.config_to_hf is None or family.hf.params_to_hf is None:
        raise ValueError(f"the {family.name} family has no Hugging Face export")
    return family.hf


def config_with_param_widths(model: LanguageModel, params: Params) -> Any:
    """``model.config`` with the widths ``params`` really have (read from the shapes).

    A model whose heads or channels were sliced out of its params without a new config exports
    with the sizes it computes with.
    """
    structure, config = model.family.structure, model.config
    if structure is None:
        return config
    widths = []
    for i in range(model.num_blocks):
        block = model.block_params(params, i)

        def width(path: str, block: Params = block) -> int:
            node = block
            for key in path.split("/"):
                node = node[key]
            return int(node["kernel"].shape[1])

        widths.append(
            LayerWidths(
                width(structure.query) // config.head_dim,
                width(structure.key) // config.head_dim,
                width(structure.mlp_in[0]),
            )
        )
    if widths == [config.layer_widths(i) for i in range(model.num_blocks)]:
        return config
    return config.with_layer_widths(widths)


def check_hf_export(config: Any) -> None:
    """Refuses, before any weight is read, a config transformers' classes cannot hold.

    Raises:
      ValueError: a family without Hugging Face export, blocks of different widths, or a feature
        the family's transformers class lacks (for example FLAP's MLP biases on Gemma 3).
    """
    _hf_spec(config).config_to_hf(config)


def hf_config(config: Any) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` (through its family record)."""
    return _hf_spec(config).config_to_hf(config)


def hf_tensors(params: Params, config: Any) -> dict[str, Any]:
    """Hugging Face name → array (linear weights ``(out, in)``) through the family record."""
    return _hf_spec(config).params_to_hf(params, config)


def _tokenizer_files(tokenizer: Any, directory: Path) -> None:
    tokenizer.save(directory)
    vocab = tokenizer.backend
    special = {}
    for kind in ("bos", "eos"):
        token_id = getattr(tokenizer, f"{kind}_token_id")
        if token_id is not None:
            special[f"{kind}_token"] = vocab.id_to_token(token_id)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False, **special}
    write_json(directory / "tokenizer_config.json", config)


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
      model: the :class:`jaxprune.models.LanguageModel` (any family whose record has
        ``HfSpec.config_to_hf``: llama/mistral, qwen2, qwen3, phi3, gemma3, opt).
      params: its params (dense, pruned or structurally shrunk with equal blocks).
      tokenizer: a :class:`jaxprune.models.tokenizer.Tokenizer`, or ``None``.
      overwrite: replace an existing directory.

    Returns:
      ``{"path", "config", "tensors", "bytes"}``.

    Raises:
      ValueError: before anything is written, for what transformers cannot hold (see
        :func:`check_hf_export`), or an existing target.
    """
    target = new_target(directory, overwrite)
    config_json, tensors = hf_directory(model, params)
    with atomic_target(target) as tmp:
        write_hf_directory(tmp, config_json, tensors, tokenizer)
    return written_directory(target, config_json, len(tensors))


def hf_directory(model: Any, params: Params) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``config.json`` dict (widths from ``params``, ``torch_dtype`` set) and the tensors.

    Raises:
      ValueError: what :func:`check_hf_export` refuses.
    """
    config = config_with_param_widths(model, params)
    config_json = hf_config(config)
    tensors = hf_tensors(params, config)
    dtypes = {str(v.dtype) for v in tensors.values()}
    config_json["torch_dtype"] = dtypes.pop() if len(dtypes) == 1 else "float32"
    return config_json, tensors


def write_hf_directory(
    directory: Path, config_json: dict[str, Any], tensors: dict[str, Any], tokenizer: Any
) -> None:
    """Writes ``config.json``, ``model.safetensors`` and the tokenizer into ``directory``."""
    from safetensors.flax import save_file

    write_json(directory / "config.json", config_json)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        _tokenizer_files(tokenizer, directory)
