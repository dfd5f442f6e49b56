"""The whole job in one call: load a model, calibrate, prune, evaluate, save.

What the command line does is one function away for a notebook user::

    import jaxprune as jp

    result = jp.prune_pretrained("smollm2-135m", jp.Recipe(method="sparsegpt", sparsity=0.5),
                                 eval_source="shakespeare-hamlet")
    print(result.report["eval"])                # perplexity before and after
    result.save("/tmp/pruned", compact=True)     # a model of its own: jp.load_pretrained(...)

The job has two stages. :func:`prepare` does everything that can fail on bad input — loads the
model, checks the recipe against it (targets, overrides, sequence length), cuts the calibration
and evaluation windows — so that mistakes surface before any pruning work; :func:`run` prunes and
evaluates.

A :class:`~jaxprune.structured.StructuredRecipe` instead of a :class:`Recipe` routes the job to
:mod:`jaxprune.structured` (LLM-Pruner, FLAP): the result is a physically smaller model.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from jaxprune import allocation
from jaxprune._log import info
from jaxprune.data import load_windows
from jaxprune.engine import PrunePlan, prune
from jaxprune.eval import perplexity
from jaxprune.methods import get_method
from jaxprune.models.base import LanguageModel, Params
from jaxprune.models.loaders import Pretrained, load_pretrained, save_pruned
from jaxprune.pipeline.versions import package_versions
from jaxprune.recipes import Recipe
from jaxprune.structured import StructuredRecipe, make_plan, prune_structured


@dataclasses.dataclass(frozen=True)
class PrunedModel:
    """A pruned model with what made it.

    Attributes:
      pretrained: the dense model it was pruned from (model, params, tokenizer, source).
      params: the pruned params.
      masks: keep-masks (the params' structure, ``None`` where unpruned; ``None`` after a
        structured prune, which removes instead of masking).
      recipe: the recipe that ran.
      report: the prune report (see :func:`jaxprune.prune`), with ``model`` and, when evaluated,
        ``eval`` (``{"data", "dense", "pruned"}`` perplexities).
      calibration: the calibration windows that were used (``source``, ``windows``, ``seqlen``,
        ``seed``), or ``None`` when the method read none.
      model: the pruned model when its shapes differ from ``pretrained.model`` (structured).
    """

    pretrained: Pretrained
    params: Params
    masks: Params | None
    recipe: Recipe | StructuredRecipe
    report: dict[str, Any]
    calibration: dict[str, Any] | None = None
    model: LanguageModel | None = None

    @property
    def pruned(self) -> Pretrained:
        """The pruned model as a :class:`Pretrained` (its own model, params and the tokenizer)."""
        model = self.model or self.pretrained.model
        return dataclasses.replace(self.pretrained, model=model, params=self.params)

    def save(
        self, directory: str | os.PathLike, *, compact: bool = False, overwrite: bool = False
    ) -> dict[str, Any]:
        """Writes the pruned model as a jaxprune checkpoint (see :func:`save_pruned`).

        Its ``recipe.json`` records the calibration that actually ran (``"calibration"``), which
        is ``null`` for a method that read no data, and the versions of the packages that decide
        the numbers (``"versions"``, see :func:`~.versions.package_versions`).
        """
        info("saving to %s", directory)
        return save_pruned(
            directory,
            self.pruned,
            self.params,
            masks=self.masks,
            recipe={
                **self.recipe.to_dict(),
                "calibration": self.calibration,
                "versions": package_versions(),
            },
            report=self.report,
            compact=compact,
            overwrite=overwrite,
        )


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A model and the windows of one job, checked and ready (see :func:`prepare`)."""

    pretrained: Pretrained
    recipe: Recipe | StructuredRecipe
    calibration: np.ndarray | None
    eval_source: str | None
    eval_windows: np.ndarray | None


