"""One small prune, printed as a JSON line of hashes (run twice in subprocesses by
tests/engine/test_reproducibility.py): SparseGPT and Wanda with OWL on a random tiny LLaMA."""

from __future__ import annotations

import hashlib
import json
import sys

import jax
import numpy as np

import jaxprune as jp

CONFIG = jp.LlamaConfig(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=192,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def digest(tree) -> str:
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree) if x is not None]
    return hashlib.sha256(b"".join(x.tobytes() for x in leaves)).hexdigest()


def main() -> None:
    model = jp.LanguageModel(CONFIG)
    params = model.init_params(0)
    rng = np.random.default_rng(0)
    # 8 windows of 64 tokens: one batch of 512 tokens, where a single XᵀX of width 64 gave
    # different bits for thread pools of 2, 4 and 8 threads.
    calib = rng.integers(0, CONFIG.vocab_size, (8, 64))
    hamlet = rng.integers(0, CONFIG.vocab_size, (4, 64))
    out = {}
    for recipe in (
        jp.Recipe(method="sparsegpt", sparsity=0.5, nsamples=8, seqlen=64),
        jp.Recipe(method="wanda", sparsity=0.6, allocation="owl", nsamples=8, seqlen=64),
    ):
        result = jp.prune(model, params, calib, recipe, progress=False, errors=True)
        errors = {p: r.get("rel_error") for p, r in sorted(result.report["layers"].items())}
        out[recipe.method] = {
            "masks": digest(result.masks),
            "params": digest(result.params),
            "errors": errors,
            "ppl": repr(jp.perplexity(model, result.params, hamlet, progress=False).ppl),
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
