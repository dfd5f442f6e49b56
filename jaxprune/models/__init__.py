"""Flax model families and their loaders.

Each family is one file (``llama.py``, ``opt.py``, ``gemma3.py``) that ends by registering its
:class:`~jaxprune.models.base.Family` record: taps and sequential groups, partition rules, MLP
roles and Hugging Face mapping. Importing this package imports (and so registers) every built-in
family; a new family is one file plus one import line here.
"""

# Importing a family registers it.
from jaxprune.models import gemma3, llama, opt  # noqa: F401
from jaxprune.models.base import (
    FAMILIES,
    Family,
    GgufSpec,
    HfSpec,
    LanguageModel,
    LayerWidths,
    MlpSpec,
    StructureSpec,
    config_from_dict,
    config_to_dict,
    family_for_model_type,
    family_of,
    register_family,
)
from jaxprune.models.gemma3 import Gemma3Config, Gemma3ForCausalLM
from jaxprune.models.llama import LlamaConfig, LlamaForCausalLM
from jaxprune.models.opt import OPTConfig, OPTForCausalLM

__all__ = [
    "FAMILIES",
    "Family",
    "Gemma3Config",
    "Gemma3ForCausalLM",
    "GgufSpec",
    "HfSpec",
    "LanguageModel",
    "LayerWidths",
    "LlamaConfig",
    "LlamaForCausalLM",
    "MlpSpec",
    "OPTConfig",
    "OPTForCausalLM",
    "StructureSpec",
    "config_from_dict",
    "config_to_dict",
    "family_for_model_type",
    "family_of",
    "gemma3",
    "llama",
    "opt",
    "register_family",
]
