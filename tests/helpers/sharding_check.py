"""Prunes a tiny random LLaMA on one device and on 8-device meshes; prints the comparison as JSON.

Run by ``tests/test_sharding.py`` in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the flag must be set before JAX starts,
and the rest of the suite runs on one device). Every prune on a mesh is compared with the same
prune without one: the number of mask entries that differ and the largest weight difference.
The default run uses the 2x4 mesh; ``--all-meshes`` adds 8x1 and 1x8 (the slow test).
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from tiny_models import TINY_LLAMA_8WAY

from jaxprune import sharding
from jaxprune.core import paths
from jaxprune.core.select import smallest_mask, smallest_mask_sharded
from jaxprune.engine import prune
from jaxprune.methods import sparsegpt
from jaxprune.models import LanguageModel, llama
from jaxprune.recipes import Recipe

CONFIG = TINY_LLAMA_8WAY
ALL_MESHES = ((8, 1), (2, 4), (1, 8))
MESHES = ALL_MESHES if "--all-meshes" in sys.argv else ((2, 4),)
# blocksize 32: several SparseGPT blocks per kernel, each with its own global selection.
RECIPES = {
    "wanda 0.5": Recipe(method="wanda", sparsity=0.5),
    "wanda 2:4": Recipe(method="wanda", sparsity="2:4"),
    "sparsegpt 0.5": Recipe(method="sparsegpt", sparsity=0.5, method_options={"blocksize": 32}),
    "sparsegpt 2:4": Recipe(method="sparsegpt", sparsity="2:4", method_options={"blocksize": 32}),
    "magnitude 0.5": Recipe(method="magnitude", sparsity=0.5),
    "sparsellm 0.5": Recipe(
        method="sparsellm", sparsity=0.5, method_options={"blocksize": 32, "iterations": 2}
    ),
}


def compare(reference, result, targets) -> dict:
    mismatches = sum(
        int(
            np.sum(
                np.asarray(paths.get_leaf(reference.masks, p))
                != np.asarray(paths.get_leaf(result.masks, p))
            )
        )
        for p in targets
    )
    max_diff = max(
        float(
            np.max(
                np.abs(
                    np.asarray(paths.get_leaf(reference.params, p), np.float32)
                    - np.asarray(paths.get_leaf(result.params, p), np.float32)
                )
            )
        )
        for p in paths.leaf_paths(reference.params)
    )
    return {"mask_mismatches": mismatches, "max_weight_diff": max_diff}


def selection_cases() -> list[dict]:
    """smallest_mask_sharded against smallest_mask on scores full of ties."""
    rng = np.random.default_rng(1)
    scores = jnp.asarray(rng.integers(0, 6, (64, 24)).astype(np.float32))
    out = []
    for shape in MESHES:
        mesh = sharding.make_mesh(shape)
        for axes in (sharding.AXES, (sharding.MODEL,), (sharding.DATA,)):
            spec = jax.sharding.PartitionSpec(axes, None)
            select = jax.jit(
                jax.shard_map(
                    lambda s, k, axes=axes: smallest_mask_sharded(s, k, axes),
                    mesh=mesh,
                    in_specs=(spec, jax.sharding.PartitionSpec()),
                    out_specs=spec,
                    check_vma=False,
                )
            )
            # With ``axes`` not covering the whole mesh, the other axis holds replicas.
            for k in (0, 1, 250, 777, scores.size):
                got = np.asarray(select(scores, jnp.int32(k)))
                want = np.asarray(smallest_mask(scores, k))
                out.append(
                    {
                        "mesh": list(shape),
                        "axes": list(axes),
                        "k": k,
                        "equal": bool((got == want).all()),
                    }
                )
    return out


def main() -> None:
    assert jax.device_count() == 8, jax.devices()
    model = LanguageModel(CONFIG)
    params = model.init_params(0)
    windows = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (8, 16), dtype=np.int32)
    targets = paths.select_paths(params, model.family.default_targets)
    report: dict = {"devices": jax.device_count(), "prunes": [], "selection": selection_cases()}
    for name, recipe in RECIPES.items():
        reference = prune(model, params, windows, recipe, progress=False)
        for shape in MESHES:
            result = prune(
                model, params, windows, recipe, progress=False, mesh=sharding.make_mesh(shape)
            )
            kernel = paths.get_leaf(result.params, "layers/1/mlp/up_proj/kernel")
            report["prunes"].append(
                {
                    "recipe": name,
                    "mesh": list(shape),
                    "offload": False,
                    "up_proj_spec": str(kernel.sharding.spec),
                    "overall_sparsity": result.report["overall_sparsity"],
                    **compare(reference, result, targets),
                }
            )
        if name == "sparsegpt 0.5":
            result = prune(
                model,
                params,
                windows,
                recipe,
                progress=False,
                mesh=sharding.make_mesh((2, 4)),
                offload=True,
            )
            leaves = jax.tree.leaves((result.params, result.masks))
            report["prunes"].append(
                {
                    "recipe": name,
                    "mesh": [2, 4],
                    "offload": True,
                    "host_leaves": all(isinstance(x, np.ndarray) for x in leaves),
                    **compare(reference, result, targets),
                }
            )
    try:
        prune(
            model,
            params,
            windows[:6],
            RECIPES["wanda 0.5"],
            progress=False,
            mesh=sharding.make_mesh((8, 1)),
        )
        report["indivisible_windows_error"] = None
    except ValueError as err:
        report["indivisible_windows_error"] = str(err)
    # The sharded SparseGPT really splits columns: its program is a shard_map with psum-ed counts.
    layout = sharding.Layout(sharding.make_mesh((2, 4)), llama.PARTITION_RULES)
    jaxpr = str(
        jax.make_jaxpr(
            lambda k, h: sparsegpt.prune_kernel_sharded(k, h, Recipe(sparsity=0.5).target, layout)
        )(jnp.ones((64, 128)), jnp.eye(64))
    )
    report["sparsegpt_program"] = {
        "shard_map": "shard_map" in jaxpr,
        "psum": "psum" in jaxpr,
        "local_columns": "f32[64,16]" in jaxpr,
    }
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
