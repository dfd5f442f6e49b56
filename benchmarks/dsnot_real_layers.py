"""DSnoT on a real model's linears: layer errors on captured inputs, and which kernels to refine.

One sequential prune of the model (the engine's own calibration: each block sees the inputs of the
blocks pruned before it) in which every linear is solved by Wanda, by ``wanda+dsnot`` (monotone
rule), by ``wanda+dsnot`` with the authors' rule (``monotone=False``) and by ``wanda+dsnot`` on
moments that leave out each window's first token, all on the same captured statistics. Recorded
per linear, from the Hessian ``H = (2/N) Σ x xᵀ`` of its inputs: the relative layer error
‖X(W − Ŵ)‖²/‖XW‖², the share of it that is the mean-output error N‖μᵀ(W − Ŵ)‖² (what DSnoT
targets), the mean |r_j| and the swaps, on all tokens and (``tail``) without each window's first
token; and the smallest ratio σ²/E[x²] of the inputs (how much float32 cancellation could eat).

``--propagate`` chooses the kernel that goes on (and so the inputs of later blocks): ``wanda``,
``dsnot`` (every linear refined), ``dsnot-attn`` (attention linears refined, MLP linears left to
Wanda: the authors' default ``--skip_layer mlp``), ``dsnot-writers`` (only o_proj and down_proj,
the linears that write the residual stream), ``dsnot-no-qk`` (all but q_proj and k_proj, whose
outputs meet only in the attention logits) or ``dsnot-tail``; ``--authors-rule`` propagates the
authors' rule instead of the monotone one; ``--eval`` adds the Hamlet perplexity of the result.

    python benchmarks/dsnot_real_layers.py --propagate dsnot-attn --eval --out /tmp/layers.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from _common import protocol_windows, write_json

import jaxprune as jp
from jaxprune.engine import block
from jaxprune.methods import get_method
from jaxprune.methods.base import Method, register_method
from jaxprune.methods.statistics import HESSIAN, MOMENTS, Statistic, combine

_PATHS: list[str] = []  # the paths of the tap group being solved, in solve order
_ORIGINAL = block.solve_tap_group


def _with_paths(solver, unit, block_params, stats, targets):
    _PATHS[:] = [lin.path for lin in unit.linears]
    return _ORIGINAL(solver, unit, block_params, stats, targets)


def tail(stat: Statistic) -> Statistic:
    """``stat`` of every token but the first of each window (``x`` is ``(batch, seq, d)``)."""

    def update(state, x):
        if x.ndim != 3:
            raise ValueError(f"expected (batch, seq, d) inputs, got {x.shape}")
        return stat.update(state, x[:, 1:])

    return Statistic(stat.init, update)


def errors(h: np.ndarray, mean: np.ndarray, dense: np.ndarray, new: np.ndarray) -> dict:
    """Relative layer error, its mean-output share and mean |r| from ``H`` (float64)."""
    delta = dense - new
    second = h / 2  # E[x xᵀ]
    total = np.sum((second @ delta) * delta)
    r = mean @ delta
    return {
        "rel_error": float(total / np.sum((second @ dense) * dense)),
        "mean_share": float(np.sum(r**2) / total),
        "mean_abs_r": float(np.abs(r).mean()),
    }


VARIANTS = ("wanda", "dsnot", "dsnot authors-rule", "dsnot tail-moments")


def probe(propagate: str, log: dict, authors_rule: bool = False) -> Method:
    wanda, dsnot = get_method("wanda"), get_method("wanda+dsnot")

    def solve(kernel, stats, target):
        lin, moments, lin_tail, moments_tail = stats
        path = _PATHS.pop(0)
        w = np.asarray(kernel, np.float64)
        base, keep = wanda.solve(kernel, lin, target)
        opts = dict(dsnot.options)
        rows = {
            "wanda": (base, keep),
            "dsnot": dsnot.solve(kernel, (lin, moments), target, **opts),
            "dsnot authors-rule": dsnot.solve(
                kernel, (lin, moments), target, **{**opts, "monotone": False}
            ),
            "dsnot tail-moments": dsnot.solve(kernel, (lin, moments_tail), target, **opts),
        }
        sq = np.asarray(moments.sq_sum, np.float64) / float(moments.count)
        entry = {"min_var_over_meansq": float(np.min(np.asarray(moments.variance) / sq))}
        for name, (new, new_keep) in rows.items():
            new = np.asarray(new, np.float64)
            entry[name] = errors(
                np.asarray(lin.hessian, np.float64), np.asarray(moments.mean), w, new
            )
            entry[name]["tail"] = errors(
                np.asarray(lin_tail.hessian, np.float64), np.asarray(moments_tail.mean), w, new
            )
            entry[name]["swaps"] = int(np.sum(np.asarray(new_keep) != np.asarray(keep)) // 2)
        log[path] = entry
        print(path, json.dumps(entry), flush=True)
        writer = re.search(r"(o_proj|down_proj)/kernel$", path) is not None
        if (
            propagate == "wanda"
            or (propagate == "dsnot-attn" and "mlp" in path)
            or (propagate == "dsnot-writers" and not writer)
            or (propagate == "dsnot-no-qk" and re.search(r"(q_proj|k_proj)/kernel$", path))
        ):
            return base, keep
        if propagate == "dsnot-tail":
            return rows["dsnot tail-moments"]
        return rows["dsnot authors-rule" if authors_rule else "dsnot"]

    statistics = combine(HESSIAN, MOMENTS, tail(HESSIAN), tail(MOMENTS))
    return Method(f"dsnot-probe-{propagate}", solve, statistics=statistics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--target", default="0.7")
    parser.add_argument(
        "--propagate",
        choices=["wanda", "dsnot", "dsnot-attn", "dsnot-tail", "dsnot-writers", "dsnot-no-qk"],
        default="wanda",
    )
    parser.add_argument(
        "--authors-rule", action="store_true", help="propagate monotone=False (their stop rule)"
    )
    parser.add_argument("--nsamples", type=int, default=64)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval-nsamples", type=int, default=32)
    parser.add_argument("--blocks", default=".*", help="regex of block paths to prune")
    parser.add_argument("--eval", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    block.solve_tap_group = _with_paths
    log: dict = {}
    method = probe(args.propagate, log, args.authors_rule)
    register_method(method, overwrite=True)
    pre = jp.load_pretrained(args.model)
    calib, evalw = protocol_windows(
        pre.tokenizer, args.nsamples, args.seqlen, args.eval_nsamples, 0
    )
    recipe = jp.Recipe(
        method=method.name,
        sparsity=args.target,
        targets=[rf"layers/{args.blocks}/(self_attn|mlp)/\w+_proj/kernel"],
        nsamples=args.nsamples,
        seqlen=args.seqlen,
    )
    result = jp.prune(pre.model, pre.params, calib, recipe, progress=False)
    data = {"config": vars(args) | {"out": str(args.out)}, "layers": log}
    if args.eval:
        data["ppl"] = jp.perplexity(pre.model, result.params, evalw, batch_size=8).ppl
        print("ppl", data["ppl"], flush=True)
    summary = {}
    for variant in VARIANTS:
        for kind in ("self_attn", "mlp"):
            for part in ("all", "tail"):
                vals = [
                    (e[variant] if part == "all" else e[variant]["tail"])["rel_error"]
                    for p, e in log.items()
                    if re.search(kind, p)
                ]
                summary[f"{variant} {kind} {part}"] = float(np.mean(vals)) if vals else None
    data["summary"] = summary
    print(json.dumps(summary, indent=1))
    write_json(args.out, data)


if __name__ == "__main__":
    main()
