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

from jaxprune import allocation, distributed, sharding
from jaxprune._log import info
from jaxprune.data import RANDOM, load_windows
from jaxprune.engine import PrunePlan, prune
from jaxprune.eval import perplexity
from jaxprune.methods import get_method
from jaxprune.models.base import LanguageModel, Params
from jaxprune.models.loaders import Pretrained, save_pruned
from jaxprune.pipeline.load import load_eval_windows, load_model, load_with_tokenizer
from jaxprune.pipeline.versions import package_versions
from jaxprune.recipes import Recipe
from jaxprune.structured import StructuredRecipe, prune_structured
from jaxprune.structured.prune import check_structured

EVAL_SEQLEN = 512
"""Tokens per evaluation window unless asked otherwise: never the calibration length, so a method
calibrating on short windows (LLM-Pruner: 64) is scored on the same windows as every other."""


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
            sharding.on_devices(self.params),
            masks=sharding.on_devices(self.masks),
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
    bos: int | None = None  # the BOS id every window starts with, if any


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
    structured recipe) a sparsity it cannot reach (``structured.prune.check_structured``)."""
    limit = getattr(pretrained.model.config, "max_position_embeddings", None)
    for seqlen in (recipe.seqlen, *seqlens):
        if limit is not None and seqlen > limit:
            raise ValueError(
                f"windows of {seqlen} tokens are longer than this model's "
                f"max_position_embeddings={limit}; use seqlen <= {limit}"
            )
    model = pretrained.model
    if isinstance(recipe, StructuredRecipe):
        check_structured(model, recipe)
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
    mesh: jax.sharding.Mesh | None = None,
    bos: bool = True,
) -> Prepared:
    """Loads the model and every window of the job, checking all of it against the recipe.

    ``mesh``: the mesh the job will run on; a Hugging Face directory is then read by slices.
    Every window starts with BOS when the model's family expects one and ``bos`` is true (see
    :func:`jaxprune.data.load_windows`).

    Raises:
      ValueError: anything wrong with the inputs (see :func:`check_recipe`, the loaders and
        :func:`jaxprune.data.load_windows`), before any pruning work.
    """
    text = eval_source is not None or (needs_calibration(recipe) and recipe.calib != RANDOM)
    if isinstance(model, Pretrained):
        pretrained = model
    else:  # random calibration windows need no tokenizer
        load = load_with_tokenizer if text else load_model
        pretrained = load(model, dtype, mesh)
    bos_id = pretrained.bos_token(bos)
    eval_seqlen = eval_seqlen or EVAL_SEQLEN
    check_recipe(pretrained, recipe, (eval_seqlen,) if eval_source else ())
    eval_windows = None
    if eval_source:
        eval_windows = load_eval_windows(
            pretrained, eval_source, eval_nsamples, eval_seqlen, bos_id
        )
    calibration = None
    if needs_calibration(recipe):
        # Process 0 tokenises first; the others then find the token ids in the shared cache.
        if not distributed.is_primary():
            distributed.sync("calibration tokenised")
        calibration = load_windows(
            recipe.calib,
            pretrained.tokenizer,
            nsamples=recipe.nsamples,
            seqlen=recipe.seqlen,
            seed=recipe.seed,
            split="calib",
            vocab_size=pretrained.model.config.vocab_size,
            bos=bos_id,
        )
        if distributed.is_primary():
            distributed.sync("calibration tokenised")
    source = None if eval_source is None else os.fspath(eval_source)
    return Prepared(pretrained, recipe, calibration, source, eval_windows, bos_id)


def evaluate(
    pretrained: Pretrained,
    params: Params,
    source: str | os.PathLike,
    *,
    nsamples: int | None = 32,
    seqlen: int = 512,
    batch_size: int = 8,
    progress: bool = True,
    bos: bool = True,
) -> dict[str, Any]:
    """Perplexity of ``params`` on evaluation windows of ``source``.

    Windows start with BOS when the family expects one and ``bos`` is true.

    Returns:
      ``{"ppl", "nll", "tokens"}``.
    """
    windows = load_eval_windows(pretrained, source, nsamples, seqlen, pretrained.bos_token(bos))
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

    In a multi-process run (:mod:`jaxprune.distributed`) every process calls this with the same
    job and a mesh over all processes' devices; each keeps only its rows of the calibration
    windows, and the report gains ``processes`` (count, every process's seconds).

    Raises:
      ValueError: ``mesh`` or ``offload`` with a structured recipe (it runs on one device), or
        evaluation windows in a multi-process run.
    """
    pretrained, recipe = job.pretrained, job.recipe
    structured = isinstance(recipe, StructuredRecipe)
    if structured and (mesh is not None or offload):
        raise ValueError("structured pruning runs on one device: drop mesh and offload")
    if job.eval_windows is not None and jax.process_count() > 1:
        raise ValueError(
            "perplexity runs in one process: save the multi-process run and evaluate it with "
            "`jaxprune eval --model OUT` (or jp.load_pretrained) in a single process"
        )
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
        windows = job.calibration
        if mesh is not None and windows is not None:
            windows = sharding.global_windows(mesh, windows)  # each process keeps its rows
        result = prune(
            pretrained.model,
            pretrained.params,
            windows,
            recipe,
            progress=progress,
            mesh=mesh,
            offload=offload,
        )
        params, masks, raw, model = result.params, result.masks, result.report, None
    report = {"model": name or str(pretrained.source), **raw}
    if jax.process_count() > 1:
        report["processes"] = _gathered_seconds(raw["seconds"])
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
            "bos": job.bos is not None,
        }
    return PrunedModel(pretrained, params, masks, recipe, report, calibration, model)


