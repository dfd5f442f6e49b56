"""Where the original SparseLLM's gradient step on ``s`` is unstable, per block of a model.

The original (BaiTheBest/SparseLLM ``27fe26a``, ``model_utils.llama_sparsellm``; the driver
``sparsellm.py`` runs it) updates the gate pre-activation ``s`` by a fixed number of plain
gradient steps of a fixed learning rate ``lr`` on

    α‖s − W_gate X‖² + γ‖p − silu(s) ⊙ z‖²          (α = γ = 5, lr = 0.01, 2 steps there)

The objective is a sum of one-entry terms. Where ``p = silu(s) ⊙ z`` (the dense variables the
loop starts from) the second derivative of an entry's term is ``k = 2α + 2γ (z · silu'(s))²``,
and a gradient step multiplies a deviation of that entry by ``1 − lr·k``: it grows once
``lr·k > 2``, i.e. where ``|z · silu'(s)|`` is large. This script measures ``lr·k`` on a model's
dense MLP activations, per block (the maximum, the share of entries past 2, the largest ``|z|``),
to set beside the original's printed per-pass errors (``sparsellm.py`` records them). Block 0's
entries are the ones the original starts from; later blocks' are the dense model's, not those of
its pruned prefix. jaxprune's ``s`` update (Gauss-Newton steps kept only where they lower the
objective, ``jaxprune/methods/sparsellm.py``) cannot raise it.

    python -m benchmarks.xcheck.sparsellm_sstep --out benchmarks/results/sparsellm_sstep_cpu.json
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from benchmarks.xcheck import _protocol as protocol


def silu_slope(s: np.ndarray) -> np.ndarray:
    """d silu(s) / ds = σ(s)(1 + s(1 − σ(s)))."""
    sig = 1.0 / (1.0 + np.exp(-s))
    return sig * (1.0 + s * (1.0 - sig))


def step_factor(
    s: np.ndarray, z: np.ndarray, *, alpha: float, gamma: float, lr: float
) -> np.ndarray:
    """``lr`` times the second derivative in ``s`` of ``α(s − m)² + γ(p − silu(s)z)²`` at
    ``p = silu(s)z``, entry by entry; a gradient step amplifies a deviation where it exceeds 2."""
    s, z = np.asarray(s, np.float64), np.asarray(z, np.float64)
    return lr * (2 * alpha + 2 * gamma * (z * silu_slope(s)) ** 2)


def block_stats(factor: np.ndarray, z: np.ndarray) -> dict[str, Any]:
    """The maximum factor, how many entries exceed 2 (and their share), the largest ``|z|``."""
    past = int((factor > 2).sum())
    return {
        "max_factor": float(factor.max()),
        "entries_past_2": past,
        "share_past_2": past / factor.size,
        "max_abs_z": float(np.abs(z).max()),
    }


def mlp_entries(model: Any, windows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per decoder block, the dense ``(s, z)`` = (gate_proj, up_proj) outputs on ``windows``."""
    import torch

    layers = model.model.layers
    seen: dict[tuple[int, str], list[np.ndarray]] = {}

    def hook(index: int, name: str):
        def record(_module, _inputs, output):
            seen.setdefault((index, name), []).append(output.detach().reshape(-1).numpy())

        return record

    handles = [
        getattr(layer.mlp, name).register_forward_hook(hook(i, name))
        for i, layer in enumerate(layers)
        for name in ("gate_proj", "up_proj")
    ]
    try:
        with torch.no_grad():
            for row in windows:
                model(torch.as_tensor(row[None].astype(np.int64)))
    finally:
        for handle in handles:
            handle.remove()
    return [
        (np.concatenate(seen[(i, "gate_proj")]), np.concatenate(seen[(i, "up_proj")]))
        for i in range(len(layers))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    protocol.add_protocol_args(parser, nsamples=8)
    parser.add_argument("--alpha", type=float, default=5.0, help="the original's α")
    parser.add_argument("--gamma", type=float, default=5.0, help="the original's γ")
    parser.add_argument("--lr", type=float, default=0.01, help="the original's s learning rate")
    args = parser.parse_args()

    import jaxprune as jp

    pre = jp.load_pretrained(args.model)
    calib, _ = protocol.windows(pre, args)
    model = protocol.TorchModel(pre, args.hf_dir).load()
    blocks = []
    for index, (s, z) in enumerate(mlp_entries(model, calib)):
        factor = step_factor(s, z, alpha=args.alpha, gamma=args.gamma, lr=args.lr)
        blocks.append({"block": index, **block_stats(factor, z)})
        print(blocks[-1], flush=True)
    protocol.write_measurement(
        args.out,
        f"{args.model}: lr·k of the original SparseLLM's s step on the dense MLPs",
        args,
        blocks=blocks,
    )


if __name__ == "__main__":
    main()
