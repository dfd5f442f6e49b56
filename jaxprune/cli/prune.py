"""``jaxprune prune``: prune a model one-shot, optionally evaluate and save it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from jaxprune.cli._args import (
    DEFAULT_MODEL,
    UsageError,
    check_data,
    check_model,
    check_positive,
    mesh_from_arg,
    recipe_from_args,
)


def add_parser(sub: Any, model_help: str, sources: str) -> None:
    from jaxprune.methods import METHODS

    pr = sub.add_parser("prune", help="prune a model one-shot; prints a JSON report")
    pr.add_argument("--model", default=DEFAULT_MODEL, help=model_help)
    pr.add_argument("--method", choices=sorted(METHODS), help="pruning method (default magnitude)")
    pr.add_argument("--sparsity", type=float, help="fraction of weights to remove, in [0, 1)")
    pr.add_argument("--pattern", help="N:M pattern instead of --sparsity, e.g. 2:4 or 4:8")
    pr.add_argument("--recipe", help="YAML/JSON recipe file; explicit options override it")
    pr.add_argument("--targets", nargs="+", help="regexes of parameter paths to prune")
    pr.add_argument("--ignore", nargs="+", help="regexes of parameter paths never pruned")
    pr.add_argument(
        "--allocation",
        choices=["uniform", "owl"],
        help="per-layer sparsity: the same everywhere (uniform, default) or outlier-weighted (owl)",
    )
    pr.add_argument(
        "--override",
        action="append",
        metavar="REGEX=TARGET",
        help="per-path sparsity (0.3) or N:M (2:4) for the paths matching REGEX, applied after "
        "--allocation; repeatable, later ones win",
    )
    pr.add_argument("--owl-lambda", type=float, help="OWL: spread around the target (0.08)")
    pr.add_argument("--owl-m", type=float, help="OWL: outlier threshold, times the mean (5)")
    pr.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="method option, repeatable (e.g. percdamp=0.05 blocksize=128 for sparsegpt)",
    )
    pr.add_argument(
        "--true-sequential",
        action="store_true",
        help="re-capture inputs after each group of linears inside a block",
    )
    pr.add_argument("--calib", help=f"calibration corpus ({sources}) or text path")
    pr.add_argument("--nsamples", type=int, help="calibration windows (default 64)")
    pr.add_argument("--seqlen", type=int, help="tokens per window (default 512)")
    pr.add_argument("--seed", type=int, help="seed of the calibration windows (default 0)")
    pr.add_argument("--batch-size", type=int, help="windows per forward pass (default 8)")
    pr.add_argument("--eval", help="also report perplexity before/after on this corpus")
    pr.add_argument("--eval-nsamples", type=int, default=32, help="evaluation windows")
    pr.add_argument(
        "--mesh",
        metavar="DATAxMODEL",
        help="prune on a (data, model) mesh of this host's devices, e.g. 8x1 or 2x4 "
        "(data·model must equal the device count; default: one device)",
    )
    pr.add_argument(
        "--offload",
        action="store_true",
        help="keep the params in host memory and move one block at a time to the devices",
    )
    pr.add_argument("--out", help="write the pruned model here (Orbax checkpoint directory)")
    pr.add_argument("--compact", action="store_true", help="store only kept values + bit masks")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    pr.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from jaxprune.methods import get_method
    from jaxprune.pipeline import prune_pretrained

    recipe = recipe_from_args(args)
    check_model(args.model)
    if get_method(recipe.method).needs_inputs:
        check_data("--calib", recipe.calib)
    if args.eval:
        check_data("--eval", args.eval)
    check_positive(eval_nsamples=args.eval_nsamples)
    mesh = mesh_from_arg(args.mesh)
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not args.overwrite:
        raise UsageError(f"--out {out}: already exists; choose another path or pass --overwrite")
    if out is not None and not out.parent.exists():
        raise UsageError(f"--out {out}: parent directory {out.parent} does not exist")
    result = prune_pretrained(
        args.model,
        recipe,
        eval_source=args.eval,
        eval_nsamples=args.eval_nsamples,
        mesh=mesh,
        offload=args.offload,
    )
    if out is not None:
        result.report["checkpoint"] = result.save(
            out, compact=args.compact, overwrite=args.overwrite
        )
    return result.report
