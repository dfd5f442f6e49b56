"""Per-expert statistics of a mixture-of-experts block against a dense block of the same size.

A dense LLaMA block and a Mixtral block with the same attention and the same MLP parameters
(``experts × expert width = dense width``, top-2 routing) are calibrated on the same random
windows. For Wanda's squared norms and SparseGPT's Hessians this measures, per block, the capture
pass (the forward step and the statistics step, timed apart with ``profile``) and XLA's bytes of
both compiled steps (arguments + outputs + temporaries), and the whole one-shot prune; the result
is the MoE/dense ratio of each. Random weights: this says what per-expert statistics cost, never
how well a pruned MoE works (a small random MoE cannot show quality).

    python benchmarks/moe_statistics.py --out benchmarks/results/moe_statistics_cpu.json
"""

from __future__ import annotations

import argparse
import statistics as stats_lib
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import write_json

import jaxprune as jp
from jaxprune.engine import calibrate
from jaxprune.engine.experts import init_stats
from jaxprune.engine.report import PruneLog
from jaxprune.models import LanguageModel, LlamaConfig, MixtralConfig

COMMON = dict(
    vocab_size=512,
    hidden_size=256,
    num_hidden_layers=2,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=512,
)


def models(experts: int, dense_width: int) -> dict[str, LanguageModel]:
    moe = MixtralConfig(
        **COMMON,
        intermediate_size=dense_width // experts,
        num_local_experts=experts,
        num_experts_per_tok=2,
    )
    return {
        "dense": LanguageModel(LlamaConfig(**COMMON, intermediate_size=dense_width)),
        "moe": LanguageModel(moe),
    }


def random_params(model: LanguageModel, seed: int = 0):
    rng = np.random.default_rng(seed)

    def draw(leaf):
        shape = np.shape(leaf)
        if len(shape) < 2:
            return jnp.ones(shape, jnp.float32)
        return jnp.asarray(rng.standard_normal(shape) * shape[-2] ** -0.5, jnp.float32)

    return jax.tree.map(draw, jax.eval_shape(model.init_params))


def _xla_bytes(lowered) -> int:
    m = lowered.compile().memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)


def capture(model, params, windows, method: str, repeats: int) -> dict:
    """One block's capture pass: seconds (forward, statistics) and XLA bytes of both steps."""
    m = jp.get_method(method)
    statistic = m.statistics
    taps = tuple(tap for tap, names in model.family.sequential_groups if tap != "router_in")
    log = PruneLog(m, jp.Recipe(method=method), profile=True)
    runner = calibrate.BlockRunner(model, 8, log, profile=True)
    hidden = [
        model.embed(params, jnp.asarray(windows[i : i + 8])) for i in range(0, len(windows), 8)
    ]
    block = model.block_params(params, 0)
    forward, stats = [], []
    for k in range(repeats + 1):
        log.timings.update(forward_seconds=0.0, stats_seconds=0.0)
        runner.run(block, hidden, index=0, statistic=statistic, stat_taps=taps)
        if k:  # the first pass compiles
            forward.append(log.timings["forward_seconds"])
            stats.append(log.timings["stats_seconds"])
    step = calibrate._forward_step.lower(
        model, block, hidden[0], 0, taps=taps, with_output=True, batch=None
    )
    _, captured = calibrate._forward_step(
        model, block, hidden[0], 0, taps=taps, with_output=True, batch=None
    )
    state = {t: init_stats(statistic, runner._tap_kernel(block, t).shape) for t in taps}
    stats_step = calibrate._statistics_step.lower(
        captured,
        state,
        {},
        statistic=statistic,
        stat_taps=tuple(sorted(taps)),
        error_taps=(),
        collect_taps=(),
        replicated=None,
    )
    state_bytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(state))
    return {
        "forward_seconds": forward,
        "stats_seconds": stats,
        "forward_step_bytes": _xla_bytes(step),
        "statistics_step_bytes": _xla_bytes(stats_step),
        "statistics_state_bytes": state_bytes,
    }


def whole_prune(model, params, windows, method: str, repeats: int) -> list[float]:
    seconds = []
    for k in range(repeats + 1):
        t0 = time.perf_counter()
        recipe = jp.Recipe(method=method, sparsity=0.5)
        jp.prune(model, params, windows, recipe, progress=False)
        if k:
            seconds.append(time.perf_counter() - t0)
    return seconds


def _summary(values: list[float]) -> dict:
    return {
        "median": stats_lib.median(values),
        "std": stats_lib.stdev(values) if len(values) > 1 else 0.0,
        "runs": values,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/moe_statistics_cpu.json")
    parser.add_argument("--experts", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--dense-width", type=int, default=1024)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    windows = np.random.default_rng(0).integers(
        0, COMMON["vocab_size"], (args.windows, args.seqlen)
    )
    rows = []
    for experts in args.experts:
        pair = models(experts, args.dense_width)
        for method in ("wanda", "sparsegpt"):
            row = {"experts": experts, "method": method}
            for name, model in pair.items():
                params = random_params(model)
                row[f"{name}_params"] = int(sum(x.size for x in jax.tree.leaves(params)))
                block = capture(model, params, windows, method, args.repeats)
                block["forward_seconds"] = _summary(block["forward_seconds"])
                block["stats_seconds"] = _summary(block["stats_seconds"])
                block["prune_seconds"] = _summary(
                    whole_prune(model, params, windows, method, max(2, args.repeats // 2))
                )
                row[name] = block
            d, m = row["dense"], row["moe"]
            row["ratio_moe_over_dense"] = {
                "forward_seconds": m["forward_seconds"]["median"] / d["forward_seconds"]["median"],
                "stats_seconds": m["stats_seconds"]["median"] / d["stats_seconds"]["median"],
                "prune_seconds": m["prune_seconds"]["median"] / d["prune_seconds"]["median"],
                "forward_step_bytes": m["forward_step_bytes"] / d["forward_step_bytes"],
                "statistics_step_bytes": m["statistics_step_bytes"] / d["statistics_step_bytes"],
                "statistics_state_bytes": m["statistics_state_bytes"] / d["statistics_state_bytes"],
            }
            print(experts, method, {k: round(v, 2) for k, v in row["ratio_moe_over_dense"].items()})
            rows.append(row)
    config = {**COMMON, "dense_width": args.dense_width, "top_k": 2}
    shape = {"windows": args.windows, "seqlen": args.seqlen, "repeats": args.repeats}
    write_json(args.out, {"config": config, "calibration": shape, "rows": rows})


if __name__ == "__main__":
    main()
