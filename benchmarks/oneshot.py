"""One-shot pruning of an embedded model on the public protocol: perplexity and cost per method.

Protocol: calibration ``shakespeare-calib`` (64 × 512, seed 0), evaluation ``shakespeare-hamlet``
(32 × 512). Every configuration is pruned from the same dense params with the same windows; the cost
is reported in seconds and as a ratio to one dense forward pass over the calibration windows
measured in the same run (the speed unit of benchmarks/README.md).

    python benchmarks/oneshot.py --out benchmarks/results/oneshot_cpu.json
    python benchmarks/oneshot.py --configs sparsegpt:0.7 owl+sparsegpt:0.7 --out /tmp/x.json
    python benchmarks/oneshot.py --model gemma3-270m --bos --configs ... --out ...

``--bos`` starts every window with the tokenizer's BOS token (then the window's first seqlen − 1
tokens), for models that are trained to always see one (Gemma); the dense perplexity without it is
recorded too. ``--resume`` keeps the rows of an earlier, interrupted run (e.g. killed for memory on
a shared machine) and runs only the missing configurations. ``--save-windows FILE.npz`` keeps the
exact calibration and evaluation windows (for cross-checks against other code).

A configuration is ``[owl+]METHOD[+REFINEMENT]:TARGET`` with TARGET a fraction or ``N:M``
(``wanda+dsnot:0.7``; options as ``--option wanda+dsnot.max_cycle=50``). Results are written
after every configuration (atomically), so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _common import parse_config, protocol_windows, with_bos, write_json

import jaxprune as jp

ENGINE_CONFIGS = [
    "magnitude:0.5",
    "wanda:0.5",
    "sparsegpt:0.5",
    "wanda:2:4",
    "sparsegpt:2:4",
    "wanda:0.7",
    "sparsegpt:0.7",
    "sparsegpt:0.8",
]


def dense_forward_seconds(model, params, windows, batch_size: int = 8) -> float:
    """Seconds of one jit-compiled dense forward over ``windows`` (compile excluded)."""
    step = jax.jit(lambda p, t: model.logits(p, t)[:, -1].sum())
    step(params, windows[:batch_size]).block_until_ready()
    start = time.perf_counter()
    for lo in range(0, windows.shape[0], batch_size):
        step(params, windows[lo : lo + batch_size]).block_until_ready()
    return time.perf_counter() - start


def dense_record(args, pre, calib, evalw, no_bos: float | None) -> dict:
    """The run's header: protocol, machine, the cost unit and the dense perplexity."""
    unit = dense_forward_seconds(pre.model, pre.params, jnp.asarray(calib), args.eval_batch)
    dense = jp.perplexity(pre.model, pre.params, evalw, batch_size=args.eval_batch)
    print(f"dense ppl {dense.ppl:.3f}; dense calibration forward {unit:.2f} s", flush=True)
    extra = {} if no_bos is None else {"dense_ppl_without_bos": no_bos}
    return {
        "model": args.model,
        "protocol": {
            "calib": "shakespeare-calib",
            "nsamples": args.nsamples,
            "seqlen": args.seqlen,
            "seed": args.seed,
            "eval": "shakespeare-hamlet",
            "eval_nsamples": args.eval_nsamples,
            "eval_tokens": dense.tokens,
            "bos": args.bos,
            "dtype": args.dtype,
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "device": str(jax.devices()[0].device_kind),
            "jax": jax.__version__,
        },
        "dense_forward_seconds": unit,
        **extra,
        "results": [{"config": "dense", "ppl": dense.ppl}],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--configs", nargs="+", default=ENGINE_CONFIGS)
    parser.add_argument("--nsamples", type=int, default=64)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval-nsamples", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--option", action="append", default=[], help="METHOD.KEY=VALUE")
    parser.add_argument("--bos", action="store_true", help="start every window with BOS")
    # Logits are batch × seqlen × vocab floats: 4.3 GB for 8 × 512 × Gemma's 262k vocabulary.
    parser.add_argument("--eval-batch", type=int, default=8, help="windows per logits pass")
    parser.add_argument("--save-windows", type=Path, help="write the windows to this .npz")
    parser.add_argument(
        "--dtype", default="float32", help="load and prune the model in this dtype (bfloat16, ...)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep the rows already in --out, run the others"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    configs = [parse_config(c, arg_name="target") for c in args.configs]
    method_options: dict[str, dict] = {}
    for item in args.option:
        key, _, value = item.partition("=")
        method, _, name = key.partition(".")
        method_options.setdefault(method, {})[name] = json.loads(value)

    pre = jp.load_pretrained(args.model, args.dtype)
    calib, evalw = protocol_windows(
        pre.tokenizer, args.nsamples, args.seqlen, args.eval_nsamples, args.seed
    )
    data = json.loads(args.out.read_text()) if args.resume and args.out.is_file() else None
    key = (args.model, args.bos, args.dtype)
    if (
        data is not None
        and (
            data["model"],
            data["protocol"].get("bos", False),
            data["protocol"].get("dtype", "float32"),
        )
        != key
    ):
        raise SystemExit(f"{args.out} holds another model or protocol; not resuming it")
    no_bos = None
    if args.bos:
        if data is None:
            no_bos = jp.perplexity(pre.model, pre.params, evalw, batch_size=args.eval_batch).ppl
            print(f"dense ppl without BOS {no_bos:.3f}", flush=True)
        calib = with_bos(calib, pre.tokenizer.bos_token_id)
        evalw = with_bos(evalw, pre.tokenizer.bos_token_id)
    if args.save_windows:
        np.savez(args.save_windows, calib=calib, eval=evalw)
    if data is None:
        data = dense_record(args, pre, calib, evalw, no_bos)
    else:  # the cost unit stays the first process's; later processes only add rows
        data["processes"] = data.get("processes", 1) + 1
    write_json(args.out, data)
    done = {row["config"] for row in data["results"]}
    for (method, target, allocation), text in zip(configs, args.configs, strict=True):
        if text in done:
            continue
        recipe = jp.Recipe(
            method=method,
            sparsity=target,
            allocation=allocation,
            nsamples=args.nsamples,
            seqlen=args.seqlen,
            seed=args.seed,
            method_options=method_options.get(method, {}),
        )
        result = jp.prune(pre.model, pre.params, calib, recipe, progress=False)
        ppl = jp.perplexity(pre.model, result.params, evalw, batch_size=args.eval_batch).ppl
        rep = result.report
        entry = {
            "config": text,
            "method": method,
            "target": target,
            "allocation": allocation,
            "ppl": ppl,
            "overall_sparsity": rep["overall_sparsity"],
            "seconds": rep["seconds"],
            "cost_vs_dense_forward": rep["seconds"] / data["dense_forward_seconds"],
            "solve_seconds": rep["solve_seconds"],
            "capture_seconds": rep["capture_seconds"],
            "propagate_seconds": rep["propagate_seconds"],
            "options": dict(recipe.options),
            "rel_error": {path: e.get("rel_error") for path, e in rep["layers"].items()},
        }
        if "owl" in rep:
            entry["owl"] = rep["owl"]
        if "joint_mlp" in rep:
            # Iterate 0 is per-layer SparseGPT; the solver returns the lowest-error iterate.
            entry["mlp_output_error_sparsegpt_best"] = {
                block: (r["output_error"][0], min(r["output_error"]))
                for block, r in rep["joint_mlp"].items()
            }
        data["results"].append(entry)
        write_json(args.out, data)
        print(
            f"{text:>22}: ppl {ppl:9.3f}  {rep['seconds']:7.1f} s "
            f"({entry['cost_vs_dense_forward']:.1f}x dense forward)",
            flush=True,
        )


if __name__ == "__main__":
    main()
