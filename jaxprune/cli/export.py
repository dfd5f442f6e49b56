"""``jaxprune export``: write a model for transformers, vLLM or llama.cpp (``--format``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from jaxprune.cli._args import UsageError, check_model, emit

_RUNS_IN = {
    "hf": "transformers' AutoModelForCausalLM and vLLM",
    "gguf": "llama.cpp and jaxprune",
    "nemotron-nas": "vLLM (transformers: trust_remote_code with NVIDIA's modeling_decilm.py)",
    "compressed-tensors": "vLLM and llm-compressor (compressed-tensors <= 0.14 decompresses it)",
}


def add_parser(sub: Any, model_help: str, sources: str) -> None:
    from jaxprune.models.export_formats import FORMATS

    ex = sub.add_parser(
        "export",
        help="write the model for transformers, vLLM or llama.cpp (--format); prints a summary "
        "(--json: one JSON line)",
    )
    ex.add_argument("--model", required=True, help=model_help)
    ex.add_argument("--out", required=True, help="the directory (or .gguf file) to create")
    ex.add_argument(
        "--format",
        choices=FORMATS,
        help="hf: config.json + safetensors for transformers/vLLM, every block the same widths "
        "(default when they are); gguf: one llama.cpp file, per-layer widths allowed (default "
        "when blocks differ); nemotron-nas: DeciLMForCausalLM directory for uneven widths, "
        "loaded natively by vLLM but by transformers only with trust_remote_code=True and "
        "NVIDIA's modeling_decilm.py; compressed-tensors: hf with the pruned linears stored "
        "sparse (bitmask, or 2:4), opt-in",
    )
    ex.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    ex.add_argument("--json", action="store_true", help="print the result as one JSON line")
    ex.set_defaults(func=run)


def config_before_loading(model: str) -> Any:
    """The model config read without its weights: a jaxprune checkpoint's ``config.json`` or a
    GGUF header; ``None`` for other sources (their blocks all have the same widths)."""
    from jaxprune.models import config_from_dict
    from jaxprune.models.loaders import check_source

    kind = check_source(model)
    if kind == "checkpoint":
        return config_from_dict(json.loads((Path(model) / "config.json").read_text()))
    if kind == "gguf":
        import gguf

        from jaxprune.models.base import family_for_gguf_architecture
        from jaxprune.models.loaders.gguf import alias_architecture, hf_config

        reader = gguf.GGUFReader(model)
        meta = alias_architecture({k: f.contents() for k, f in reader.fields.items()})
        family = family_for_gguf_architecture(meta.get("general.architecture"))
        tensors = {t.name: t for t in reader.tensors}
        return family.hf.config_from_hf(hf_config(meta, tensors, family.gguf, Path(model)))
    return None


def run(args: argparse.Namespace) -> None:
    from jaxprune.models.export_formats import check_format, export_model
    from jaxprune.models.loaders import load_pretrained

    check_model(args.model)
    if Path(args.out).exists() and not args.overwrite:
        raise UsageError(f"--out {args.out} exists; choose a new path or pass --overwrite")
    try:
        config = config_before_loading(args.model)
        if config is not None:
            check_format(args.format, config)
    except ValueError as err:
        raise UsageError(f"{args.model}: {err}") from None
    pretrained = load_pretrained(args.model)
    try:
        summary = export_model(
            args.out,
            pretrained.model,
            pretrained.params,
            pretrained.tokenizer,
            format=args.format,
            overwrite=args.overwrite,
        )
    except ValueError as err:
        raise UsageError(f"{args.model}: {err}") from None
    result = {
        "model": args.model,
        "out": summary["path"],
        "format": summary["format"],
        "tensors": summary["tensors"],
        "bytes": summary["bytes"],
    }
    emit(
        args,
        result,
        f"{args.model}: exported {result['tensors']} tensors as {result['format']} "
        f"({result['bytes'] / 2**20:.1f} MiB) to {result['out']} for {_RUNS_IN[result['format']]}",
    )
