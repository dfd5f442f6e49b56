"""Prunes the tiny 8-way LLaMA on a mesh from one or several processes; process 0 writes the masks.

    python multiprocess_check.py --processes N --id I --coordinator HOST:PORT --mesh 2x4 \
        --recipes "wanda 0.5" "sparsegpt 2:4" --out DIR [--offload]

Every process runs the same prunes (``tests/helpers/processes.py`` starts them); the masks and
pruned kernels are gathered and process 0 writes them to ``DIR/<recipe>.npz``, so runs with 1, 2
or 4 processes over the same mesh shape can be compared bit for bit. Each process prints one JSON
line: its index, device counts and peak resident memory (``ru_maxrss``) at the start, after
loading and at the end. With ``--hf DIR`` the model is read by slices from a Hugging Face
directory (``benchmarks/multiprocess_memory.py``).
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path

import numpy as np
from tiny_models import TINY_LLAMA_8WAY

RECIPES = {
    f"{method} {target}": (method, target)
    for method in ("magnitude", "wanda", "ria", "sparsegpt", "sparsellm")
    for target in ("0.5", "2:4")
}
OPTIONS = {"sparsegpt": {"blocksize": 32}, "sparsellm": {"blocksize": 32, "iterations": 2}}


def _max_rss() -> int:
    """This process's peak resident memory: ``VmHWM`` (reset by exec, unlike ``ru_maxrss``, which
    keeps the peak of the process that started this one)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--id", type=int, default=0)
    parser.add_argument("--coordinator")
    parser.add_argument("--mesh", default="2x4")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--out", required=True)
    parser.add_argument("--offload", action="store_true")
    parser.add_argument("--hf", help="read this Hugging Face directory by slices instead")
    args = parser.parse_args()

    from jaxprune import distributed

    started_rss = _max_rss()
    if args.processes > 1:
        distributed.initialize(args.coordinator, args.processes, args.id, timeout_seconds=120)

    import jax
    from jax.experimental import multihost_utils

    from jaxprune import sharding
    from jaxprune.core import paths
    from jaxprune.engine import prune
    from jaxprune.models import LanguageModel
    from jaxprune.models.loaders.sliced import load_sliced
    from jaxprune.recipes import Recipe

    mesh = sharding.make_mesh(sharding.parse_mesh(args.mesh))
    if args.hf:
        loaded = load_sliced(args.hf, mesh)
        model, params = loaded.model, loaded.params
    else:
        model = LanguageModel(TINY_LLAMA_8WAY)
        params = jax.device_get(model.init_params(0))
    loaded_rss = _max_rss()
    windows = np.random.default_rng(0).integers(0, model.config.vocab_size, (8, 16), np.int32)
    out = Path(args.out)
    for name in args.recipes:
        method, target = RECIPES[name]
        recipe = Recipe(method=method, sparsity=target, method_options=OPTIONS.get(method, {}))
        result = prune(
            model, params, windows, recipe, progress=False, mesh=mesh, offload=args.offload
        )
        arrays = {}
        for path in result.report["layers"]:
            for kind, tree in (("mask", result.masks), ("kernel", result.params)):
                leaf = sharding.on_devices(paths.get_leaf(tree, path))
                arrays[f"{kind}:{path}"] = np.asarray(
                    multihost_utils.process_allgather(leaf, tiled=True)
                )
        if jax.process_index() == 0:
            np.savez(out / f"{name.replace(' ', '_').replace(':', '-')}.npz", **arrays)
    report = {
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "started_rss_bytes": started_rss,
        "loaded_max_rss_bytes": loaded_rss,
        "max_rss_bytes": _max_rss(),
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
