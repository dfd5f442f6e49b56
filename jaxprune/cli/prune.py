"""``jaxprune prune``: prune a model one-shot, optionally evaluate and save it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jaxprune.cli._args import (
    DEFAULT_MODEL,
    DTYPES,
    UsageError,
    add_bos_flag,
    add_process_args,
    check_data,
    check_model,
    check_output,
    check_positive,
    emit,
    mesh_from_arg,
    method_options_help,
    recipe_file_method,
    recipe_from_args,
    start_processes,
    structured_recipe_from_args,
)


def add_parser(sub: Any, model_help: str, sources: str) -> None:
    from jaxprune.methods import PRUNING_METHODS, REFINEMENTS

    pr = sub.add_parser(
        "prune",
        help="prune a model one-shot; prints a summary (or --json the full report)",
        description="Prune a model one-shot from calibration data, optionally measure perplexity "
        "before and after, and save the pruned model. Every argument is checked before the model "
        "is loaded; problems found against the model (targets, sequence length, windows) are "
        "reported before any pruning, with exit status 2.",
    )
    pr.add_argument("--model", default=DEFAULT_MODEL, help=model_help)
    from jaxprune.structured import STRUCTURED_METHODS

    pr.add_argument(
        "--method",
        choices=sorted([*PRUNING_METHODS, *STRUCTURED_METHODS]),
        help="pruning method (default magnitude); llm-pruner and flap remove whole heads and MLP "
        "channels, reap, expert-frequency and expert-random whole experts of a mixture-of-experts "
        "model, giving a physically smaller model",
    )
    pr.add_argument(
        "--refine",
        choices=sorted(REFINEMENTS),
        help="refine the method's masks with this step (dsnot: training-free prune-and-grow); "
        "the same as --method METHOD+dsnot in a recipe",
    )
    pr.add_argument(
        "--sparsity",
        help="fraction of weights to remove, in [0, 1), or an N:M pattern (2:4); for "
        "llm-pruner/flap the fraction of the non-embedding parameters removed, in (0, 1); for "
        "reap/expert-* the fraction of every block's experts removed",
    )
    pr.add_argument("--pattern", help="N:M pattern, e.g. 2:4 or 4:8 (same as --sparsity 2:4)")
    pr.add_argument(
        "--recipe",
        help="YAML/JSON recipe file (a structured recipe for llm-pruner/flap); explicit options "
        "override it",
    )
    pr.add_argument("--targets", nargs="+", help="regexes of parameter paths to prune")
    pr.add_argument("--ignore", nargs="+", help="regexes of parameter paths never pruned")
    pr.add_argument(
        "--allocation",
        choices=["uniform", "owl", "per-block", "global"],
        help="per-layer sparsity: the same everywhere (uniform) or outlier-weighted (owl); "
        "llm-pruner/flap: the same share per pruned block (per-block) or one ranking (global) "
        f"({method_defaults('allocation')})",
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
        help=f"method option, repeatable. Options and defaults: {method_options_help()}",
    )
    pr.add_argument(
        "--true-sequential",
        action="store_true",
        help="re-capture inputs after each group of linears inside a block",
    )
    _add_structured_options(pr)
    calibration = {
        "calib": f"calibration corpus ({sources}) or text path",
        "nsamples": "calibration windows",
        "seqlen": "tokens per calibration window",
        "seed": "seed of the calibration windows",
        "batch_size": "windows per forward pass",
    }
    for field, text in calibration.items():
        kind = {} if field == "calib" else {"type": int}
        flag = f"--{field.replace('_', '-')}"
        pr.add_argument(flag, **kind, help=f"{text} ({method_defaults(field)})")
    pr.add_argument("--eval", help="also report perplexity before/after on this corpus")
    pr.add_argument("--eval-nsamples", type=int, default=32, help="evaluation windows (32)")
    pr.add_argument(
        "--eval-seqlen",
        type=int,
        help="tokens per evaluation window (default 512, whatever the calibration length)",
    )
    pr.add_argument(
        "--dtype",
        choices=DTYPES,
        help="load, prune and save the model in this dtype "
        "(statistics stay float32; default float32, or a checkpoint's own dtype)",
    )
    _add_placement_and_output(pr)
    add_process_args(pr)
    add_bos_flag(pr)
    pr.set_defaults(func=run)


def _add_placement_and_output(pr: argparse.ArgumentParser) -> None:
    """Where the prune runs (mesh, offload) and what it writes (--out, --json)."""
    pr.add_argument(
        "--mesh",
        metavar="DATAxMODEL",
        help="prune on a (data, model) mesh of all devices (every process's), e.g. 8x1 or 2x4 "
        "(data·model must equal the device count; default: one device)",
    )
    pr.add_argument(
        "--offload",
        action="store_true",
        help="keep the params in host memory and move one block at a time to the devices",
    )
    pr.add_argument("--out", help="write the pruned model here (Orbax checkpoint directory)")
    pr.add_argument("--compact", action="store_true", help="store only kept values + bit masks")
    pr.add_argument(
        "--overwrite", action="store_true", help="replace an existing jaxprune checkpoint at --out"
    )
    pr.add_argument("--json", action="store_true", help="print the full report as one JSON line")


def method_defaults(field: str) -> str:
    """``default 64; llm-pruner: 10``: a recipe field's default, and each method's own where it
    differs (read from the recipes that run, so ``--help`` cannot drift from them)."""
    from jaxprune.recipes import Recipe
    from jaxprune.structured import STRUCTURED_METHODS, StructuredRecipe

    default = getattr(Recipe(), field)
    own = {m: getattr(StructuredRecipe(method=m), field) for m in STRUCTURED_METHODS}
    differ = "".join(f"; {m}: {v}" for m, v in own.items() if v != default)
    return f"default {default}{differ}"


_STRUCTURED_ONLY = (
    "importance",
    "reduction",
    "block_range",
    "attention_unit",
    "no_bias_compensation",
    "remat",
    "uniform",
    "mlp_multiple",
)


def _add_structured_options(pr: argparse.ArgumentParser) -> None:
    from jaxprune.structured import ATTENTION_UNITS, KINDS, REDUCTIONS, StructuredRecipe

    group = pr.add_argument_group("structured pruning (--method llm-pruner or flap)")
    group.add_argument(
        "--importance",
        choices=KINDS,
        help="llm-pruner group importance: element1 (as the reference's documented commands), "
        "vector, element2 (with the Fisher), or the baselines l1, l2, random "
        f"(default {StructuredRecipe(method='llm-pruner').importance})",
    )
    group.add_argument(
        "--reduction", choices=REDUCTIONS, help="how a group's linears combine (default sum)"
    )
    group.add_argument(
        "--block-range",
        metavar="START:END",
        help="prune blocks START..END-1 (default: llm-pruner keeps the first and last blocks as "
        "its paper does, scaled to the depth; flap prunes every block)",
    )
    group.add_argument(
        "--attention-unit",
        choices=ATTENTION_UNITS,
        help="query: query heads, evenly across key/value groups (default); kv_group: a key/value "
        "head with its query heads",
    )
    group.add_argument(
        "--uniform",
        action="store_true",
        help="every block ends with the same widths (heads per key/value group, MLP channels a "
        "multiple of --mlp-multiple): a standard config transformers, vLLM and llama.cpp load "
        "unchanged; prunes every block, per block",
    )
    group.add_argument(
        "--mlp-multiple",
        type=int,
        metavar="M",
        help="with --uniform: the kept MLP width is a multiple of M (default 64)",
    )
    group.add_argument(
        "--no-bias-compensation", action="store_true", help="flap: no mean-input biases"
    )
    group.add_argument(
        "--remat", action="store_true", help="llm-pruner: recompute activations in the backward"
    )


def run(args: argparse.Namespace) -> None:
    from jaxprune import distributed, pipeline
    from jaxprune.structured import STRUCTURED_METHODS

    structured = (args.method or recipe_file_method(args.recipe)) in STRUCTURED_METHODS
    if not structured:
        given = [f"--{n.replace('_', '-')}" for n in _STRUCTURED_ONLY if getattr(args, n)]
        if given:
            raise UsageError(f"{', '.join(given)} apply to --method llm-pruner or flap only")
    recipe = structured_recipe_from_args(args) if structured else recipe_from_args(args)
    check_model(args.model)
    if pipeline.needs_calibration(recipe):
        check_data("--calib", recipe.calib)
    if args.eval:
        check_data("--eval", args.eval)
    check_positive(eval_nsamples=args.eval_nsamples, eval_seqlen=args.eval_seqlen)
    start_processes(args)
    mesh = mesh_from_arg(args.mesh)
    out = check_output(args.out, args.overwrite)
    try:
        job = pipeline.prepare(
            args.model,
            recipe,
            eval_source=args.eval,
            eval_nsamples=args.eval_nsamples,
            eval_seqlen=args.eval_seqlen,
            dtype=args.dtype,
            mesh=mesh,
            bos=args.bos,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    if out is None and distributed.is_primary():
        print(
            "jaxprune prune: note: no --out given, the pruned model is not saved", file=sys.stderr
        )
    result = pipeline.run(job, mesh=mesh, offload=args.offload, name=args.model)
    report = result.report
    saved = None
    if out is not None:
        saved = report["checkpoint"] = result.save(
            out, compact=args.compact, overwrite=args.overwrite
        )
    emit(args, report, summary(report, recipe, saved))


def _headline(report: dict[str, Any], recipe: Any) -> str:
    if "params_after" in report:  # structured: whole heads and channels removed
        shape = report["calibration"]
        calib = f"calibration {recipe.calib} {shape[0]}×{shape[1]}" if shape else "no calibration"
        what = report.get("importance") or "fluctuation"
        if "experts_after" in report:
            what = f"{report['experts_before']} -> {report['experts_after']} experts per block"
        return (
            f"{report['model']}: {report['method']} ({what}) {report['sparsity']} — "
            f"{report['params_before']:,} -> {report['params_after']:,} non-embedding parameters "
            f"({report['removed_fraction']:.1%} removed) in {report['seconds']:.1f} s ({calib})"
        )
    calib = (
        f"calibration {recipe.calib} {report['calib_windows']}×{report['seqlen']}"
        if report["calib_windows"]
        else "no calibration"
    )
    return (
        f"{report['model']}: {report['method']} {report['target']} — "
        f"{report['overall_sparsity']:.1%} of {len(report['layers'])} weight matrices pruned in "
        f"{report['seconds']:.1f} s ({calib})"
    )


def summary(report: dict[str, Any], recipe: Any, saved: dict[str, Any] | None) -> str:
    """A few lines a person reads: what was pruned, how well, where it went."""
    lines = [_headline(report, recipe)]
    if "eval" in report:
        ev = report["eval"]
        lines.append(
            f"perplexity on {ev['data']} ({ev['dense']['tokens']} tokens): "
            f"dense {ev['dense']['ppl']:.2f} -> pruned {ev['pruned']['ppl']:.2f}"
        )
    if saved is not None:
        kind = "compact" if saved["compact"] else "dense"
        lines.append(
            f"saved to {saved['path']} ({kind}, {saved['bytes_on_disk'] / 2**20:.1f} MiB; "
            "the full report is report.json there)"
        )
    return "\n".join(lines)
