"""A model's config without its weights, so commands can refuse what they cannot do first."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jaxprune.models.base import (
    config_from_dict,
    family_for_gguf_architecture,
    family_for_model_type,
)
from jaxprune.models.loaders import check_source

__all__ = ["read_config"]


def read_config(name_or_path: str | os.PathLike) -> Any | None:
    """The config of a model source, read from ``config.json`` or the GGUF header only.

    Args:
      name_or_path: any source :func:`jaxprune.models.loaders.load_pretrained` accepts.

    Returns:
      The family config, or ``None`` for an embedded model (known dense models, fetched on load).

    Raises:
      ValueError: the source is not a model, or its config is one no family reads.
    """
    kind = check_source(name_or_path)
    path = Path(name_or_path)
    if kind == "embedded":
        return None
    if kind == "checkpoint":
        return config_from_dict(json.loads((path / "config.json").read_text()))
    if kind == "gguf":
        import gguf

        from jaxprune.models.loaders.gguf import alias_architecture, hf_config

        reader = gguf.GGUFReader(path)
        meta = alias_architecture({name: field.contents() for name, field in reader.fields.items()})
        family = family_for_gguf_architecture(meta.get("general.architecture"))
        tensors = {t.name: t for t in reader.tensors}
        return family.hf.config_from_hf(hf_config(meta, tensors, family.gguf, path))
    hf = json.loads((path / "config.json").read_text())
    return family_for_model_type(hf.get("model_type")).hf.config_from_hf(hf)
