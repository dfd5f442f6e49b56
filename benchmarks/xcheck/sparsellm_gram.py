"""How unevenly the refits' Gram matrices spread their diagonal, per block of a model.

SparseLLM's refits (``jaxprune/methods/sparsellm.py``) add a ridge
``λ = refit_percdamp·mean(diag G)`` to ``G = XᵀX`` (``W_up``, ``W_gate``) and ``G = pᵀp``
(``W_down``, ``p`` the down projection's input).
Relative to a typical channel that ridge is ``refit_percdamp · mean / median`` of the diagonal, so
where one channel holds most of the trace, the same fraction is a far heavier ridge for all the
others. This script measures, on the dense model's calibration windows, for each chosen block, the
diagonal of both Gram matrices: the largest entry's share of the trace, and max / mean and
median / mean; ``sparsellm_block.py`` measures what the ridge does in those blocks.

    python -m benchmarks.xcheck.sparsellm_gram --nsamples 8 --blocks 2 11 20 27 \\
        --out benchmarks/results/sparsellm_gram_cpu.json
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from benchmarks.xcheck import _protocol as protocol
from benchmarks.xcheck.sparsellm_block import block_inputs


def diagonal_stats(diagonal: np.ndarray) -> dict[str, float]:
    """The largest entry's share of the sum, max / mean and median / mean of a Gram diagonal."""
    d = np.asarray(diagonal, np.float64)
    mean = d.mean()
    return {
        "top_share": float(d.max() / d.sum()),
        "max_over_mean": float(d.max() / mean),
        "median_over_mean": float(np.median(d) / mean),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[2, 11, 20, 27])
    protocol.add_protocol_args(parser, nsamples=8)
    args = parser.parse_args()
    if min(args.blocks) < 0:
        parser.error(f"--blocks must be block indices (0 or more), got {args.blocks}")
    import torch

    import jaxprune as jp

    pre = jp.load_pretrained(args.model)
    calib, _ = protocol.windows(pre, args)
    model = protocol.TorchModel(pre, args.hf_dir, "sdpa").load()
    rows: list[dict[str, Any]] = []
    for block in args.blocks:
        _, x = block_inputs(model, calib, block)
        mlp = model.model.layers[block].mlp
        with torch.no_grad():
            p = torch.nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x)
        rows.append(
            {
                "block": block,
                "tokens": int(x.shape[0]),
                "x": diagonal_stats((x.double() ** 2).sum(0).numpy()),
                "p": diagonal_stats((p.double() ** 2).sum(0).numpy()),
            }
        )
        print(rows[-1], flush=True)
    protocol.write_measurement(
        args.out,
        f"{args.model}: diagonal spread of SparseLLM's refit Gram matrices per block",
        args,
        rows=rows,
    )


if __name__ == "__main__":
    main()
