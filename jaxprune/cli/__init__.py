"""``jaxprune`` command line: a thin shell over the library, one module per command.

    jaxprune eval  --model smollm2-135m --data shakespeare-hamlet --nsamples 32 --seqlen 512
    jaxprune prune --model smollm2-135m --method sparsegpt --sparsity 0.5 --out pruned/
    jaxprune eval  --model pruned/ --tasks piqa,arc_easy --limit 200   (zero-shot accuracy)
    jaxprune recover --model pruned/ --method lora --steps 200 --out recovered/
    jaxprune export --model recovered/ --out hf/     (transformers' AutoModelForCausalLM loads it)
    jaxprune plot recovered/                         (PNG of the prune and recovery reports)
    jaxprune demo  (prune the embedded default model and print perplexity before and after)

Every argument is checked before a model is loaded; on error the command prints one line saying what
is wrong and how to fix it, exits with status 2, and leaves no output directory behind.
"""

from __future__ import annotations

import argparse
import json
import sys

from jaxprune.cli import demo, eval, export, plot, prune, recover
from jaxprune.cli._args import DEFAULT_MODEL, UsageError

COMMANDS = (eval, prune, recover, export, plot, demo)


def build_parser() -> argparse.ArgumentParser:
    from jaxprune.data import KNOWN_SOURCES

    sources = ", ".join(KNOWN_SOURCES)
    model_help = (
        f"embedded model name (default {DEFAULT_MODEL}), Hugging Face checkpoint directory "
        "(config.json + *.safetensors), .gguf file, or a directory written by `jaxprune prune`"
    )
    parser = argparse.ArgumentParser(
        prog="jaxprune", description="Prune and evaluate language models in JAX/Flax."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub, model_help, sources)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except UsageError as err:
        print(f"jaxprune {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"jaxprune {args.command}: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, default=float))
    return 0


__all__ = ["UsageError", "build_parser", "main"]
