"""The whole job in one call: load a model, calibrate, prune, evaluate, save.

What the command line does is one function away for a notebook user::

    import jaxprune as jp

    result = jp.prune_pretrained("smollm2-135m", jp.Recipe(method="sparsegpt", sparsity=0.5),
                                 eval_source="shakespeare-hamlet")
    print(result.report["eval"])                # perplexity before and after
    result.save("pruned/", compact=True)         # a model of its own: jp.load_pretrained("pruned/")

A :class:`~jaxprune.structured.StructuredRecipe` instead of a :class:`Recipe` routes the job to
:mod:`jaxprune.structured` (LLM-Pruner, FLAP): the result is a physically smaller model.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax

from jaxprune.data import load_windows
from jaxprune.engine import prune
from jaxprune.eval import perplexity
from jaxprune.methods import get_method
from jaxprune.models.base import LanguageModel, Params
from jaxprune.models.loaders import Pretrained, load_pretrained, save_pruned
from jaxprune.recipes import Recipe
from jaxprune.structured import StructuredRecipe, prune_structured


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
      model: the pruned model when its shapes differ from ``pretrained.model`` (structured).
    """

    pretrained: Pretrained
    params: Params
    masks: Params | None
    recipe: Recipe | StructuredRecipe
    report: dict[str, Any]
    model: LanguageModel | None = None

    @property
    def pruned(self) -> Pretrained:
        """The pruned model as a :class:`Pretrained` (its own model, params and the tokenizer)."""
        model = self.model or self.pretrained.model
        return dataclasses.replace(self.pretrained, model=model, params=self.params)

    def save(
        self, directory: str | os.PathLike, *, compact: bool = False, overwrite: bool = False
    ) -> dict[str, Any]:
        """Writes the pruned model as a jaxprune checkpoint (see :func:`save_pruned`)."""
        return save_pruned(
            directory,
            self.pruned,
            self.params,
            masks=self.masks,
            recipe=self.recipe.to_dict(),
            report=self.report,
            compact=compact,
            overwrite=overwrite,
        )


def load_with_tokenizer(model: str | os.PathLike) -> Pretrained:
    """:func:`load_pretrained`, refusing a model without a tokenizer (text cannot be encoded)."""
    pretrained = load_pretrained(model)
    if pretrained.tokenizer is None:
        raise ValueError(f"{model!r} carries no tokenizer, so text data cannot be encoded")
    return pretrained


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
    result = perplexity(pretrained.model, params, windows, batch_size=batch_size, progress=progress)
    return {"ppl": result.ppl, "nll": result.nll, "tokens": result.tokens}


def _calibration(pretrained: Pretrained, recipe: Recipe | StructuredRecipe):
    """The recipe's calibration windows, or ``None`` when its method reads no data."""
    if isinstance(recipe, StructuredRecipe):
        needed = recipe.needs_calibration
    else:
        needed = get_method(recipe.method).needs_inputs or recipe.allocation == "owl"
    if not needed:
        return None
    return load_windows(
        recipe.calib,
        pretrained.tokenizer,
        nsamples=recipe.nsamples,
        seqlen=recipe.seqlen,
        seed=recipe.seed,
        split="calib",
    )


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
) -> PrunedModel:
    """Loads ``model``, prunes it with ``recipe`` and optionally measures perplexity before/after.

    Args:
      model: anything :func:`jaxprune.load_pretrained` accepts, or an already loaded model.
      recipe: what to prune and how; its ``calib``, ``nsamples``, ``seqlen`` and ``seed`` choose
        the calibration windows (loaded only when the method or allocation reads data). A
        :class:`~jaxprune.structured.StructuredRecipe` prunes whole heads and channels.
      eval_source: a corpus to measure perplexity on before and after (``None``: skip).
      eval_nsamples: evaluation windows (``None``: all).
      eval_seqlen: tokens per evaluation window (``None``: ``recipe.seqlen``).
      progress: show progress bars.
      mesh, offload: as in :func:`jaxprune.prune` (unstructured recipes only).

    Returns:
      The :class:`PrunedModel`.
    """
    structured = isinstance(recipe, StructuredRecipe)
    if structured and (mesh is not None or offload):
        raise ValueError("structured pruning runs on one device: drop mesh and offload")
    pretrained = model if isinstance(model, Pretrained) else load_with_tokenizer(model)
    calibration = _calibration(pretrained, recipe)
    evaluation = {"nsamples": eval_nsamples, "seqlen": eval_seqlen or recipe.seqlen}
    quality: dict[str, Any] = {}
    if eval_source:
        quality["dense"] = evaluate(
            pretrained, pretrained.params, eval_source, **evaluation, progress=progress
        )
    if structured:
        shrunk = prune_structured(pretrained.model, pretrained.params, calibration, recipe)
        pruned = PrunedModel(pretrained, shrunk.params, None, recipe, shrunk.report, shrunk.model)
    else:
        result = prune(
            pretrained.model,
            pretrained.params,
            calibration,
            recipe,
            progress=progress,
            mesh=mesh,
            offload=offload,
        )
        pruned = PrunedModel(pretrained, result.params, result.masks, recipe, result.report)
    name = pretrained.source if isinstance(model, Pretrained) else os.fspath(model)
    report = {"model": name, **pruned.report}
    if eval_source:
        quality["pruned"] = evaluate(
            pruned.pruned, pruned.params, eval_source, **evaluation, progress=progress
        )
        report["eval"] = {"data": str(eval_source), **quality}
    return dataclasses.replace(pruned, report=report)


__all__ = ["PrunedModel", "evaluate", "load_with_tokenizer", "prune_pretrained"]