def _gathered_seconds(seconds: float) -> dict[str, Any]:
    """Every process's prune time, gathered once (the report is the same in every process)."""
    from jax.experimental import multihost_utils

    every = multihost_utils.process_allgather(np.asarray([seconds], np.float64))
    return {"count": jax.process_count(), "seconds": [float(x) for x in np.ravel(every)]}


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
    bos: bool = True,
) -> PrunedModel:
    """Loads ``model``, prunes it with ``recipe`` and optionally measures perplexity before/after.

    Args:
      model: anything :func:`jaxprune.load_pretrained` accepts, or an already loaded model.
      recipe: what to prune and how; its ``calib``, ``nsamples``, ``seqlen`` and ``seed`` choose
        the calibration windows (loaded only when the method or allocation reads data). A
        :class:`~jaxprune.structured.StructuredRecipe` prunes whole heads and channels.
      eval_source: a corpus to measure perplexity on before and after (``None``: skip).
      eval_nsamples: evaluation windows (``None``: every complete window).
      eval_seqlen: tokens per evaluation window (default :data:`EVAL_SEQLEN`, 512, whatever the
        calibration length).
      progress: show progress bars.
      mesh, offload: as in :func:`jaxprune.prune` (unstructured recipes only).
      dtype: dtype to load the model in (default: float32, or a checkpoint's saved dtype).
      bos: start every window with BOS when the family expects one (Gemma); ``False`` never.

    Returns:
      The :class:`PrunedModel`.

    Raises:
      ValueError: bad input, before any pruning (see :func:`prepare`).

    Example:
      A model already in memory (no tokenizer needed: magnitude reads no data, and nothing is
      evaluated); usually ``model`` is a name or path such as ``"smollm2-135m"``:

      >>> import jaxprune as jp
      >>> model = jp.LanguageModel(jp.LlamaConfig(vocab_size=64, hidden_size=32,
      ...     intermediate_size=64, num_hidden_layers=2, num_attention_heads=4))
      >>> tiny = jp.Pretrained(model, model.init_params(seed=0), None, "tiny")
      >>> pruned = jp.prune_pretrained(tiny, jp.Recipe(method="magnitude", sparsity=0.5),
      ...                              progress=False)
      >>> pruned.report["overall_sparsity"] > 0.45, pruned.calibration is None
      (True, True)
    """
    job = prepare(
        model,
        recipe,
        eval_source=eval_source,
        eval_nsamples=eval_nsamples,
        eval_seqlen=eval_seqlen,
        dtype=dtype,
        mesh=mesh,
        bos=bos,
    )
    name = None if isinstance(model, Pretrained) else os.fspath(model)
    return run(job, progress=progress, mesh=mesh, offload=offload, name=name)


__all__ = [
    "EVAL_SEQLEN",
    "Prepared",
    "PrunedModel",
    "check_recipe",
    "evaluate",
    "needs_calibration",
    "prepare",
    "prune_pretrained",
    "run",
]
