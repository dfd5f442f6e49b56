"""``jaxprune export``: write a model as a Hugging Face directory transformers loads."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from jaxprune.cli._args import UsageError, check_model, emit


def add_parser(sub: Any, model_help: str, sources: str) -> None:
    ex = sub.add_parser(
        "export",
        help="write config.json, model.safetensors and the tokenizer for transformers' "
        "AutoModelForCausalLM; prints a summary (--json: one JSON line)",
    )
    ex.add_argument("--model", required=True, help=model_help)
    ex.add_argument("--out", required=True, help="the Hugging Face directory to create")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    ex.add_argument("--json", action="store_true", help="print the result as one JSON line")
    ex.set_defaults(func=run)


def refuse_unexportable(model: str) -> None:
    """Exit 2 before any weight is read when the model's config is one transformers cannot hold
    (blocks of different widths, biases its class lacks); reads only config.json or the GGUF
    header."""
    from jaxprune.models.export import check_hf_export
    from jaxprune.models.loaders.configs import read_config

    try:
        config = read_config(model)
        if config is not None:
            check_hf_export(config)
    except ValueError as e:
        raise UsageError(f"{model}: {e}") from None


def run(args: argparse.Namespace) -> None:
    from jaxprune.models.export import check_hf_export, config_with_param_widths, export_hf
    from jaxprune.models.loaders import load_pretrained

    check_model(args.model)
    if Path(args.out).exists() and not args.overwrite:
        raise UsageError(f"--out {args.out} exists; choose a new directory or pass --overwrite")
    refuse_unexportable(args.model)
    pretrained = load_pretrained(args.model)
    try:  # widths the params have but the config does not say (sliced without a new config)
        check_hf_export(config_with_param_widths(pretrained.model, pretrained.params))
    except ValueError as e:
        raise UsageError(f"{args.model}: {e}") from None
    summary = export_hf(
        args.out,
        pretrained.model,
        pretrained.params,
        pretrained.tokenizer,
        overwrite=args.overwrite,
    )
    result = {
        "model": args.model,
        "out": summary["path"],
        "tensors": summary["tensors"],
        "bytes": summary["bytes"],
    }
    emit(
        args,
        result,
        f"{args.model}: exported {result['tensors']} tensors "
        f"({result['bytes'] / 2**20:.1f} MiB) to {result['out']} for transformers",
    )
