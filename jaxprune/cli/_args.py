"""Argument checks shared by the commands: each bad input is one clear line, before any work."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from jaxprune.core.config import read_mapping
from jaxprune.recipes import Recipe
from jaxprune.structured.recipe import StructuredRecipe

DEFAULT_MODEL = "smollm2-135m"
DTYPES = ("float32", "bfloat16", "float16")


class UsageError(Exception):
    """A bad argument, reported before any heavy work (exit status 2)."""


def add_bos_flag(parser: argparse.ArgumentParser) -> None:
    """``--no-bos``: sequences start with BOS by default only for families that expect it."""
    parser.add_argument(
        "--no-bos",
        dest="bos",
        action="store_false",
        help="do not start windows, prompts and contexts with the BOS token (added by default "
        "for model families that expect it on every sequence, e.g. Gemma)",
    )


def check_model(spec: str) -> None:
    """``--model``: an embedded name, a .gguf file, a HF or jaxprune checkpoint directory."""
    from jaxprune.models.loaders import check_source

    try:
        check_source(spec)
    except ValueError as err:
        raise UsageError(f"--model {err}") from None


def check_data(flag: str, source: str) -> None:
    """A corpus name or a non-empty text file / directory the data loaders accept."""
    from jaxprune.data import check_source

    try:
        check_source(source)
    except ValueError as err:
        raise UsageError(f"{flag}: {err}") from None


def check_positive(**values: int | None) -> None:
    """Every given value is a positive integer (``None``: not given)."""
    for name, value in values.items():
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def check_output(out: str | None, overwrite: bool) -> Path | None:
    """``--out``: a new path in an existing directory, or (with ``--overwrite``) a checkpoint."""
    if out is None:
        return None
    from jaxprune.checkpoint import MANIFEST_NAME, is_checkpoint

    path = Path(out)
    if path.exists() and not overwrite:
        raise UsageError(f"--out {path}: already exists; choose another path or pass --overwrite")
    if path.exists() and not (is_checkpoint(path) or (path.is_dir() and not any(path.iterdir()))):
        raise UsageError(
            f"--out {path}: --overwrite replaces jaxprune checkpoints only, and this is not one "
            f"(no {MANIFEST_NAME}); remove it yourself or choose another path"
        )
    if not path.parent.exists():
        raise UsageError(f"--out {path}: parent directory {path.parent} does not exist")
    return path


def parse_options(items: list[str]) -> dict[str, Any]:
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


def parse_overrides(items: list[str]) -> dict[str, float | str]:
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


def add_process_args(parser: argparse.ArgumentParser) -> None:
    """``--coordinator``, ``--num-processes``, ``--process-id``, ``--distributed``."""
    group = parser.add_argument_group(
        "many processes (one per host or accelerator, each running this same command)"
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address and port")
    group.add_argument("--num-processes", type=int, help="how many processes take part")
    group.add_argument("--process-id", type=int, help="this process's index, 0..N-1")
    group.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run described by the cluster's environment (TPU VM, SLURM, "
        "Open MPI, JAX_COORDINATOR_ADDRESS) as JAX reads it",
    )


def start_processes(args: argparse.Namespace) -> None:
    """Joins the multi-process run the arguments describe (nothing if they describe none)."""
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if all(value is None for value in explicit) and not args.distributed:
        return
    if args.distributed and any(value is not None for value in explicit):
        raise UsageError("--distributed reads the environment; drop --coordinator and the rest")
    if args.mesh is None:
        raise UsageError("a multi-process run needs --mesh DATAxMODEL over all processes' devices")
    from jaxprune import distributed

    try:
        distributed.initialize(*explicit)
    except ValueError as err:
        raise UsageError(f"--coordinator/--num-processes/--process-id: {err}") from None


def mesh_from_arg(text: str | None):
    """The ``--mesh DATAxMODEL`` argument as a mesh over every process's devices (None if
    absent)."""
    if text is None:
        return None
    from jaxprune import sharding

    try:
        return sharding.make_mesh(sharding.parse_mesh(text))
    except ValueError as err:
        raise UsageError(f"--mesh {text!r}: {err}") from None


def load_recipe_file(path: str, recipe_type: type = Recipe) -> Any:
    """``--recipe``: a YAML/JSON recipe (a :class:`Recipe`, or a :class:`StructuredRecipe` for
    ``llm-pruner``/``flap``), every problem a one-line usage error."""
    try:
        return recipe_type.load(path)
    except FileNotFoundError:
        raise UsageError(f"--recipe {path}: no such file") from None
    except ValueError as err:
        raise UsageError(f"--recipe {err}") from None


def recipe_file_method(path: str | None) -> str | None:
    """The ``method`` a ``--recipe`` file names (``None`` without a file or a method)."""
    if path is None:
        return None
    try:
        method = read_mapping(path, "recipe").get("method")
    except FileNotFoundError:
        raise UsageError(f"--recipe {path}: no such file") from None
    except ValueError as err:
        raise UsageError(f"--recipe {err}") from None
    return method if isinstance(method, str) else None


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe of ``prune``: a ``--recipe`` file, then the explicit options over it."""
    fields: dict[str, Any] = {}
    if args.recipe:
        fields = load_recipe_file(args.recipe).to_dict()
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
    if getattr(args, "refine", None):
        fields["method"] = f"{fields.get('method') or Recipe.method}+{args.refine}"
    if args.override:
        fields["overrides"] = {
            **dict(fields.get("overrides") or {}),
            **parse_overrides(args.override),
        }
    if args.option:
        fields["method_options"] = {
            **dict(fields.get("method_options") or {}),
            **parse_options(args.option),
        }
    try:
        return Recipe.from_dict(fields)
    except ValueError as err:
        raise UsageError(str(err)) from None


