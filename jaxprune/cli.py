"""``jaxprune`` command line: a thin shell over the library.

    jaxprune eval  --model smollm2-135m --data shakespeare-hamlet --nsamples 32 --seqlen 512
    jaxprune prune --model smollm2-135m --method sparsegpt --sparsity 0.5 --out pruned/
    jaxprune demo  (prune the embedded default model and print perplexity before and after)

Every argument is checked before a model is loaded; on error the command prints one line saying what
is wrong and how to fix it, exits with status 2, and leaves no output directory behind.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "smollm2-135m"


class UsageError(Exception):
    """A bad argument, reported before any heavy work."""


def _check_model_arg(spec: str) -> None:
    from jaxprune.models.loaders.embedded import EMBEDDED_MODELS

    if spec in EMBEDDED_MODELS:
        return
    path = Path(spec)
    if not path.exists():
        raise UsageError(
            f"--model {spec!r}: no such file or directory, and not an embedded model name "
            f"(embedded: {', '.join(sorted(EMBEDDED_MODELS))}). Give a Hugging Face checkpoint "
            "directory, a .gguf file or a directory written by `jaxprune prune`."
        )
    if path.is_file() and path.suffix != ".gguf":
        raise UsageError(f"--model {spec!r}: a model file must be a .gguf file")
    if path.is_dir() and not any(
        (path / name).exists() for name in ("config.json", "jaxprune_checkpoint.json")
    ):
        raise UsageError(
            f"--model {spec!r}: directory has neither config.json (Hugging Face checkpoint) nor "
            "jaxprune_checkpoint.json (written by `jaxprune prune`)"
        )


def _check_data_arg(flag: str, source: str) -> None:
    from jaxprune.data import check_source

    try:
        check_source(source)
    except ValueError as err:
        raise UsageError(f"{flag}: {err}") from None


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def _load(spec: str):
    from jaxprune.models.loaders import load_pretrained

    pretrained = load_pretrained(spec)
    if pretrained.tokenizer is None:
        raise UsageError(f"--model {spec!r} carries no tokenizer, so text data cannot be encoded")
    return pretrained


def _perplexity(pretrained, params, source: str, nsamples: int | None, seqlen: int, bs: int):
    from jaxprune.data import load_windows
    from jaxprune.eval import perplexity

    windows = load_windows(
        source, pretrained.tokenizer, nsamples=nsamples, seqlen=seqlen, split="eval"
    )
    result = perplexity(pretrained.model, params, windows, batch_size=bs, progress=True)
    return {"ppl": result.ppl, "nll": result.nll, "tokens": result.tokens}


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    _check_model_arg(args.model)
    _check_data_arg("--data", args.data)
    _check_positive(nsamples=args.nsamples, seqlen=args.seqlen, batch_size=args.batch_size)
    pretrained = _load(args.model)
    start = time.perf_counter()
    out = _perplexity(
        pretrained, pretrained.params, args.data, args.nsamples, args.seqlen, args.batch_size
    )
    return {
        "model": args.model,
        "data": args.data,
        **out,
        "seconds": time.perf_counter() - start,
    }


def _recipe_from_args(args: argparse.Namespace):
    from jaxprune.recipes import Recipe

    fields: dict[str, Any] = {}
    if args.recipe:
        fields = Recipe.load(args.recipe).to_dict()
    if args.sparsity is not None and args.pattern is not None:
        raise UsageError("give either --sparsity or --pattern, not both")
    explicit = {
        "method": args.method,
        "sparsity": args.pattern if args.pattern is not None else args.sparsity,
        "targets": args.targets,
        "ignore": args.ignore,
        "allocation": args.allocation,
        "owl_lambda": args.owl_lambda,
        "owl_m": args.owl_m,
        "true_sequential": args.true_sequential or None,
        "calib": args.calib,
        "nsamples": args.nsamples,
        "seqlen": args.seqlen,
        "seed": args.seed,
        "batch_size": args.batch_size,
    }
    fields.update({k: v for k, v in explicit.items() if v is not None})
    if args.override:
        fields["overrides"] = {
            **dict(fields.get("overrides") or {}),
            **_parse_overrides(args.override),
        }
    if args.option:
        fields["method_options"] = {
            **dict(fields.get("method_options") or {}),
            **_parse_options(args.option),
        }
    try:
        return Recipe.from_dict(fields).validate()
    except ValueError as err:
        raise UsageError(str(err)) from None


def _parse_options(items: list[str]) -> dict[str, Any]:
    """``["percdamp=0.05", "iterations=8"]`` → ``{"percdamp": 0.05, "iterations": 8}``."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--option {item!r}: write options as KEY=VALUE, e.g. percdamp=0.05")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options


def _parse_overrides(items: list[str]) -> dict[str, float | str]:
    """``["layers/0/.*=0.3", ".*/down_proj/kernel=2:4"]`` → ``{regex: 0.3, regex: "2:4"}``."""
    overrides: dict[str, float | str] = {}
    for item in items:
        pattern, sep, text = item.rpartition("=")
        if not sep or not pattern or not text:
            raise UsageError(
                f"--override {item!r}: write REGEX=SPARSITY or REGEX=N:M, "
                "e.g. 'layers/0/.*=0.3' or '.*/down_proj/kernel=2:4'"
            )
        try:
            overrides[pattern] = float(text)
        except ValueError:
            overrides[pattern] = text
    return overrides


def _mesh_from_arg(text: str | None):
    """The ``--mesh DATAxMODEL`` argument as a mesh over this host's devices (None if absent)."""
    if text is None:
        return None
    from jaxprune import sharding

    try:
        return sharding.make_mesh(sharding.parse_mesh(text))
    except ValueError as err:
        raise UsageError(f"--mesh {text!r}: {err}") from None


