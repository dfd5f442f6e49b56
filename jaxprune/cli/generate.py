"""``jaxprune generate``: continue a prompt with a (pruned) model, greedily or by sampling."""

from __future__ import annotations

import argparse
from typing import Any

from jaxprune.cli._args import DEFAULT_MODEL, DTYPES, UsageError, add_bos_flag, check_model, emit


def add_parser(sub: Any, model_help: str, sources: str) -> None:
    gen = sub.add_parser(
        "generate",
        help="continue a prompt with a model (e.g. a pruned checkpoint) to see what it says",
        description="Continue a prompt with a model: greedy decoding by default, sampling with "
        "--temperature > 0 (with --top-k / --top-p; the same --seed gives the same text).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    gen.add_argument("--model", default=DEFAULT_MODEL, help=model_help)
    gen.add_argument("--prompt", required=True, help="the text to continue")
    gen.add_argument("--max-new-tokens", type=int, default=40, help="tokens to generate at most")
    gen.add_argument("--temperature", type=float, default=0.0, help="0: greedy; > 0: sample")
    gen.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest (0: all)")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    gen.add_argument("--seed", type=int, default=0, help="seed of the sampling")
    gen.add_argument("--dtype", choices=DTYPES, help="compute in this dtype (default: the model's)")
    gen.add_argument("--json", action="store_true", help="print the result as one JSON line")
    add_bos_flag(gen)
    gen.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from jaxprune.models.generate import greedy_generate, sample_generate
    from jaxprune.pipeline import load_with_tokenizer

    check_model(args.model)
    if args.max_new_tokens < 0:
        raise UsageError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.temperature < 0 or not 0 < args.top_p <= 1 or args.top_k < 0:
        raise UsageError("need --temperature >= 0, 0 < --top-p <= 1 and --top-k >= 0")
    if not args.prompt:
        raise UsageError("--prompt is empty; give some text to continue")
    try:
        pretrained = load_with_tokenizer(args.model, args.dtype)
    except ValueError as err:
        raise UsageError(str(err)) from None
    tokenizer = pretrained.tokenizer
    bos = pretrained.bos_token(args.bos)
    prompt = ([] if bos is None else [bos]) + tokenizer.encode(args.prompt)
    config = pretrained.model.config
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and len(prompt) + args.max_new_tokens > limit:
        raise UsageError(
            f"{len(prompt)} prompt tokens + {args.max_new_tokens} new tokens = "
            f"{len(prompt) + args.max_new_tokens} > max_position_embeddings={limit}; use a "
            "shorter prompt or fewer --max-new-tokens"
        )
    if args.top_k > config.vocab_size:
        raise UsageError(
            f"--top-k {args.top_k} is larger than the vocabulary ({config.vocab_size} tokens); "
            f"use at most {config.vocab_size}, or 0 for all"
        )
    eos = tokenizer.eos_token_id
    if args.temperature == 0:
        tokens = greedy_generate(
            pretrained.model, pretrained.params, prompt, args.max_new_tokens, eos
        )
    else:
        tokens = sample_generate(
            pretrained.model,
            pretrained.params,
            prompt,
            args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            eos_token_id=eos,
        )
    text = tokenizer.decode(tokens)
    emit(
        args,
        {
            "model": args.model,
            "prompt": args.prompt,
            "prompt_tokens": prompt,
            "text": text,
            "tokens": tokens,
        },
        args.prompt + text,
    )