def load_with_tokenizer(model: str | os.PathLike, dtype: Any = None) -> Pretrained:
    """:func:`load_pretrained`, refusing a model without a tokenizer (text cannot be encoded)."""
    pretrained = load_pretrained(model, dtype)
    if pretrained.tokenizer is None:
        raise ValueError(f"{model!r} carries no tokenizer, so text data cannot be encoded")
    return pretrained


def needs_calibration(recipe: Recipe | StructuredRecipe) -> bool:
    """Whether the recipe's method or allocation reads calibration windows."""
    if isinstance(recipe, StructuredRecipe):
        return recipe.needs_calibration
    return get_method(recipe.method).needs_inputs or recipe.allocation == "owl"


def check_recipe(
    pretrained: Pretrained, recipe: Recipe | StructuredRecipe, seqlens: tuple[int, ...] = ()
) -> None:
    """``ValueError`` if ``recipe`` cannot run on this model: targets or overrides that match
    nothing, targets a method cannot prune, windows longer than the model's positions, or (for a
    structured recipe) a sparsity the block range cannot reach."""
    limit = getattr(pretrained.model.config, "max_position_embeddings", None)
    for seqlen in (recipe.seqlen, *seqlens):
        if limit is not None and seqlen > limit:
            raise ValueError(
                f"windows of {seqlen} tokens are longer than this model's "
                f"max_position_embeddings={limit}; use seqlen <= {limit}"
            )
    model = pretrained.model
    if isinstance(recipe, StructuredRecipe):
        blocks = recipe.blocks(model.num_blocks)
        make_plan(model, recipe.sparsity, blocks, recipe.attention_unit, recipe.allocation)
        return
    plan = PrunePlan.build(pretrained.model, pretrained.params, recipe, get_method(recipe.method))
    allocation.targets_for(recipe, plan.paths, pretrained.model.block_of)


def prepare(
    model: str | os.PathLike | Pretrained,
    recipe: Recipe | StructuredRecipe,
    *,
    eval_source: str | os.PathLike | None = None,
    eval_nsamples: int | None = 32,
    eval_seqlen: int | None = None,
    dtype: Any = None,
) -> Prepared:
    """Loads the model and every window of the job, checking all of it against the recipe.

    Raises:
      ValueError: anything wrong with the inputs (see :func:`check_recipe`, the loaders and
        :func:`jaxprune.data.load_windows`), before any pruning work.
    """
    pretrained = model if isinstance(model, Pretrained) else load_with_tokenizer(model, dtype)
    eval_seqlen = eval_seqlen or recipe.seqlen
    check_recipe(pretrained, recipe, (eval_seqlen,) if eval_source else ())
    eval_windows = None
    if eval_source:
        eval_windows = load_windows(
            eval_source,
            pretrained.tokenizer,
            nsamples=eval_nsamples,
            seqlen=eval_seqlen,
            split="eval",
        )
    calibration = None
    if needs_calibration(recipe):
        calibration = load_windows(
            recipe.calib,
            pretrained.tokenizer,
            nsamples=recipe.nsamples,
            seqlen=recipe.seqlen,
            seed=recipe.seed,
            split="calib",
        )
    source = None if eval_source is None else os.fspath(eval_source)
    return Prepared(pretrained, recipe, calibration, source, eval_windows)


