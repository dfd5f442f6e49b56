"""``jaxprune`` command line: a thin shell over the library, one module per command.

    jaxprune eval     --model smollm2-135m --data shakespeare-hamlet --nsamples 32 --seqlen 512
    jaxprune prune    --model smollm2-135m --method sparsegpt --sparsity 0.5 --out /tmp/pruned
    jaxprune plan     --model llama-70b --method sparsegpt --mesh 1x8 --device-memory 80GB
    jaxprune eval     --model /tmp/pruned --tasks piqa,arc_easy --limit 200   (zero-shot accuracy)
    jaxprune recover  --model /tmp/pruned --method lora --steps 200 --out /tmp/recovered
    jaxprune export   --model /tmp/recovered --out /tmp/hf   (transformers' AutoModelForCausalLM)
    jaxprune plot     /tmp/recovered          (PNG of the prune and recovery reports)
    jaxprune generate --model /tmp/pruned --prompt "To be, or not to be"
    jaxprune demo     (prune the embedded default model and print perplexity before and after)

Every argument is checked before a model is loaded, and what can only be checked against the model
(targets, sequence lengths, windows) before any pruning; on error the command prints one line saying
what is wrong and how to fix it, exits with status 2, and leaves no output directory behind. Each
command prints a short summary, or with ``--json`` one JSON line.
"""

from __future__ import annotations

import argparse
import logging
import sys
import types
import warnings
from collections.abc import Callable

from jaxprune.checkpoint import Terminated
from jaxprune.cli import demo, eval, export, generate, plan, plot, prune, recover
from jaxprune.cli._args import DEFAULT_MODEL, UsageError

COMMANDS = (eval, prune, plan, recover, export, plot, generate, demo)


# What --model reads, spelled out here so that --help imports no model code (a test holds these
# equal to the registered families' records).
MODEL_TYPES = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "phi3",
    "gemma3_text",
    "opt",
    "mixtral",
    "qwen3_moe",
)
GGUF_ARCHITECTURES = ("llama", "qwen2", "qwen3", "phi3", "gemma3")


def build_parser() -> argparse.ArgumentParser:
    from jaxprune import __version__
    from jaxprune.data import KNOWN_SOURCES

    sources = ", ".join(KNOWN_SOURCES)
    model_help = (
        f"embedded model name (default {DEFAULT_MODEL}), Hugging Face checkpoint directory "
        f"(config.json + *.safetensors; model_type {', '.join(MODEL_TYPES)}), .gguf file "
        f"(architecture {', '.join(GGUF_ARCHITECTURES)}), or a directory written by "
        "`jaxprune prune`"
    )
    parser = argparse.ArgumentParser(
        prog="jaxprune", description="Prune and evaluate language models in JAX/Flax."
    )
    parser.add_argument("--version", action="version", version=f"jaxprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub, model_help, sources)
    return parser


def _show_progress_messages() -> None:
    """jaxprune's INFO messages (downloads, tokenising, saving) on stderr, once."""
    logger = logging.getLogger("jaxprune")
    if not any(getattr(h, "_jaxprune_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("jaxprune: %(message)s"))
        handler._jaxprune_cli = True
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _issuer(frame: types.FrameType | None) -> str:
    """The module that called ``warnings.warn``: the first frame outside :mod:`warnings`.

    Not the module a warning is attributed to, which ``stacklevel`` moves to the caller (a
    dependency's deprecation warning is attributed to our line that called it).
    """
    while frame is not None and frame.f_globals.get("__name__") == "warnings":
        frame = frame.f_back
    return "" if frame is None else frame.f_globals.get("__name__", "")


def show_warning(command: str, original: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints jaxprune's own warnings as ``jaxprune CMD: warning:
    ...`` and hands every other warning to ``original`` (Python's format, naming its file)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        issuer = _issuer(sys._getframe(1))
        if issuer == "jaxprune" or issuer.startswith("jaxprune."):
            print(f"jaxprune {command}: warning: {message}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _show_progress_messages()
    with warnings.catch_warnings():
        warnings.filterwarnings("default", module=r"jaxprune(\.|$)")
        warnings.showwarning = show_warning(args.command, warnings.showwarning)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        args.func(args)
    except UsageError as err:
        print(f"jaxprune {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"jaxprune {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # a save says whether it finished (see checkpoint)
        what = str(err) or "nothing was left half-written"
        print(f"jaxprune {args.command}: interrupted; {what}", file=sys.stderr)
        return 130
    except Terminated as err:
        print(f"jaxprune {args.command}: {err}", file=sys.stderr)
        return 143
    return 0


__all__ = ["UsageError", "build_parser", "main"]
