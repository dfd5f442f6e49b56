"""Prunes a tiny random Mixtral on one device and on a 2x2 mesh (experts split over ``model``);
prints, per method, the mask entries that differ and the largest weight difference as JSON, and
whether a transformers Mixtral read by slices onto the mesh (each device its own experts) equals
the whole load.

Run by ``tests/engine/test_moe_pruning.py`` in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

from __future__ import annotations

import json

import numpy as np
from moe_models import moe_model

from jaxprune import sharding
from jaxprune.core import paths
from jaxprune.engine import prune
from jaxprune.recipes import Recipe

model, params = moe_model(num_local_experts=4)
calibration = np.random.default_rng(0).integers(0, 64, (4, 16))
mesh = sharding.make_mesh((2, 2))
layout = sharding.Layout(mesh, model.family.partition_rules)
kernel = "layers/0/mlp/experts/down_proj/kernel"
out = {"expert_axis": str(layout.sharding(kernel, (4, 24, 16)).spec)}
for method in ("wanda", "sparsegpt"):
    recipe = Recipe(method=method, sparsity=0.5)
    one = prune(model, params, calibration, recipe, progress=False)
    many = prune(model, params, calibration, recipe, progress=False, mesh=mesh)
    targets = list(one.report["layers"])
    out[method] = {
        "mask_mismatches": sum(
            int(
                np.sum(
                    np.asarray(paths.get_leaf(one.masks, p))
                    != np.asarray(paths.get_leaf(many.masks, p))
                )
            )
            for p in targets
        ),
        "max_diff": max(
            float(
                np.max(
                    np.abs(
                        np.asarray(paths.get_leaf(one.params, p))
                        - np.asarray(paths.get_leaf(many.params, p))
                    )
                )
            )
            for p in targets
        ),
        "expert_tokens": many.report["layers"][kernel]["expert_tokens"]
        == one.report["layers"][kernel]["expert_tokens"],
    }

import tempfile  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from hf_moe import hf_moe_model  # noqa: E402

import jaxprune as jp  # noqa: E402
from jaxprune.models.loaders.sliced import load_sliced  # noqa: E402

directory = tempfile.mkdtemp()
hf_moe_model("mixtral").save_pretrained(directory)
sliced, whole = load_sliced(directory, mesh, jnp.float32), jp.load_pretrained(directory)
leaves = zip(jax.tree.leaves(sliced.params), jax.tree.leaves(whole.params), strict=True)
down = sliced.params["layers"][0]["mlp"]["experts"]["down_proj"]["kernel"]
out["sliced_load"] = {
    "equal": all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in leaves),
    "expert_spec": str(down.sharding.spec),
}
print(json.dumps(out))
