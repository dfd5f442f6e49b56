"""ALPS: jaxprune vs the authors' whole-model pipeline, same windows (SmolLM2 at 70% by default).

Original (imported from a checkout, never copied): mazumder-lab/ALPS,
https://github.com/mazumder-lab/ALPS, commit 8af9e6b5c8b1b06a028bde6065e5c38829df3a19
(``--repo-dir``): ``llama.py``'s ``llama_sequential`` unmodified, which builds an ``ALPS_prune``
(``alps.py``) for every linear of a decoder layer and calls ``ALPS_admm(sp, nm_n, nm_m, rho=0.1)``
with that method's own defaults (300 iterations, schedule every 3, switch after 30, CG 10 steps).
``llama_sequential`` reads the module-level ``args`` of the authors' ``__main__``; the driver sets
it to a namespace with their argparse defaults (``method ALPS``, ``nm_n = nm_m = 0``, ``rho 300``
— unused by ``llama_sequential``, which passes ρ 0.1 —, ``seed``) and our ``--sparsity`` and
calibration count. Their ``dataloader`` is our calibration windows, ``dev`` the CPU.

``alps.py`` sends every tensor to ``cuda:0`` (``.to('cuda:0')``, its module-level ``dev``); while
the original runs, the driver maps those moves to the CPU (restored afterwards) and makes
``torch.cuda.synchronize`` a no-op. Each decoder layer gets the rotary embeddings its loop does
not pass (``_protocol.with_layer_context``). jaxprune runs ``method="alps"`` with its defaults
(the authors' ADMM/CG settings). Both are scored on the same Hamlet windows; the row also holds
the share of the original's kept weights jaxprune keeps too, per linear (mean, min, by projection).

    git --git-dir=$(fetch mazumder-lab/ALPS) archive 8af9e6b | tar -x -C /tmp/ALPS
    python -m benchmarks.xcheck.alps --repo-dir /tmp/ALPS --sparsity 0.7 \\
        --out benchmarks/results/xcheck_alps_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import types
from collections.abc import Iterator
from typing import Any

from benchmarks._common import import_original, write_json
from benchmarks.xcheck import _protocol as protocol

ALPS = ("https://github.com/mazumder-lab/ALPS", "8af9e6b5c8b1b06a028bde6065e5c38829df3a19")


def authors_args(args: argparse.Namespace, nsamples: int) -> types.SimpleNamespace:
    """``llama.py``'s argparse defaults, with our sparsity and calibration count."""
    return types.SimpleNamespace(
        model=args.model,
        dataset="c4",  # the calibration set's name only; the windows are ours
        method="ALPS",
        sp=args.sparsity,
        seed=args.seed,
        nm_n=0,
        nm_m=0,
        nsamples=nsamples,
        rho=300.0,
    )


@contextlib.contextmanager
def cuda_moves_on_cpu(alps: Any) -> Iterator[None]:
    """``Tensor.to('cuda…')`` → the CPU and ``alps.dev = 'cpu'`` for the block, then restored."""

    def on_cpu(device: Any) -> Any:
        cuda = isinstance(device, str) and device.startswith("cuda")
        return "cpu" if cuda or getattr(device, "type", None) == "cuda" else device

    dev, alps.dev = alps.dev, "cpu"
    try:
        with protocol.tensor_to_rewritten(on_cpu):
            yield
    finally:
        alps.dev = dev


def original_alps(args, tm, calib, evalw) -> tuple[dict[str, Any], Any]:
    """The authors' ``llama_sequential`` on a fresh torch model: its ppl and sparsity; the model."""
    import torch

    llama = import_original(args.repo_dir, "llama")
    alps = import_original(args.repo_dir, "alps")
    llama.args = authors_args(args, len(calib))
    model = tm.load()
    model.seqlen = args.seqlen
    windows = protocol.loader_batches(calib)
    density = []

    def prune() -> None:
        with cuda_moves_on_cpu(alps):
            density.append(
                llama.llama_sequential(model, windows, torch.device("cpu"), nsamples=len(calib))
            )

    theirs = protocol.original_unstructured(model, calib, evalw, prune)
    theirs["own_sparsity"] = 1 - density[0]  # what llama_sequential itself counts and returns
    return theirs, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo-dir", required=True, help="checkout of mazumder-lab/ALPS")
    parser.add_argument("--sparsity", type=float, default=0.7)
    parser.add_argument("--attn", default="sdpa", help="transformers attention implementation")
    protocol.add_protocol_args(parser)
    args = parser.parse_args()
    import_original(args.repo_dir, "alps")  # refuse a wrong checkout before loading
    import_original(args.repo_dir, "llama")

    import jaxprune as jp
    from jaxprune.methods.alps import OPTIONS

    pre = jp.load_pretrained(args.model)
    calib, evalw = protocol.windows(pre, args)
    tm = protocol.TorchModel(pre, args.hf_dir, args.attn)
    doc = {
        "what": f"{args.model}: jaxprune's ALPS vs the authors' llama_sequential, same windows",
        **protocol.provenance(ALPS, args),
        "original_args": vars(authors_args(args, len(calib))),
        "original_admm": "ALPS_admm(sp, nm_n=0, nm_m=0, rho=0.1) with its own defaults "
        "(max_iter 300, update_iter 3, switch_iter 30; CG rtol 1e-4, maxiter 10)",
        "jaxprune_options": OPTIONS,
        "dense": {
            "jaxprune_ppl": jp.perplexity(pre.model, pre.params, evalw).ppl,
            "original_ppl": protocol.torch_perplexity(tm.load(), evalw)["ppl"],
        },
        "rows": [],
    }
    recipe = jp.Recipe(
        method="alps", sparsity=args.sparsity, nsamples=args.nsamples, seqlen=args.seqlen
    )
    ours = protocol.jaxprune_unstructured(pre, calib, evalw, recipe)
    write_json(
        args.out,
        {**doc, "partial": {"jaxprune": {k: ours[k] for k in ("ppl", "sparsity", "seconds")}}},
    )
    theirs, model = original_alps(args, tm, calib, evalw)
    row = protocol.comparison_row(f"alps:{args.sparsity}", ours, theirs)
    row["original_own_sparsity"] = theirs["own_sparsity"]
    row["kept_overlap"] = protocol.kept_overlap(
        protocol.jaxprune_linears(pre, ours["params"]), protocol.torch_linears(model)
    )
    doc["rows"].append(row)
    write_json(args.out, doc)
    print(row, flush=True)


if __name__ == "__main__":
    main()
