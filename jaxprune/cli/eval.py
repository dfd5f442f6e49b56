"""``jaxprune eval``: perplexity of a model on a corpus."""

from __future__ import annotations

import argparse
import time
from typing import Any

from jaxprune.cli._args import DEFAULT_MODEL, check_data, check_model, check_positive


def add_parser(sub: Any, model_help: str, sources: str) -> None:
    ev = sub.add_parser("eval", help="perplexity of a model on a corpus; prints one JSON line")
    ev.add_argument("--model", default=DEFAULT_MODEL, help=model_help)
    ev.add_argument(
        "--data",
        default="shakespeare-hamlet",
        help=f"corpus name ({sources}) or a text file / directory of *.txt files",
    )
    ev.add_argument("--nsamples", type=int, default=32, help="number of windows (default 32)")
    ev.add_argument("--seqlen", type=int, default=512, help="tokens per window (default 512)")
    ev.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    ev.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from jaxprune.pipeline import evaluate, load_with_tokenizer

    check_model(args.model)
    check_data("--data", args.data)
    check_positive(nsamples=args.nsamples, seqlen=args.seqlen, batch_size=args.batch_size)
    pretrained = load_with_tokenizer(args.model)
    start = time.perf_counter()
    out = evaluate(
        pretrained,
        pretrained.params,
        args.data,
        nsamples=args.nsamples,
        seqlen=args.seqlen,
        batch_size=args.batch_size,
    )
    return {"model": args.model, "data": args.data, **out, "seconds": time.perf_counter() - start}
