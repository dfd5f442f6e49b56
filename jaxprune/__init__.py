"""jaxprune: pruning for JAX/Flax, large language models first.

The public API, one import away::

    import jaxprune as jp

    pre = jp.load_pretrained("smollm2-135m")                     # model, params, tokenizer
    calib = jp.load_windows("shakespeare-calib", pre.tokenizer, nsamples=64, seqlen=512,
                            split="calib", bos=pre.bos_token())  # BOS where the family wants it
    result = jp.prune(pre.model, pre.params, calib, jp.Recipe(method="sparsegpt", sparsity=0.5))
    result.params, result.masks, result.report                   # pruned params, keep-masks, report

    # or the whole job (load, calibrate, prune, evaluate) in one call
    pruned = jp.prune_pretrained("smollm2-135m", jp.Recipe(method="wanda", sparsity="2:4"),
                                 eval_source="shakespeare-hamlet")

Names are resolved lazily so that ``import jaxprune`` stays cheap and optional packages (``gguf``,
``datasets``, ``transformers``) are imported only by the features that use them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from typing import Any

try:
    __version__ = importlib.metadata.version("jaxprune")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "prune": "jaxprune.engine",
    "PruneResult": "jaxprune.engine",
    "prune_pretrained": "jaxprune.pipeline",
    "PrunedModel": "jaxprune.pipeline",
    "Recipe": "jaxprune.recipes",
    "prune_structured": "jaxprune.structured",
    "StructuredRecipe": "jaxprune.structured",
    "StructuredResult": "jaxprune.structured",
    "Unstructured": "jaxprune.core.sparsity",
    "NM": "jaxprune.core.sparsity",
    "parse_target": "jaxprune.core.sparsity",
    "LanguageModel": "jaxprune.models",
    "LlamaConfig": "jaxprune.models",
    "OPTConfig": "jaxprune.models",
    "load_pretrained": "jaxprune.models.loaders",
    "Pretrained": "jaxprune.models.loaders",
    "load_pruned": "jaxprune.models.loaders",
    "save_pruned": "jaxprune.models.loaders",
    "load_windows": "jaxprune.data",
    "load_images": "jaxprune.data.images",
    "keep_masks": "jaxprune.training",
    "load_vit": "jaxprune.models.loaders.vit",
    "prune_tokens": "jaxprune.token_pruning",
    "TokenSchedule": "jaxprune.token_pruning",
    "LoraConfig": "jaxprune.training",
    "RecoverConfig": "jaxprune.training",
    "recover": "jaxprune.training",
    "recover_pretrained": "jaxprune.pipeline",
    "evaluate_zero_shot": "jaxprune.pipeline",
    "load_task": "jaxprune.data.zeroshot",
    "export_hf": "jaxprune.models.export",
    "export_model": "jaxprune.models.export_formats",
    "export_gguf": "jaxprune.models.export_gguf",
    "export_nemotron_nas": "jaxprune.models.export_nemotron",
    "export_compressed": "jaxprune.models.export_compressed",
    "save_peft": "jaxprune.training.lora_peft",
    "plot_report": "jaxprune.eval.plots",
    "sparse_training": "jaxprune.training",
    "VisionModel": "jaxprune.models.vision",
    "perplexity": "jaxprune.eval",
    "save_checkpoint": "jaxprune.checkpoint",
    "load_checkpoint": "jaxprune.checkpoint",
    "get_method": "jaxprune.methods",
    "register_method": "jaxprune.methods",
    "refined": "jaxprune.methods",
    "Method": "jaxprune.methods",
    "make_mesh": "jaxprune.sharding",
}
# Subpackages and modules reachable as attributes (``jp.sharding``); ``masks`` and ``sparsity``
# live in ``jaxprune.core``.
_SUBMODULES = {
    name: f"jaxprune.{name}"
    for name in (
        "allocation",
        "analysis",
        "checkpoint",
        "core",
        "data",
        "engine",
        "eval",
        "federated",
        "methods",
        "models",
        "pipeline",
        "recipes",
        "sharding",
        "structured",
        "token_pruning",
        "training",
    )
} | {"masks": "jaxprune.core.masks", "sparsity": "jaxprune.core.sparsity"}

__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    if name == "tokens":  # renamed: ``jaxprune.data`` has token ids, this is ViT token pruning
        warnings.warn(
            "jaxprune.tokens is deprecated; use jaxprune.token_pruning", DeprecationWarning, 2
        )
        return importlib.import_module("jaxprune.token_pruning")
    raise AttributeError(f"module 'jaxprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
