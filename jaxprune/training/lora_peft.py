"""LoRA adapters in PEFT's format: ``adapter_config.json`` + ``adapter_model.safetensors``.

PEFT's ``PeftModel.from_pretrained(base, directory)`` loads them onto the exported base model
(:func:`jaxprune.export_hf` of the model the adapters were trained on) and computes
``W x + (alpha / r) · B A x``, the unmerged model of :func:`~jaxprune.training.lora.lora_logits`::

    save_peft("adapters/", model, result.lora, config.lora, base_model="base/")

    base = AutoModelForCausalLM.from_pretrained("base/")
    tuned = PeftModel.from_pretrained(base, "adapters/")

Tensor names follow PEFT's (as levanter's ``save_peft_pretrained`` writes them):
``base_model.model.<module>.lora_A.weight`` ``(r, in)`` and ``lora_B.weight`` ``(out, r)``, the
transposes of our Flax ``A (in, r)`` and ``B (r, out)``. ``target_modules`` lists every adapted
module by its full name, so adapters on some blocks only load onto exactly those.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jaxprune.core.files import atomic_target, new_target, write_json, written_directory
from jaxprune.training.lora import LoraConfig, adapters

__all__ = ["module_name", "peft_config", "save_peft"]


def module_name(path: str) -> str:
    """The Hugging Face module of a LLaMA-family kernel path (``layers/3/mlp/up_proj/kernel``)."""
    parts = path.split("/")
    if parts[-1] != "kernel":
        raise ValueError(f"{path!r} is not a kernel path")
    name = ".".join(parts[:-1])
    return name if name == "lm_head" else f"model.{name}"


def peft_config(lora: Any, config: LoraConfig, base_model: str | None = None) -> dict[str, Any]:
    """The ``adapter_config.json`` of an adapter tree."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": config.rank,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": sorted(module_name(p) for p in adapters(lora)),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
    }


def save_peft(
    directory: str | os.PathLike,
    model: Any,
    lora: Any,
    config: LoraConfig,
    *,
    base_model: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Writes the adapters as a PEFT directory (atomically).

    Args:
      directory: the directory to create.
      model: the :class:`~jaxprune.models.LanguageModel` the adapters belong to (LLaMA family:
        its params carry Hugging Face's module names).
      lora: the adapter tree (``RecoverResult.lora``).
      config: its :class:`~jaxprune.training.lora.LoraConfig` (rank, alpha, dropout).
      base_model: recorded as ``base_model_name_or_path`` (the exported base directory).
      overwrite: replace an existing directory.

    Returns:
      ``{"path", "config", "tensors", "bytes"}``.

    Raises:
      ValueError: a family other than LLaMA, or an existing target.
    """
    from safetensors.numpy import save_file

    family = getattr(model.config, "family", None)
    if family != "llama":
        raise ValueError(
            f"PEFT adapters are written for the llama family (Hugging Face module names); this "
            f"model is {family!r}"
        )
    target = new_target(directory, overwrite)
    tensors = {}
    for path, (a, b) in adapters(lora).items():
        prefix = f"base_model.model.{module_name(path)}"
        tensors[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(np.asarray(a).T)
        tensors[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(np.asarray(b).T)
    adapter_config = peft_config(lora, config, base_model)
    with atomic_target(target) as tmp:
        write_json(tmp / "adapter_config.json", adapter_config)
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    return written_directory(target, adapter_config, len(tensors))
