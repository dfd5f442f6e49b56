"""sparse_training: masks never revived by the optimizer, plain Optax at zero sparsity, exact
schedule counts, fixed counts for RigL/SET, STE's straight-through gradient, any pytree."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune.core.sparsity import NM, Channel, Unstructured
from jaxprune.training import (
    distributions,
    final_params,
    forward_params,
    masks_of,
    schedules,
    sparse_training,
    updaters,
)

OPTIMIZERS = {
    "adamw+decay": lambda: optax.adamw(1e-2, weight_decay=0.1),
    "sgd+momentum": lambda: optax.sgd(1e-1, momentum=0.9),
    "clip+adam": lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)),
}
PRUNERS = {
    "magnitude": updaters.magnitude,
    "random": updaters.random,
    "saliency": updaters.saliency,
}


def make_params(seed: int = 0):
    rng = np.random.default_rng(seed)
    tree = {
        "layers": {
            0: {"kernel": rng.normal(size=(12, 8)), "bias": rng.normal(size=(8,))},
            1: {"kernel": rng.normal(size=(8, 4))},
        },
        "conv": {"kernel": rng.normal(size=(3, 3, 4, 6))},
    }
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def random_grads(rng, params):
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)


def leaf(tree, path):
    for part in path.split("/"):
        tree = tree[int(part) if part.isdigit() else part]
    return np.asarray(tree)


def run(tx, params, steps, seed=0, jit=True):
    """Applies ``steps`` random-gradient updates; yields (step, params, state) after each."""
    rng = np.random.default_rng(seed)
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    for t in range(steps):
        updates, state = update(random_grads(rng, params), state, params)
        params = optax.apply_updates(params, updates)
        yield t, params, state


@settings(max_examples=5, deadline=None)
@given(
    optimizer=st.sampled_from(sorted(OPTIMIZERS)),
    pruner=st.sampled_from(sorted(PRUNERS)),
    sparsity=st.floats(0.1, 0.95),
    seed=st.integers(0, 2**16),
)
def test_no_update_revives_a_pruned_entry_and_masks_only_shrink(optimizer, pruner, sparsity, seed):
    params = make_params(seed)
    targets = distributions.uniform(params, sparsity)
    schedule = schedules.gmp(start=1, end=7, every=2)
    tx = sparse_training(OPTIMIZERS[optimizer](), targets, PRUNERS[pruner](), schedule, seed=seed)
    previous = None
    for _, new, state in run(tx, params, 10, seed):
        masks = {p: np.asarray(m) for p, m in masks_of(state).items()}
        for path, keep in masks.items():
            assert np.all(leaf(new, path)[~keep] == 0.0)
            if previous is not None:
                assert not np.any(keep & ~previous[path])  # nothing pruned comes back
        previous = masks


@pytest.mark.parametrize(
    "optimizer, updater",
    [(name, "magnitude") for name in sorted(OPTIMIZERS)] + [("adamw+decay", "rigl")],
)
def test_all_ones_masks_equal_plain_optax(optimizer, updater):
    params = make_params(1)
    targets = distributions.uniform(params, 0.0)
    if updater == "rigl":
        sparse = (updaters.rigl(0.5), schedules.Periodic(every=1))
    else:
        sparse = (updaters.magnitude(), schedules.gmp(0, 4, 1))
    plain, masked = (
        OPTIMIZERS[optimizer](),
        sparse_training(OPTIMIZERS[optimizer](), targets, *sparse),
    )
    # Op by op: two compiled programs may fuse the same arithmetic differently (1 ulp).
    a = list(run(plain, params, 3, seed=3, jit=False))
    b = list(run(masked, params, 3, seed=3, jit=False))
    for (_, pa, _), (_, pb, sb) in zip(a, b, strict=True):
        assert all(bool(jnp.all(m)) for m in masks_of(sb).values())
        jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), pa, pb)


def test_gmp_reaches_the_scheduled_count_at_every_step():
    params = make_params(2)
    targets = distributions.erk(params, 0.9)
    schedule = schedules.gmp(start=2, end=14, every=3)
    tx = sparse_training(optax.sgd(0.05), targets, updaters.magnitude(), schedule)
    last_update = None
    for t, new, state in run(tx, params, 20):
        if schedule.start <= t <= schedule.end and (t - schedule.start) % schedule.every == 0:
            last_update = t
        for path, keep in masks_of(state).items():
            shape = keep.shape
            if last_update is None:
                expected = 0
            else:
                # Zhu & Gupta's s_t at the last update, counted as the library documents it.
                s = 1.0 - (1.0 - (last_update - 2) / 12.0) ** 3
                s_t = np.float32(np.float32(targets[path].sparsity) * np.float32(s))
                expected = int(np.floor(s_t * np.float32(np.prod(shape))))
            assert int(np.sum(~np.asarray(keep))) == expected, (t, path)
            assert int(np.sum(leaf(new, path) == 0)) >= expected
    final = {p: int(np.sum(~np.asarray(m))) for p, m in masks_of(state).items()}
    assert final == {
        p: int(np.floor(np.float32(t.sparsity) * np.prod(leaf(params, p).shape)))
        for p, t in targets.items()
    }


@pytest.mark.parametrize("make", [updaters.rigl, updaters.set_])
def test_drop_and_grow_keeps_the_exact_count_and_really_swaps(make):
    params = make_params(4)
    targets = distributions.erk(params, 0.7)
    tx = sparse_training(optax.adam(1e-2), targets, make(0.4), schedules.Periodic(every=2), seed=5)
    initial = {p: int(np.sum(m)) for p, m in masks_of(tx.init(params)).items()}
    changed = 0
    previous = masks_of(tx.init(params))
    for _, new, state in run(tx, params, 6, seed=6):
        masks = masks_of(state)
        assert {p: int(np.sum(m)) for p, m in masks.items()} == initial
        for path, keep in masks.items():
            assert np.all(leaf(new, path)[~np.asarray(keep)] == 0.0)
            changed += int(np.sum(np.asarray(keep) != np.asarray(previous[path])))
        previous = masks
    assert changed > 0


def test_rigl_grows_where_the_gradient_is_largest_and_resets_their_moments():
    rng = np.random.default_rng(7)
    params = {"w": jnp.asarray(rng.normal(size=(10, 10)), jnp.float32)}
    tx = sparse_training(
        optax.adam(1e-2), {"w": Unstructured(0.5)}, updaters.rigl(0.2), schedules.Periodic(1)
    )
    state = tx.init(params)
    params = {"w": jnp.where(masks_of(state)["w"], params["w"], 0.0)}
    # Pretend every entry has a history: moments of one everywhere.
    ones = optax.tree_utils.tree_map_params(optax.adam(1e-2), jnp.ones_like, state.inner)
    state = state._replace(inner=ones)
    grads = random_grads(rng, params)
    old = np.asarray(masks_of(state)["w"])
    _, new_state = tx.update(grads, state, params)
    new = np.asarray(masks_of(new_state)["w"])
    # Independent NumPy RigL: drop the 10 smallest |w| among the 50 active, grow the 10 largest
    # |g| among the others (the dropped included), ties by position.
    w, g = np.abs(np.asarray(params["w"])).ravel(), np.abs(np.asarray(grads["w"])).ravel()
    drop = np.argsort(np.where(old.ravel(), w, np.inf), kind="stable")[:10]
    kept = old.ravel().copy()
    kept[drop] = False
    grow = np.argsort(-np.where(kept, -np.inf, g), kind="stable")[:10]
    expected = kept.copy()
    expected[grow] = True
    np.testing.assert_array_equal(new.ravel(), expected)
    # A grown entry's moments restart from zero: Adam's first moment is then (1 - β1)·g.
    grown, stayed = new & ~old, new & old
    assert grown.any() and stayed.any()
    (adam_state,) = [
        s
        for s in jax.tree.leaves(new_state.inner, is_leaf=lambda x: hasattr(x, "mu"))
        if hasattr(s, "mu")
    ]
    mu, g_w = np.asarray(adam_state.mu["w"]), np.asarray(grads["w"])
    np.testing.assert_allclose(mu[grown], 0.1 * g_w[grown], rtol=1e-6)
    np.testing.assert_allclose(mu[stayed], 0.9 + 0.1 * g_w[stayed], rtol=1e-6)
    np.testing.assert_allclose(mu[~new], 0.9, rtol=1e-6)


def test_ste_masks_the_forward_and_passes_the_gradient_straight_through():
    params = {"w": jnp.asarray([[3.0, -0.1], [0.2, -4.0]])}
    tx = sparse_training(
        optax.sgd(1.0), {"w": Unstructured(0.5)}, updaters.ste(), schedules.Periodic(1)
    )
    state = tx.init(params)
    _, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    x = jnp.asarray([1.0, 2.0])
    run_params = forward_params(params, state)
    np.testing.assert_array_equal(run_params["w"], [[3.0, 0.0], [0.0, -4.0]])
    grad = jax.grad(lambda p: jnp.sum(x @ forward_params(p, state)["w"]))(params)
    np.testing.assert_array_equal(grad["w"], [[1.0, 1.0], [2.0, 2.0]])  # every entry
    updates, _ = tx.update(grad, state, params)
    assert np.all(np.asarray(optax.apply_updates(params, updates)["w"]) != 0)  # weights stay dense
    np.testing.assert_array_equal(final_params(params, state)["w"], run_params["w"])


def test_nm_and_channel_patterns_in_training_and_nnx_state_params():
    model = nnx.Sequential(nnx.Linear(8, 6, rngs=nnx.Rngs(0)), nnx.Linear(6, 4, rngs=nnx.Rngs(1)))
    params = nnx.state(model, nnx.Param)
    targets = {"layers/0/kernel": NM(2, 4), "layers/1/kernel": Channel(0.5)}
    tx = sparse_training(optax.adam(1e-2), targets, updaters.magnitude(), schedules.OneShot(1))
    *_, (_, new, state) = run(tx, params, 3)
    masks = masks_of(state)
    assert np.all(np.asarray(masks["layers/0/kernel"]).reshape(2, 4, 6).sum(1) == 2)
    channels = np.asarray(masks["layers/1/kernel"]).all(0)
    assert channels.sum() == 2 and np.all(np.asarray(masks["layers/1/kernel"]).any(0) == channels)
    kernel = np.asarray(new["layers"][1]["kernel"][...])
    assert np.all(kernel[:, ~channels] == 0) and np.all(kernel[:, channels] != 0)


@pytest.mark.parametrize(
    "targets, updater, schedule, message",
    [
        ({"missing": Unstructured(0.5)}, updaters.magnitude(), None, "do not have"),
        ({"w": NM(2, 4)}, updaters.magnitude(), schedules.gmp(0, 4), "no gradual version"),
        ({"w": Unstructured(0.5)}, updaters.rigl(), schedules.gmp(0, 4), "Periodic"),
        ({"w": Channel(0.5)}, updaters.set_(), schedules.Periodic(1), "unstructured count"),
        ({"b": NM(2, 4)}, updaters.magnitude(), None, "needs a kernel"),
    ],
)
def test_bad_configurations_fail_at_init(targets, updater, schedule, message):
    params = {"w": jnp.ones((8, 4)), "b": jnp.ones((4,))}
    tx = sparse_training(optax.sgd(0.1), targets, updater, schedule)
    with pytest.raises(ValueError, match=message):
        tx.init(params)


def test_update_without_params_is_refused():
    params = {"w": jnp.ones((4, 4))}
    tx = sparse_training(optax.sgd(0.1), {"w": Unstructured(0.5)})
    with pytest.raises(ValueError, match="needs the params"):
        tx.update(params, tx.init(params))
