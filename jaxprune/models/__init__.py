"""Flax model families and their loaders."""

from jaxprune.models.base import LanguageModel, config_from_dict, config_to_dict, family_of
from jaxprune.models.llama import LlamaConfig, LlamaForCausalLM

__all__ = [
    "LanguageModel",
    "LlamaConfig",
    "LlamaForCausalLM",
    "config_from_dict",
    "config_to_dict",
    "family_of",
]
