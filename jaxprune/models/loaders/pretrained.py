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

    def bos_token(self, enabled: bool = True) -> int | None:
        """The BOS id every sequence starts with, or ``None``.

        Only for a family that expects one (``Family.bos``, e.g. Gemma) and a tokenizer that
        names it; ``enabled=False`` (``--no-bos``) always gives ``None``.
        """
        if not enabled or not self.model.family.bos or self.tokenizer is None:
            return None
        return self.tokenizer.bos_token_id


__all__ = ["Pretrained"]
