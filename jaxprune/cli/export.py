"""``jaxprune export``: write a model for transformers, vLLM or llama.cpp (``--format``)."""

from __future__ import annotations

import argparse
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


def refuse_unexportable(model: str, fmt: str | None) -> str:
    """The format to write, or exit 2 before any weight is read when the model's config is one
    the format cannot hold (blocks of different widths, biases transformers' class lacks); reads
    only config.json or the GGUF header."""
    from jaxprune.models.export import check_hf_export
    from jaxprune.models.export_formats import check_format
    from jaxprune.models.loaders.configs import read_config

    try:
        config = read_config(model)
        if config is None:  # an embedded model: dense, every block the same widths
            return fmt or "hf"
        fmt = check_format(fmt, config)
        if fmt in ("hf", "compressed-tensors"):
            check_hf_export(config)
    except ValueError as e:
        raise UsageError(f"{model}: {e}") from None
    return fmt


def run(args: argparse.Namespace) -> None:
    from jaxprune.models.export import check_hf_export, config_with_param_widths
    from jaxprune.models.export_formats import export_model
    from jaxprune.models.loaders import load_pretrained

    check_model(args.model)
    if Path(args.out).exists() and not args.overwrite:
        raise UsageError(f"--out {args.out} exists; choose a new path or pass --overwrite")
    fmt = refuse_unexportable(args.model, args.format)
    pretrained = load_pretrained(args.model)
    try:
        if fmt in ("hf", "compressed-tensors"):  # widths the params have but the config lacks
            check_hf_export(config_with_param_widths(pretrained.model, pretrained.params))
        summary = export_model(
            args.out,
            pretrained.model,
            pretrained.params,
            pretrained.tokenizer,
            format=fmt,
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
