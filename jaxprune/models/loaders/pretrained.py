"""What every loader returns: a model, its params and its tokenizer."""

from __future__ import annotations

import dataclasses

from jaxprune.models.base import LanguageModel, Params
from jaxprune.models.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A loaded model.

    Attributes:
      model: applies the family's modules to ``params``.
      params: nested-dict params (Flax ``(in, out)`` kernels, Hugging Face names).
      tokenizer: the model's tokenizer, or ``None`` if the source carries none.
      source: where it was loaded from (a name or a path).
    """

    model: LanguageModel
    params: Params
    tokenizer: Tokenizer | None
    source: str


__all__ = ["Pretrained"]
