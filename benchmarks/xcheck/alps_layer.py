"""Cross-check of jaxprune's ALPS against the authors' ``ALPS_prune`` on single layers (CPU).

The authors' file (github.com/mazumder-lab/ALPS, ``alps.py``) is imported from a local copy; it
hard-codes ``cuda:0``, so this driver maps every device move to the CPU. Each case draws a layer
with correlated inputs, runs their ``ALPS_admm`` (their defaults: ρ 0.1, 300 iterations, schedule
every 3, CG 10 steps) and jaxprune's ``alps.prune_kernel`` on the same ``XᵀX``, and records both
relative layer errors ‖X(W − Ŵ)‖²/‖XW‖², the share of the kept set they agree on and the weights'
relative difference. Layer sizes keep ``(1 − s)·size`` whole, where their ``round`` and our floor
count the same number of weights.

    git -C MIRROR show HEAD:alps.py > /tmp/alps-ref/alps.py
    python benchmarks/xcheck/alps_layer.py --reference /tmp/alps-ref \\
        --out benchmarks/results/alps_xcheck_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxprune.core.sparsity import NM, Unstructured, parse_target
from jaxprune.methods import alps, sparsegpt

CASES = [  # (d_in, d_out, tokens, correlation strength, target)
    (64, 40, 512, 1.0, "0.7"),
    (128, 80, 1024, 2.0, "0.7"),
    (128, 80, 1024, 2.0, "0.5"),
    (128, 80, 1024, 2.0, "2:4"),
    (256, 160, 2048, 1.0, "0.8"),
]


def load_reference(folder: Path):
    """The authors' ``ALPS_prune`` with every ``cuda`` move sent to the CPU."""
    import torch

    to = torch.Tensor.to

    def to_cpu(self, *args, **kwargs):
        args = tuple("cpu" if isinstance(a, str) and a.startswith("cuda") else a for a in args)
        return to(self, *args, **kwargs)

    torch.Tensor.to = to_cpu
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.empty_cache = lambda *a, **k: None
    sys.path.insert(0, str(folder))
    import alps as reference  # noqa: PLC0415 - the authors' file, from --reference

    reference.dev = "cpu"
    return reference.ALPS_prune, torch


def layer_error(x: np.ndarray, w: np.ndarray, new: np.ndarray) -> float:
    x = x.astype(np.float64)
    return float(np.linalg.norm(x @ (w - new)) ** 2 / np.linalg.norm(x @ w) ** 2)


def run_case(prune_class, torch, case, seed: int) -> dict:
    d_in, d_out, tokens, strength, text = case
    rng = np.random.default_rng(seed)
    mix = np.eye(d_in) + strength * rng.normal(size=(d_in, d_in)) / np.sqrt(d_in)
    x = (rng.normal(size=(tokens, d_in)) @ mix).astype(np.float32)
    w = (rng.normal(size=(d_in, d_out)) * 0.05).astype(np.float32)
    target = parse_target(text)
    layer = torch.nn.Linear(d_in, d_out, bias=False)
    layer.weight.data = torch.tensor(w.T.copy())
    solver = prune_class(layer, nsamples=1, seqlen=tokens)
    solver.add_batch(torch.tensor(x[None]), torch.tensor((x @ w)[None]))
    nm = (target.n, target.m) if isinstance(target, NM) else (0, 0)
    sparsity = target.sparsity if isinstance(target, Unstructured) else 0.5
    solver.ALPS_admm(sp=sparsity, nm_n=nm[0], nm_m=nm[1], rho=0.1)
    theirs = layer.weight.data.numpy().T.astype(np.float64)
    hessian = jnp.asarray(x.T.astype(np.float64) @ x, jnp.float32)
    ours, keep, iterations = alps.prune_kernel(w, hessian, target)
    ours, keep = np.asarray(ours, np.float64), np.asarray(keep)
    gpt, _ = sparsegpt.prune_kernel(w, hessian * (2.0 / tokens), target)
    their_keep = theirs != 0
    return {
        "shape": [d_in, d_out],
        "tokens": tokens,
        "correlation": strength,
        "target": text,
        "seed": seed,
        "kept": [int(keep.sum()), int(their_keep.sum())],
        "error_jaxprune": layer_error(x, w, ours),
        "error_authors": layer_error(x, w, theirs),
        "error_sparsegpt": layer_error(x, w, np.asarray(gpt, np.float64)),
        "kept_set_agreement": float((keep & their_keep).sum() / max(their_keep.sum(), 1)),
        "weights_rel_diff": float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)),
        "admm_iterations_jaxprune": iterations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="folder with their alps.py")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    prune_class, torch = load_reference(args.reference)
    torch.manual_seed(0)
    rows = []
    for case in CASES:
        for seed in range(args.seeds):
            row = run_case(prune_class, torch, case, seed)
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"reference": "mazumder-lab/ALPS alps.py at 8af9e6b", "rows": rows}
    args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
