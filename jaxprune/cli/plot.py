"""``jaxprune plot``: a PNG of a prune or recovery report."""

from __future__ import annotations

import argparse
from typing import Any

from jaxprune.cli._args import UsageError, emit


def add_parser(sub: Any, model_help: str, sources: str) -> None:
    pl = sub.add_parser(
        "plot",
        help="PNG of per-block sparsity and reconstruction error (one-shot prune report), kept "
        "heads and MLP channels per block (structured prune report) and of loss and held-out "
        "perplexity (recovery report)",
    )
    pl.add_argument("report", metavar="REPORT_OR_DIR", help="report JSON, or a checkpoint dir")
    pl.add_argument("--out", help="PNG path (default report.png beside the report)")
    pl.add_argument("--json", action="store_true", help="print the result as one JSON line")
    pl.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from jaxprune.eval.plots import plot_report, read_report, require_matplotlib

    try:
        require_matplotlib()
        report = read_report(args.report)
        path = plot_report(args.report if args.out is None else report, args.out)
    except (ValueError, RuntimeError) as err:
        raise UsageError(str(err)) from None
    result = {"report": args.report, "png": str(path)}
    emit(args, result, f"wrote {path}")
