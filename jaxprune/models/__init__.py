"""Flax model families and their loaders.

Each family is one file (``llama.py``, ``opt.py``, ``gemma3.py``, ``qwen2.py``, ``qwen3.py``,
``phi3.py``, ``mixtral.py``, ``qwen3_moe.py``; mixture-of-experts modules in ``moe.py``) that
ends by registering its
:class:`~jaxprune.models.base.Family` record: taps and sequential groups, partition rules, MLP
roles and Hugging Face mapping. Importing this package imports (and so registers) every built-in
family; a new family is one file plus one import line here.
"""

# Importing a family registers it.
from jaxprune.models import gemma3, llama, mixtral, opt, phi3, qwen2, qwen3, qwen3_moe  # noqa: F401
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
from jaxprune.models.gemma3 import Gemma3ForCausalLM
from jaxprune.models.gemma3_config import Gemma3Config
from jaxprune.models.llama import LlamaConfig, LlamaForCausalLM
from jaxprune.models.mixtral import MixtralConfig
from jaxprune.models.moe import MoeConfig, MoeForCausalLM
from jaxprune.models.opt import OPTConfig, OPTForCausalLM
from jaxprune.models.phi3 import Phi3Config
from jaxprune.models.qwen2 import Qwen2Config
from jaxprune.models.qwen3 import Qwen3Config
from jaxprune.models.qwen3_moe import Qwen3MoeConfig

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
    "MixtralConfig",
    "MlpSpec",
    "MoeConfig",
    "MoeForCausalLM",
    "OPTConfig",
    "OPTForCausalLM",
    "Phi3Config",
    "Qwen2Config",
    "Qwen3Config",
    "Qwen3MoeConfig",
    "StructureSpec",
    "config_from_dict",
    "config_to_dict",
    "family_for_model_type",
    "family_of",
    "gemma3",
    "llama",
    "mixtral",
    "opt",
    "phi3",
    "qwen2",
    "qwen3",
    "qwen3_moe",
    "register_family",
]