def evaluate(
    pretrained: Pretrained,
    params: Params,
    source: str | os.PathLike,
    *,
    nsamples: int | None = 32,
    seqlen: int = 512,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Perplexity of ``params`` on evaluation windows of ``source``.

    Returns:
      ``{"ppl", "nll", "tokens"}``.
    """
    windows = load_windows(
        source, pretrained.tokenizer, nsamples=nsamples, seqlen=seqlen, split="eval"
    )
    return _perplexity(pretrained, params, windows, batch_size, progress)


def _perplexity(pretrained, params, windows, batch_size=8, progress=True) -> dict[str, Any]:
    result = perplexity(pretrained.model, params, windows, batch_size=batch_size, progress=progress)
    return {"ppl": result.ppl, "nll": result.nll, "tokens": result.tokens}


def run(
    job: Prepared,
    *,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    offload: bool = False,
    name: str | None = None,
) -> PrunedModel:
    """Prunes a prepared job and, when it has evaluation windows, measures perplexity around it.

    Raises:
      ValueError: ``mesh`` or ``offload`` with a structured recipe (it runs on one device).
    """
    pretrained, recipe = job.pretrained, job.recipe
    structured = isinstance(recipe, StructuredRecipe)
    if structured and (mesh is not None or offload):
        raise ValueError("structured pruning runs on one device: drop mesh and offload")
    quality: dict[str, Any] = {}
    if job.eval_windows is not None:
        info("evaluating the dense model on %s", job.eval_source)
        quality["dense"] = _perplexity(pretrained, pretrained.params, job.eval_windows, 8, progress)
    info("pruning with %s at %s", recipe.method, getattr(recipe, "target", recipe.sparsity))
    if structured:
        shrunk = prune_structured(
            pretrained.model, pretrained.params, job.calibration, recipe, progress=progress
        )
        params, masks, raw, model = shrunk.params, None, shrunk.report, shrunk.model
    else:
        result = prune(
            pretrained.model,
            pretrained.params,
            job.calibration,
            recipe,
            progress=progress,
            mesh=mesh,
            offload=offload,
        )
        params, masks, raw, model = result.params, result.masks, result.report, None
    report = {"model": name or str(pretrained.source), **raw}
    if job.eval_windows is not None:
        info("evaluating the pruned model on %s", job.eval_source)
        after = dataclasses.replace(pretrained, model=model or pretrained.model, params=params)
        quality["pruned"] = _perplexity(after, params, job.eval_windows, 8, progress)
        report["eval"] = {"data": job.eval_source, **quality}
    calibration = None
    if job.calibration is not None:
        calibration = {
            "source": recipe.calib,
            "windows": int(job.calibration.shape[0]),
            "seqlen": int(job.calibration.shape[1]),
            "seed": recipe.seed,
        }
    return PrunedModel(pretrained, params, masks, recipe, report, calibration, model)


def prune_pretrained(
    model: str | os.PathLike | Pretrained,
    recipe: Recipe | StructuredRecipe,
    *,
    eval_source: str | os.PathLike | None = None,
    eval_nsamples: int | None = 32,
    eval_seqlen: int | None = None,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    offload: bool = False,
    dtype: Any = None,
) -> PrunedModel:
    """Loads ``model``, prunes it with ``recipe`` and optionally measures perplexity before/after.

    Args:
      model: anything :func:`jaxprune.load_pretrained` accepts, or an already loaded model.
      recipe: what to prune and how; its ``calib``, ``nsamples``, ``seqlen`` and ``seed`` choose
        the calibration windows (loaded only when the method or allocation reads data). A
        :class:`~jaxprune.structured.StructuredRecipe` prunes whole heads and channels.
      eval_source: a corpus to measure perplexity on before and after (``None``: skip).
      eval_nsamples: evaluation windows (``None``: every complete window).
      eval_seqlen: tokens per evaluation window (default: ``recipe.seqlen``).
      progress: show progress bars.
      mesh, offload: as in :func:`jaxprune.prune` (unstructured recipes only).
      dtype: dtype to load the model in (default: float32, or a checkpoint's saved dtype).

    Returns:
      The :class:`PrunedModel`.

    Raises:
      ValueError: bad input, before any pruning (see :func:`prepare`).
    """
    job = prepare(
        model,
        recipe,
        eval_source=eval_source,
        eval_nsamples=eval_nsamples,
        eval_seqlen=eval_seqlen,
        dtype=dtype,
    )
    name = None if isinstance(model, Pretrained) else os.fspath(model)
    return run(job, progress=progress, mesh=mesh, offload=offload, name=name)


__all__ = [
    "Prepared",
    "PrunedModel",
    "check_recipe",
    "evaluate",
    "load_with_tokenizer",
    "needs_calibration",
    "prepare",
    "prune_pretrained",
    "run",
]
