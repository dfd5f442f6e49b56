"""Wanda and SparseGPT: jaxprune vs the original code on the same windows (SmolLM2 or Gemma 3).

Originals (imported from checkouts, never copied):

- locuslab/wanda, https://github.com/locuslab/wanda, commit 8e8fc87b4a2f9955baa7e76e64d5fce7fa8724a6
  (``--repo-dir``): ``lib/prune.py``'s ``prune_wanda`` and ``prune_sparsegpt``, unmodified;
- IST-DASLab/sparsegpt, https://github.com/IST-DASLab/sparsegpt, commit
  147d2159dc4f3e9f73e47b32c04d7b3708f44436 (``--sparsegpt-dir``): its ``SparseGPT`` class takes
  the place of the copy wanda ships (``lib.prune.SparseGPT``; only its keyword names
  ``prune_n``/``prune_m`` are mapped to the authors' ``prunen``/``prunem``), so ``fasterprune``
  is the authors' own. Without ``--sparsegpt-dir`` wanda's copy runs.

The originals read C4 through ``lib.prune.get_loaders``; the driver hands them our calibration
windows through that name instead. They run on transformers' model of the ``jaxprune export`` of
``--model`` (float32, CPU); each decoder layer is wrapped to receive the rotary embeddings and
mask the model's own forward passes it (the originals' loops pass only ``attention_mask`` and
``position_ids``). Perplexity on both sides: the same Hamlet windows, every predicted token.

    git --git-dir=$(fetch locuslab/wanda) archive 8e8fc87 | tar -x -C /tmp/wanda   # etc.
    python -m benchmarks.xcheck.wanda_sparsegpt --repo-dir /tmp/wanda \\
        --sparsegpt-dir /tmp/sparsegpt --methods wanda sparsegpt --sparsity 0.5 \\
        --out benchmarks/results/xcheck_wanda_sparsegpt_smollm2_cpu.json
    python -m benchmarks.xcheck.wanda_sparsegpt ... --model gemma3-270m --bos \\
        --out benchmarks/results/gemma3_xcheck_cpu.json
"""

from __future__ import annotations

import argparse
import types
from typing import Any

from benchmarks._common import git_commit, import_original, write_json
from benchmarks.xcheck import _protocol as protocol

WANDA = ("https://github.com/locuslab/wanda", "8e8fc87b4a2f9955baa7e76e64d5fce7fa8724a6")
SPARSEGPT = ("https://github.com/IST-DASLab/sparsegpt", "147d2159dc4f3e9f73e47b32c04d7b3708f44436")


def authors_sparsegpt(repo_dir: str) -> type:
    """IST-DASLab's ``SparseGPT`` under the keyword names wanda's loop calls it with."""
    base = import_original(repo_dir, "sparsegpt").SparseGPT

    class AuthorsSparseGPT(base):
        def fasterprune(self, sparsity, prune_n=0, prune_m=0, **options):
            return super().fasterprune(sparsity, prunen=prune_n, prunem=prune_m, **options)

    return AuthorsSparseGPT


def original_prune(args, tm, calib, evalw, method: str) -> dict[str, Any]:
    """Run the original ``prune_<method>`` on a fresh torch model; its ppl and sparsity."""
    import torch

    prune = import_original(args.repo_dir, "lib.prune")
    if args.sparsegpt_dir:
        prune.SparseGPT = authors_sparsegpt(args.sparsegpt_dir)
    windows = protocol.loader_batches(calib)
    prune.get_loaders = lambda *_a, **_k: (windows, None)
    model = tm.load()
    model.seqlen, model.hf_device_map = args.seqlen, {}
    options = types.SimpleNamespace(
        nsamples=len(calib), seed=args.seed, sparsity_ratio=args.sparsity, use_variant=False
    )
    prune_method = getattr(prune, f"prune_{method}")
    return protocol.original_unstructured(
        model,
        calib,
        evalw,
        lambda: prune_method(options, model, None, torch.device("cpu"), 0, 0),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo-dir", required=True, help="checkout of locuslab/wanda")
    parser.add_argument("--sparsegpt-dir", help="checkout of IST-DASLab/sparsegpt")
    parser.add_argument("--methods", nargs="+", default=["wanda", "sparsegpt"])
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--attn", default="sdpa", help="transformers attention implementation")
    protocol.add_protocol_args(parser)
    args = parser.parse_args()
    bad = set(args.methods) - {"wanda", "sparsegpt"}
    if bad:
        raise SystemExit(f"--methods: unknown {sorted(bad)}; choose from wanda, sparsegpt")
    import_original(args.repo_dir, "lib.prune")  # refuse a wrong checkout before loading
    if args.sparsegpt_dir:
        import_original(args.sparsegpt_dir, "sparsegpt")

    import jaxprune as jp

    pre = jp.load_pretrained(args.model)
    calib, evalw = protocol.windows(pre, args)
    tm = protocol.TorchModel(pre, args.hf_dir, args.attn)
    dense = {
        "jaxprune_ppl": jp.perplexity(pre.model, pre.params, evalw).ppl,
        "original_ppl": protocol.torch_perplexity(tm.load(), evalw)["ppl"],
    }
    doc = {
        "what": f"{args.model}: jaxprune vs the original Wanda / SparseGPT code, same windows",
        "originals": {
            "wanda": {"url": WANDA[0], "commit": WANDA[1], "checkout": git_commit(args.repo_dir)},
            "sparsegpt": {"url": SPARSEGPT[0], "commit": SPARSEGPT[1]},
        },
        "args": {k: str(v) for k, v in vars(args).items()},
        "dense": dense,
        "rows": [],
    }
    for method in args.methods:
        recipe = jp.Recipe(
            method=method, sparsity=args.sparsity, nsamples=args.nsamples, seqlen=args.seqlen
        )
        ours = protocol.jaxprune_unstructured(pre, calib, evalw, recipe)
        theirs = original_prune(args, tm, calib, evalw, method)
        doc["rows"].append(protocol.comparison_row(f"{method}:{args.sparsity}", ours, theirs))
        write_json(args.out, doc)
        print(doc["rows"][-1], flush=True)


if __name__ == "__main__":
    main()
