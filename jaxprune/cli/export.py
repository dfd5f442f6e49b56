"""``jaxprune export``: write a model as a Hugging Face directory transformers loads."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from jaxprune.cli._args import UsageError, check_model


def add_parser(sub: Any, model_help: str, sources: str) -> None:
    ex = sub.add_parser(
        "export",
        help="write config.json, model.safetensors and the tokenizer for transformers' "
        "AutoModelForCausalLM; prints a JSON summary",
    )
    ex.add_argument("--model", required=True, help=model_help)
    ex.add_argument("--out", required=True, help="the Hugging Face directory to create")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    ex.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from jaxprune.models.export import export_hf
    from jaxprune.models.loaders import load_pretrained

    check_model(args.model)
    if Path(args.out).exists() and not args.overwrite:
        raise UsageError(f"--out {args.out} exists; choose a new directory or pass --overwrite")
    pretrained = load_pretrained(args.model)
    summary = export_hf(
        args.out,
        pretrained.model,
        pretrained.params,
        pretrained.tokenizer,
        overwrite=args.overwrite,
    )
    return {
        "model": args.model,
        "out": summary["path"],
        "tensors": summary["tensors"],
        "bytes": summary["bytes"],
    }
