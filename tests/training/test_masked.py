"""keep_masks: pruned entries stay zero under any optimizer; all-ones masks change nothing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune.training import keep_masks

OPTIMIZERS = {
    "adamw+decay": lambda: optax.adamw(1e-2, weight_decay=0.1),
    "sgd+momentum": lambda: optax.sgd(1e-1, momentum=0.9, nesterov=True),
    "clip+adam": lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)),
    "lion+decay": lambda: optax.lion(1e-3, weight_decay=0.5),
}


def random_tree(rng, density):
    params = {
        "layers": {
            0: {"kernel": rng.normal(size=(6, 5)), "bias": rng.normal(size=(5,))},
            1: {"kernel": rng.normal(size=(5, 4))},
        },
        "scale": rng.normal(size=(4,)),
    }
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    masks = {
        "layers": {
            0: {"kernel": jnp.asarray(rng.random((6, 5)) < density), "bias": None},
            1: {"kernel": jnp.asarray(rng.random((5, 4)) < density)},
        },
        "scale": None,
    }
    return params, masks


@settings(max_examples=12, deadline=None)
@given(
    name=st.sampled_from(sorted(OPTIMIZERS)),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_no_update_ever_revives_a_pruned_entry(name, density, seed):
    rng = np.random.default_rng(seed)
    params, masks = random_tree(rng, density)  # pruned entries start non-zero on purpose
    tx = keep_masks(OPTIMIZERS[name](), masks)
    state = tx.init(params)
    step = jax.jit(tx.update)
    for _ in range(4):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        updates, state = step(grads, state, params)
        params = optax.apply_updates(params, updates)
        for path in ("layers/0/kernel", "layers/1/kernel"):
            block, leaf = path.split("/")[1], path.split("/")[2]
            keep = np.asarray(masks["layers"][int(block)][leaf])
            value = np.asarray(params["layers"][int(block)][leaf])
            assert np.all(value[~keep] == 0.0)
    # The optimizer never saw a gradient at a pruned entry: its moments stay zero there.
    for leaf in jax.tree.leaves(state):
        if hasattr(leaf, "shape") and leaf.shape == (6, 5):
            assert np.all(np.asarray(leaf)[~np.asarray(masks["layers"][0]["kernel"])] == 0)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_all_ones_masks_equal_plain_optax(name):
    rng = np.random.default_rng(1)
    params, _ = random_tree(rng, 1.0)
    ones = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
    plain, masked = OPTIMIZERS[name](), keep_masks(OPTIMIZERS[name](), ones)
    ps, ms = plain.init(params), masked.init(params)
    a = b = params
    for _ in range(3):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        ua, ps = plain.update(grads, ps, a)
        ub, ms = masked.update(grads, ms, b)
        a, b = optax.apply_updates(a, ua), optax.apply_updates(b, ub)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_nnx_state_params_keep_their_masks():
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    keep = jnp.asarray(np.random.default_rng(2).random((4, 3)) < 0.5)
    tx = keep_masks(optax.adamw(1e-1, weight_decay=0.1), {"kernel": keep})
    state = tx.init(params)
    for _ in range(3):
        grads = jax.tree.map(jnp.ones_like, params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    kernel = np.asarray(params["kernel"][...])
    assert np.all(kernel[~np.asarray(keep)] == 0) and np.all(kernel[np.asarray(keep)] != 0)


def test_masks_by_path_work_like_a_tree():
    rng = np.random.default_rng(3)
    params, masks = random_tree(rng, 0.5)
    by_path = {
        "layers/0/kernel": masks["layers"][0]["kernel"],
        "layers/1/kernel": masks["layers"][1]["kernel"],
    }
    grads = jax.tree.map(jnp.ones_like, params)
    outs = []
    for m in (masks, by_path):
        tx = keep_masks(optax.sgd(0.1), m)
        outs.append(tx.update(grads, tx.init(params), params)[0])
    for x, y in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1]), strict=True):
        np.testing.assert_array_equal(x, y)


def test_bad_masks_and_calls_are_clear_errors():
    params, masks = random_tree(np.random.default_rng(4), 0.5)
    tx = keep_masks(optax.sgd(0.1), masks)
    state = tx.init(params)
    with pytest.raises(ValueError, match="needs the params in update"):
        tx.update(params, state)
    with pytest.raises(ValueError, match="do not have"):
        keep_masks(optax.sgd(0.1), {"layers/9/kernel": jnp.ones((6, 5), bool)}).init(params)
    with pytest.raises(ValueError, match="boolean"):
        keep_masks(optax.sgd(0.1), {"layers/0/kernel": jnp.ones((6, 5))})
    bad = keep_masks(optax.sgd(0.1), {"layers/0/kernel": jnp.ones((5, 6), bool)})
    with pytest.raises(ValueError, match="has shape"):
        bad.update(params, bad.init(params), params)
