"""jaxprune: pruning for JAX/Flax, large language models first.

The public API, one import away::

    import jaxprune as jp

    pre = jp.load_pretrained("smollm2-135m")                     # model, params, tokenizer
    calib = jp.load_windows("shakespeare-calib", pre.tokenizer, nsamples=64, seqlen=512,
                            split="calib")
    params, masks, report = jp.prune(pre.model, pre.params, calib,
                                     jp.Recipe(method="sparsegpt", sparsity=0.5))

Names are resolved lazily so that ``import jaxprune`` stays cheap and optional packages (``gguf``,
``datasets``, ``transformers``) are imported only by the features that use them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "prune": "jaxprune.engine",
    "PruneResult": "jaxprune.engine",
    "Recipe": "jaxprune.recipes",
    "Unstructured": "jaxprune.sparsity",
    "NM": "jaxprune.sparsity",
    "parse_target": "jaxprune.sparsity",
    "LanguageModel": "jaxprune.models",
    "LlamaConfig": "jaxprune.models",
    "load_pretrained": "jaxprune.models.loaders",
    "Pretrained": "jaxprune.models.loaders",
    "load_windows": "jaxprune.data",
    "perplexity": "jaxprune.eval",
    "save_checkpoint": "jaxprune.checkpoint",
    "load_checkpoint": "jaxprune.checkpoint",
    "save_pruned": "jaxprune.checkpoint",
    "get_method": "jaxprune.methods",
}
_SUBMODULES = ("masks", "allocation", "methods", "models", "data", "eval", "checkpoint", "engine")

__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxprune.{name}")
    raise AttributeError(f"module 'jaxprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