def cmd_prune(args: argparse.Namespace) -> dict[str, Any]:
    from jaxprune.methods import get_method

    recipe = _recipe_from_args(args)
    _check_model_arg(args.model)
    method = get_method(recipe.method)
    if method.needs_inputs:
        _check_data_arg("--calib", recipe.calib)
    if args.eval:
        _check_data_arg("--eval", args.eval)
    _check_positive(eval_nsamples=args.eval_nsamples)
    mesh = _mesh_from_arg(args.mesh)
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
        saved = save_pretrained_result(result, out, compact=args.compact, overwrite=args.overwrite)
        result["report"]["checkpoint"] = saved
    return result["report"]


def prune_pretrained(
    model: str,
    recipe,
    *,
    eval_source: str | None = None,
    eval_nsamples: int | None = 32,
    progress: bool = True,
    mesh=None,
    offload: bool = False,
) -> dict[str, Any]:
    """Loads ``model``, prunes it with ``recipe`` and optionally measures perplexity before/after.

    ``mesh`` and ``offload`` are passed to :func:`jaxprune.prune`.

    Returns ``{"pretrained", "params", "masks", "recipe", "report"}``.
    """
    from jaxprune.data import load_windows
    from jaxprune.engine import prune
    from jaxprune.methods import get_method

    pretrained = _load(model)
    calibration = None
    if get_method(recipe.method).needs_inputs or recipe.allocation == "owl":
        calibration = load_windows(
            recipe.calib,
            pretrained.tokenizer,
            nsamples=recipe.nsamples,
            seqlen=recipe.seqlen,
            seed=recipe.seed,
            split="calib",
        )
    quality: dict[str, Any] = {}
    if eval_source:
        quality["dense"] = _perplexity(
            pretrained, pretrained.params, eval_source, eval_nsamples, recipe.seqlen, 8
        )
    result = prune(
        pretrained.model,
        pretrained.params,
        calibration,
        recipe,
        progress=progress,
        mesh=mesh,
        offload=offload,
    )
    report = {"model": model, **result.report}
    if eval_source:
        quality["pruned"] = _perplexity(
            pretrained, result.params, eval_source, eval_nsamples, recipe.seqlen, 8
        )
        report["eval"] = {"data": eval_source, **quality}
    return {
        "pretrained": pretrained,
        "params": result.params,
        "masks": result.masks,
        "recipe": recipe,
        "report": report,
    }


def save_pretrained_result(
    result: dict[str, Any], out: Path, *, compact: bool = False, overwrite: bool = False
) -> dict[str, Any]:
    """Writes the output of :func:`prune_pretrained` as a jaxprune (Orbax) checkpoint."""
    from jaxprune.checkpoint import save_pruned

    return save_pruned(
        out,
        result["pretrained"],
        result["params"],
        masks=result["masks"],
        recipe=result["recipe"].to_dict(),
        report=result["report"],
        compact=compact,
        overwrite=overwrite,
    )


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from jaxprune.recipes import Recipe

    recipe = Recipe(
        method=args.method, sparsity=args.sparsity, nsamples=args.nsamples, seqlen=args.seqlen
    ).validate()
    result = prune_pretrained(
        DEFAULT_MODEL, recipe, eval_source="shakespeare-hamlet", eval_nsamples=args.eval_nsamples
    )
    report = result["report"]
    ev = report["eval"]
    print(
        f"{DEFAULT_MODEL}: {recipe.method} {recipe.target} "
        f"(calibration {recipe.calib} {recipe.nsamples}x{recipe.seqlen}, "
        f"{report['seconds']:.1f} s to prune)\n"
        f"  perplexity on shakespeare-hamlet ({ev['dense']['tokens']} tokens): "
        f"dense {ev['dense']['ppl']:.2f} -> pruned {ev['pruned']['ppl']:.2f} "
        f"at {report['overall_sparsity']:.1%} sparsity",
        file=sys.stderr,
    )
    return {
        "model": DEFAULT_MODEL,
        "method": recipe.method,
        "target": str(recipe.target),
        "overall_sparsity": report["overall_sparsity"],
        "ppl_dense": ev["dense"]["ppl"],
        "ppl_pruned": ev["pruned"]["ppl"],
        "prune_seconds": report["seconds"],
    }


def build_parser() -> argparse.ArgumentParser:
    from jaxprune.data import KNOWN_SOURCES
    from jaxprune.methods import METHODS

    sources = ", ".join(KNOWN_SOURCES)
    model_help = (
        f"embedded model name (default {DEFAULT_MODEL}), Hugging Face checkpoint directory "
        "(config.json + *.safetensors), .gguf file, or a directory written by `jaxprune prune`"
    )
    parser = argparse.ArgumentParser(
        prog="jaxprune", description="Prune and evaluate language models in JAX/Flax."
    )
    sub = parser.add_subparsers(dest="command", required=True)

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
    ev.set_defaults(func=cmd_eval)

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
    pr.set_defaults(func=cmd_prune)

    demo = sub.add_parser(
        "demo", help=f"prune {DEFAULT_MODEL} and print perplexity on Hamlet before and after"
    )
    demo.add_argument("--method", default="sparsegpt", choices=sorted(METHODS))
    demo.add_argument("--sparsity", default="0.5", help="fraction, or N:M such as 2:4")
    demo.add_argument("--nsamples", type=int, default=64, help="calibration windows")
    demo.add_argument("--seqlen", type=int, default=512, help="tokens per window")
    demo.add_argument("--eval-nsamples", type=int, default=32, help="evaluation windows")
    demo.set_defaults(func=cmd_demo)
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


if __name__ == "__main__":
    sys.exit(main())
