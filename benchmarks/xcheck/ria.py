"""RIA: jaxprune vs the authors' code on the same windows, per-layer and per-output selection.

Original (imported from a checkout, never copied): biomedical-cybernetics/
Relative-importance-and-activation-pruning, https://github.com/biomedical-cybernetics/
Relative-importance-and-activation-pruning, commit 7bc55b06924659ea977f7804b773ce3ef0d55c2f
(``--repo-dir``): ``lib/prune.py``'s ``prune_ria`` unmodified, with the options of its README's
50% command (``--prune_method ria --sparsity_ratio 0.5 --sparsity_type unstructured``, a = 0.5)
and, for per-output selection, its ``--per_outneuron`` flag ("Wanda's tactic").

The authors' code reads C4 through ``lib.prune.get_loaders``; the driver hands it our calibration
windows through that name. Its per-layer threshold sorts on the GPU (``.cuda()``); on a CPU-only
torch the driver makes ``Tensor.cuda`` return the tensor itself (``_protocol.cpu_shims``). The
jaxprune side passes ``method_options={"selection": ...}`` (``--option selection=layer|output``
on the CLI) when the installed RIA has that option; without it only ``--selections output`` (the
old behaviour) can run. Torch model, layer wrapping and perplexity as in ``wanda_sparsegpt.py``.

    python -m benchmarks.xcheck.ria --repo-dir /tmp/ria --selections layer output \\
        --out benchmarks/results/xcheck_ria_cpu.json
"""

from __future__ import annotations

import argparse
import types
from typing import Any

from benchmarks._common import import_original, write_json
from benchmarks.xcheck import _protocol as protocol

RIA = (
    "https://github.com/biomedical-cybernetics/Relative-importance-and-activation-pruning",
    "7bc55b06924659ea977f7804b773ce3ef0d55c2f",
)
SELECTIONS = ("layer", "output")


def original_ria(args, tm, calib, evalw, selection: str) -> dict[str, Any]:
    """The authors' ``prune_ria`` on a fresh torch model; its ppl and sparsity."""
    import torch

    prune = import_original(args.repo_dir, "lib.prune")
    windows = protocol.loader_batches(calib)
    prune.get_loaders = lambda *_a, **_k: (windows, None)
    model = tm.load()
    model.seqlen, model.hf_device_map = args.seqlen, {}
    options = types.SimpleNamespace(
        model="llama",  # the authors' code branches on this name (llama vs opt layouts)
        calib_dataset="c4",
        nsamples=len(calib),
        seed=args.seed,
        seqlen=args.seqlen,
        sparsity_ratio=args.sparsity,
        prune_method="ria",
        a=args.alpha,
        reconstruction=False,
        gptq=False,
        reallocation=False,
        lsa=False,
        semi_sparse_acc=False,
        per_outneuron=selection == "output",
    )
    return protocol.original_unstructured(
        model,
        calib,
        evalw,
        lambda: prune.prune_ria(options, model, None, torch.device("cpu"), 0, 0),
    )


def jaxprune_options(selection: str, alpha: float) -> dict[str, Any]:
    """RIA's options for ``selection``; refuses per-layer where the installed RIA lacks it."""
    from jaxprune.methods import get_method

    if "selection" in get_method("ria").options:
        return {"alpha": alpha, "selection": selection}
    if selection == "output":
        return {"alpha": alpha}
    raise SystemExit(
        "--selections layer: this jaxprune's RIA has no `selection` option (it selects per "
        "output only); pass --selections output or use a jaxprune with RIA's selection option"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo-dir", required=True, help="checkout of the authors' RIA code")
    parser.add_argument("--selections", nargs="+", default=list(SELECTIONS), choices=SELECTIONS)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--alpha", type=float, default=0.5, help="activation exponent (their a)")
    parser.add_argument("--attn", default="sdpa", help="transformers attention implementation")
    protocol.add_protocol_args(parser)
    args = parser.parse_args()
    import_original(args.repo_dir, "lib.prune")  # refuse a wrong checkout before loading
    for selection in args.selections:
        jaxprune_options(selection, args.alpha)

    import jaxprune as jp

    pre = jp.load_pretrained(args.model)
    calib, evalw = protocol.windows(pre, args)
    tm = protocol.TorchModel(pre, args.hf_dir, args.attn)
    doc = {
        "what": f"{args.model}: jaxprune's RIA vs the authors' prune_ria, same windows",
        **protocol.provenance(RIA, args),
        "dense": {
            "jaxprune_ppl": jp.perplexity(pre.model, pre.params, evalw).ppl,
            "original_ppl": protocol.torch_perplexity(tm.load(), evalw)["ppl"],
        },
        "rows": [],
    }
    for selection in args.selections:
        options = jaxprune_options(selection, args.alpha)
        recipe = jp.Recipe(
            method="ria",
            sparsity=args.sparsity,
            nsamples=args.nsamples,
            seqlen=args.seqlen,
            method_options=options,
        )
        ours = protocol.jaxprune_unstructured(pre, calib, evalw, recipe)
        theirs = original_ria(args, tm, calib, evalw, selection)
        row = protocol.comparison_row(f"ria:{args.sparsity} selection={selection}", ours, theirs)
        doc["rows"].append({**row, "jaxprune_options": options})
        write_json(args.out, doc)
        print(doc["rows"][-1], flush=True)


if __name__ == "__main__":
    main()
