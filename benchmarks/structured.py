"""Structured pruning of SmolLM2-135M: perplexity, parameter counts, and speed of the smaller model.

Protocol: LLM-Pruner's importance from ``shakespeare-calib`` 10 × 64 tokens (seed 0; the paper's
10 samples of 64 tokens), FLAP's statistics from ``shakespeare-calib`` 64 × 512 (the public
protocol's calibration windows); perplexity on ``shakespeare-hamlet`` 32 × 512, before any
recovery. The sparsity is the fraction of non-embedding parameters removed.

Speed: each model (dense and shrunk) is saved as a jaxprune checkpoint and measured in a fresh
process on the same CPU in the same run, dense and shrunk interleaved over ``--rounds`` rounds
(the minimum is reported): prefill of 32 × 512 tokens (all blocks over every token, the LM head
on the last position, batches of 8) and greedy decoding of 64 tokens after a 32-token prompt
(``jaxprune.models.generate``: no KV cache, one compiled forward per step), compilation
excluded; peak memory is the process's maximum resident set size.

    python benchmarks/structured.py --out benchmarks/results/structured_cpu.json
    python benchmarks/structured.py --part rows --resume --out ...   # finish an interrupted run
    python benchmarks/structured.py --part speed --rounds 2 --reps 2 --out speed.json
    python benchmarks/structured.py --model gemma3-270m --bos --part rows \
        --configs llm-pruner:element1 flap --out benchmarks/results/structured_gemma3_cpu.json

``--bos`` starts every window with the tokenizer's BOS token (Gemma expects one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _common import parse_config, with_bos, write_json

import jaxprune as jp

CONFIGS = [
    ("llm-pruner", "random"),
    ("llm-pruner", "l2"),
    ("llm-pruner", "vector"),
    ("llm-pruner", "element1"),
    ("llm-pruner", "element2"),
    ("flap", None),
]
SPEED = [("llm-pruner", "vector"), ("flap", None)]


def structured_config(text: str) -> tuple[str, str | None]:
    """``"llm-pruner:vector"`` → ``("llm-pruner", "vector")``; ``"flap"`` → ``("flap", None)``."""
    config = parse_config(text)
    return config.method, config.arg


def measure_speed(directory: str, reps: int) -> dict:
    """Runs in a fresh process: prefill and decode timings and the peak RSS of one checkpoint."""
    pre = jp.load_pretrained(directory)
    model, params = pre.model, pre.params
    tokens = np.random.default_rng(0).integers(0, model.config.vocab_size, (32, 512))

    @jax.jit
    def prefill(params, batch):
        hidden = model.embed(params, batch)
        for i in range(model.num_blocks):
            hidden = model.block(model.block_params(params, i), hidden)
        return model.head(params, hidden[:, -1:])

    def run_prefill() -> float:
        start = time.perf_counter()
        for lo in range(0, 32, 8):
            prefill(params, jnp.asarray(tokens[lo : lo + 8])).block_until_ready()
        return time.perf_counter() - start

    from jaxprune.models.generate import greedy_generate

    prompt = tokens[0, :32].tolist()
    run_prefill()  # compile
    greedy_generate(model, params, prompt, 64)  # compile
    prefill_s = min(run_prefill() for _ in range(reps))
    decode_s = []
    for _ in range(reps):
        start = time.perf_counter()
        greedy_generate(model, params, prompt, 64)
        decode_s.append(time.perf_counter() - start)
    return {
        "prefill_seconds": prefill_s,
        "decode_tokens_per_second": 64 / min(decode_s),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "param_bytes": sum(x.nbytes for x in jax.tree.leaves(params)),
    }


def speed_in_subprocess(directory: Path, reps: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--speed-of", str(directory), "--reps", str(reps)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def prune_and_evaluate(pre, method, importance, sparsity, windows, hamlet) -> tuple:
    recipe = jp.StructuredRecipe(method=method, importance=importance, sparsity=sparsity)
    calib = windows[method]
    start = time.perf_counter()
    result = jp.prune_structured(pre.model, pre.params, calib, recipe)
    seconds = time.perf_counter() - start
    ppl = jp.perplexity(result.model, result.params, hamlet).ppl
    report = result.report
    row = {
        "method": method,
        "importance": importance,
        "sparsity": sparsity,
        "perplexity": ppl,
        "params_before": report["params_before"],
        "params_after": report["params_after"],
        "removed_fraction": report["removed_fraction"],
        "calibration": report["calibration"],
        "prune_seconds": seconds,
        "widths": report["widths"],
    }
    return row, result


def load_protocol(model: str = "smollm2-135m", bos: bool = False):
    """The model, calibration windows by method and the Hamlet windows (``bos``: every window
    starts with the tokenizer's BOS token, then its first ``seqlen - 1`` tokens, as Gemma expects).
    """
    pre = jp.load_pretrained(model)
    windows = {
        "llm-pruner": jp.load_windows("shakespeare-calib", pre.tokenizer, nsamples=10, seqlen=64),
        "flap": jp.load_windows("shakespeare-calib", pre.tokenizer, nsamples=64, seqlen=512),
    }
    hamlet = jp.load_windows(
        "shakespeare-hamlet", pre.tokenizer, nsamples=32, seqlen=512, split="eval"
    )
    if bos:
        token = pre.tokenizer.bos_token_id
        windows = {name: with_bos(w, token) for name, w in windows.items()}
        hamlet = with_bos(hamlet, token)
    return pre, windows, hamlet


def run_rows(args, results: dict) -> None:
    """Perplexity rows; configurations already in ``results`` (a resumed run) are skipped."""
    pre, windows, hamlet = load_protocol(args.model, args.bos)
    if "dense" not in results:
        results["dense"] = {
            "perplexity": jp.perplexity(pre.model, pre.params, hamlet).ppl,
            "params": jp.structured.count_params(pre.model),
        }
    done = {(r["method"], r["importance"], r["sparsity"]) for r in results["rows"]}
    for sparsity in args.sparsities:
        for method, importance in args.configs:
            if (method, importance, sparsity) in done:
                continue
            row, _ = prune_and_evaluate(pre, method, importance, sparsity, windows, hamlet)
            print(json.dumps({k: v for k, v in row.items() if k != "widths"}), flush=True)
            results["rows"].append(row)
            write_json(args.out, results)


def run_speed(args, results: dict) -> None:
    """Saves the dense model and the SPEED configurations, then times them interleaved."""
    pre, windows, _ = load_protocol(args.model, args.bos)
    with tempfile.TemporaryDirectory() as tmp:
        models = {"dense": Path(tmp) / "dense"}
        jp.save_pruned(models["dense"], pre, pre.params)
        for sparsity in args.sparsities:
            for method, importance in args.speed_configs:
                recipe = jp.StructuredRecipe(
                    method=method, importance=importance, sparsity=sparsity
                )
                result = jp.prune_structured(pre.model, pre.params, windows[method], recipe)
                name = f"{method}-{importance or 'fluctuation'}-{sparsity}"
                models[name] = Path(tmp) / name
                shrunk = jp.Pretrained(result.model, result.params, pre.tokenizer, name)
                jp.save_pruned(models[name], shrunk, result.params)
        for _ in range(args.rounds):
            for name, directory in models.items():
                speed = speed_in_subprocess(directory, args.reps)
                print(name, json.dumps(speed), flush=True)
                best = results["speed"].setdefault(name, speed)
                best["prefill_seconds"] = min(best["prefill_seconds"], speed["prefill_seconds"])
                best["decode_tokens_per_second"] = max(
                    best["decode_tokens_per_second"], speed["decode_tokens_per_second"]
                )
                best["peak_rss_bytes"] = max(best["peak_rss_bytes"], speed["peak_rss_bytes"])
                write_json(args.out, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/structured_cpu.json"))
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.5])
    parser.add_argument("--part", choices=["rows", "speed", "both"], default="both")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in --out")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved speed rounds")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per process")
    parser.add_argument(
        "--configs", nargs="+", type=structured_config, default=CONFIGS, help="METHOD[:IMPORTANCE]"
    )
    parser.add_argument("--speed-configs", nargs="+", type=structured_config, default=SPEED)
    parser.add_argument("--speed-of", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="smollm2-135m", help="embedded model name or path")
    parser.add_argument("--bos", action="store_true", help="start every window with BOS")
    args = parser.parse_args()
    if args.speed_of:
        print(json.dumps(measure_speed(args.speed_of, args.reps)))
        return
    results = {"rows": [], "speed": {}}
    if args.resume and args.out.exists():
        results = json.loads(args.out.read_text())
        measured = (results.get("model", "smollm2-135m"), results.get("bos", False))
        if measured != (args.model, args.bos):
            parser.error(f"--resume: {args.out} was measured with (model, bos) = {measured}")
    results.update(
        model=args.model,
        bos=args.bos,
        machine=f"{platform.machine()} {os.cpu_count()} CPUs, jax {jax.__version__}",
    )
    if args.part in ("rows", "both"):
        run_rows(args, results)
    if args.part in ("speed", "both"):
        run_speed(args, results)


if __name__ == "__main__":
    main()
