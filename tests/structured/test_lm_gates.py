"""Decoder-block gates: at 0/1 they zero exactly those heads and MLP channels (the structured
package's coupled groups), and the exported small model computes the gated model's logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from structured_models import CONFIGS, logits, random_params, windows

from jaxprune.models import LanguageModel
from jaxprune.structured import lm_gates, zero_groups
from jaxprune.structured.gates import gate_optimizer, gate_penalty
from jaxprune.structured.importance import window_loss


def closing_some(model, seed=0):
    """Gates with about half of every block's units closed (at least one of each kept)."""
    rng = np.random.default_rng(seed)
    gates = lm_gates.init_lm_gates(model)
    out = []
    for block in gates:
        heads = rng.choice([-1.0, 1.0], block["heads"].shape)
        heads[0] = 1.0
        mlp = rng.choice([-1.0, 1.0], block["mlp"].shape)
        out.append({"heads": jnp.asarray(heads), "mlp": jnp.asarray(mlp)})
    return out


@pytest.mark.parametrize("name", ["llama", "gqa", "opt"])
def test_gates_at_zero_and_one_equal_zeroing_those_groups(name):
    model = LanguageModel(CONFIGS[name])
    params = random_params(model)
    gates = closing_some(model)
    keeps = lm_gates.lm_keeps(model, gates)
    assert any(len(k.mlp) < model.config.layer_widths(i).mlp for i, k in keeps.items())
    tokens = windows()
    got = logits(model, lm_gates.gated_lm_params(model, params, gates), tokens)
    want = logits(model, zero_groups(model, params, keeps), tokens)
    np.testing.assert_allclose(got, want, atol=2e-5)
    # Closing nothing changes nothing.
    full = lm_gates.gated_lm_params(model, params, lm_gates.init_lm_gates(model))
    np.testing.assert_array_equal(logits(model, full, tokens), logits(model, params, tokens))


@pytest.mark.parametrize("name", ["llama", "gqa"])
def test_the_exported_model_equals_the_gated_model(name):
    model = LanguageModel(CONFIGS[name])
    params = random_params(model)
    gates = closing_some(model, seed=1)
    small, small_params = lm_gates.export_lm(model, params, gates)
    keeps = lm_gates.lm_keeps(model, gates)
    for i, keep in keeps.items():
        assert small.config.layer_widths(i) == keep.widths
    tokens = windows()
    want = logits(model, lm_gates.gated_lm_params(model, params, gates), tokens)
    np.testing.assert_allclose(logits(small, small_params, tokens), want, atol=2e-5)


def test_gate_gradients_reach_every_unit():
    model = LanguageModel(CONFIGS["gqa"])
    params = random_params(model)
    tokens = jnp.asarray(windows())

    def loss(gates):
        return jnp.mean(model.logits(lm_gates.gated_lm_params(model, params, gates), tokens) ** 2)

    grads = jax.grad(loss)(lm_gates.init_lm_gates(model, logit=0.0))
    for block in grads:
        assert np.all(np.asarray(block["heads"]) != 0) and np.all(np.asarray(block["mlp"]) != 0)


def test_gates_of_the_wrong_shape_are_refused():
    model = LanguageModel(CONFIGS["llama"])
    gates = lm_gates.init_lm_gates(model)
    gates[0] = {"heads": jnp.ones(3), "mlp": gates[0]["mlp"]}
    with pytest.raises(ValueError, match="key/value heads"):
        lm_gates.gated_lm_params(model, random_params(model), gates)


def test_gates_train_jointly_with_the_weights_and_export_what_they_learned():
    """A short joint run (next-token loss + budget and polarizing penalties, one Adam for the
    weights and a faster one for the gates) closes units towards the target density, and the
    exported small model computes the trained gated model's logits."""
    model = LanguageModel(CONFIGS["gqa"])
    tokens = jnp.asarray(windows(n=8, seqlen=16, seed=3))
    start = random_params(model)
    params = {"weights": start, "gates": lm_gates.init_lm_gates(model, logit=1.0)}

    def loss(p):
        gated = lm_gates.gated_lm_params(model, p["weights"], p["gates"])
        nll = window_loss(model, gated, tokens).mean()
        flat = {f"{i}/{k}": v for i, block in enumerate(p["gates"]) for k, v in block.items()}
        return nll + gate_penalty(flat, density=0.5, budget=20.0, polarize=1.0)

    tx = gate_optimizer(optax.adam(1e-3), optax.adam(0.1))
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        grads = jax.grad(loss)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    for _ in range(60):
        params, state = step(params, state)
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params["weights"], start)
    assert all(jax.tree.leaves(moved)), "the weights must train with the gates"
    open_mlp = [float(jnp.mean(b["mlp"] > 0)) for b in params["gates"]]
    assert all(0.25 <= f <= 0.75 for f in open_mlp), open_mlp
    assert any(np.any(np.asarray(b["heads"]) < 0) for b in params["gates"])
    small, small_params = lm_gates.export_lm(model, params["weights"], params["gates"])
    size = lambda tree: sum(leaf.size for leaf in jax.tree.leaves(tree))
    assert size(small_params) < size(params["weights"])
    gated = lm_gates.gated_lm_params(model, params["weights"], params["gates"])
    want = logits(model, gated, tokens)
    np.testing.assert_allclose(logits(small, small_params, tokens), want, atol=2e-5)
