"""Which patches do the token-pruning methods keep on MNIST digits: ink or background?

Runs DINOv2 ViT-S/14 on MNIST test digits up to block 2, then applies each method's first pruning
step (256 → ``--keep`` patch tokens, as the 35% schedule of ``vit_tokens.py`` does) and reports
the fraction of ink patches and of background patches kept (ToMe merges rather than drops, so it
is left out). A 14×14 patch of the 224×224 input
counts as ink when its mean grey level (0–255) exceeds 20.

    python benchmarks/vit_token_coverage.py --out benchmarks/results/vit_token_coverage_cpu.json
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _common import write_json

from jaxprune.data.images import load_images
from jaxprune.data.vision import imagenet_inputs
from jaxprune.models.loaders.vit import load_vit
from jaxprune.token_pruning import TOKEN_METHODS

VARIANTS = {
    "zero-tprune": ("zero-tprune", {}),
    "zero-tprune I-stage only": ("zero-tprune", {"similarity_share": 0.0}),
    "zero-tprune S-stage only": ("zero-tprune", {"similarity_share": 1.0}),
    "evit": ("evit", {}),
    "random": ("random", {}),
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/vit_token_coverage_cpu.json")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--keep", type=int, default=186)
    p.add_argument("--block", type=int, default=2)
    args = p.parse_args(argv)
    vit = load_vit("dinov2-vits14")
    digits = load_images("mnist", "test").images[: args.images]
    grid = vit.model.config.grid
    big = jax.image.resize(jnp.asarray(digits, jnp.float32), (len(digits), 224, 224), "bilinear")
    patch = vit.model.config.patch_size
    ink = np.asarray(big).reshape(len(digits), grid, patch, grid, patch).mean((2, 4)) > 20
    ink = ink.reshape(len(digits), -1)
    module = vit.model.module(vit.params)
    hidden = module.embeddings(imagenet_inputs(digits))
    for i in range(args.block + 1):
        hidden, taps = module.layers[i](hidden, capture=True)
    # Tokens that carry their own index show which ones a method keeps.
    n = hidden.shape[1]
    ids = jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[None, :, None], (len(digits), n, 1))
    rows = {
        "ink_fraction": float(ink.mean()),
        "keep": args.keep,
        "block": args.block,
        "methods": {},
    }
    for name, (method, options) in VARIANTS.items():
        spec = TOKEN_METHODS[method]
        out, _ = spec.reduce(
            ids,
            taps,
            args.keep,
            prefix=1,
            layer=args.block,
            num_layers=vit.model.num_blocks,
            sizes=None,
            rng=jax.random.key(0),
            **{**spec.options, **options},
        )
        kept = np.zeros(ink.shape, bool)
        np.put_along_axis(kept, np.asarray(out[:, 1:, 0]).astype(int) - 1, True, 1)
        rows["methods"][name] = {
            "ink_kept": float(kept[ink].mean()),
            "background_kept": float(kept[~ink].mean()),
        }
        print(name, rows["methods"][name], flush=True)
    write_json(args.out, rows, indent=1)


if __name__ == "__main__":
    main()