def method_options_help() -> str:
    """Each registered method's options with their defaults, for ``--help``."""
    from jaxprune.methods import PRUNING_METHODS

    parts = []
    for name in sorted(PRUNING_METHODS):
        options = PRUNING_METHODS[name].known_options
        listed = ", ".join(f"{k}={v}" for k, v in options.items()) or "none"
        parts.append(f"{name}: {listed}")
    return "; ".join(parts)


def emit(args: argparse.Namespace, result: dict[str, Any], summary: str) -> None:
    """Prints the human summary, or with ``--json`` the full result as one JSON line."""
    import jax

    if jax.process_index() != 0:  # a multi-process run reports once, from process 0
        return
    if getattr(args, "json", False):
        print(json.dumps(result, default=float))
    else:
        print(summary)
    sys.stdout.flush()


# Engine options that mean nothing to a structured prune (it removes heads and channels).
_ENGINE_ONLY = (
    "pattern",
    "refine",
    "targets",
    "ignore",
    "override",
    "owl_lambda",
    "owl_m",
    "option",
    "true_sequential",
    "mesh",
    "offload",
    "compact",
)


def _fraction(flag: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise UsageError(
            f"{flag} {text!r}: structured pruning removes a fraction of the parameters, e.g. 0.2 "
            "(N:M patterns are for unstructured methods)"
        ) from None


def structured_recipe_from_args(args: argparse.Namespace) -> StructuredRecipe:
    """The recipe of ``prune --method llm-pruner|flap``: a ``--recipe`` file, then the explicit
    options over it."""
    given = [f"--{n.replace('_', '-')}" for n in _ENGINE_ONLY if getattr(args, n, None)]
    if given:
        raise UsageError(
            f"{', '.join(given)} do not apply to --method {args.method}, which removes whole "
            "heads and channels"
        )
    block_range = None
    if args.block_range is not None:
        start, sep, end = args.block_range.partition(":")
        try:
            block_range = (int(start), int(end))
        except ValueError:
            sep = ""
        if not sep:
            raise UsageError(f"--block-range {args.block_range!r}: write START:END, e.g. 3:27")
    allocation = args.allocation
    if allocation in ("uniform", "owl"):
        raise UsageError(
            f"--allocation {allocation} is for unstructured methods; use per-block or global"
        )
    explicit = {
        "method": args.method,
        "sparsity": _fraction("--sparsity", args.sparsity),
        "importance": args.importance,
        "reduction": args.reduction,
        "allocation": allocation,
        "uniform": args.uniform or None,
        "mlp_multiple": args.mlp_multiple,
        "block_range": block_range,
        "attention_unit": args.attention_unit,
        "bias_compensation": False if args.no_bias_compensation else None,
        "remat": args.remat or None,
        "calib": args.calib,
        "nsamples": args.nsamples,
        "seqlen": args.seqlen,
        "seed": args.seed,
        "batch_size": args.batch_size,
    }
    fields: dict[str, Any] = {}
    if args.recipe:
        load_recipe_file(args.recipe, StructuredRecipe)  # the file alone is valid (errors name it)
        # Its fields as written: the per-method defaults follow the method finally chosen.
        fields = read_mapping(args.recipe, "recipe")
    fields.update({k: v for k, v in explicit.items() if v is not None})
    try:
        return StructuredRecipe.from_dict(fields)
    except ValueError as err:
        raise UsageError(str(err)) from None
