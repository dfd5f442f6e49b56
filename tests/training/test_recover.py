"""Recovery training: loss falls, masks hold, interrupted runs resume to the same params."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_models import TINY_LLAMA

from jaxprune.core.paths import flat_leaves, get_leaf
from jaxprune.models import LanguageModel
from jaxprune.training.lora import LoraConfig, target_paths
from jaxprune.training.recover import RecoverConfig, batch_at, recover

MODEL = LanguageModel(TINY_LLAMA)


def data(n=16, seqlen=16, seed=0):
    """A learnable stream: each window counts up from a random start (mod vocab)."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, 64, size=(n, 1))
    return ((starts + np.arange(seqlen)) % 64).astype(np.int32)


def pruned(density=0.5):
    params = MODEL.init_params(0)
    rng = np.random.default_rng(1)
    masks = {
        p: jnp.asarray(rng.random(np.shape(get_leaf(params, p))) < density)
        for p in target_paths(MODEL, params, LoraConfig())
    }
    return params, masks  # pruned entries non-zero on purpose: recover must zero them


def small(method, **kw):
    base = dict(method=method, steps=6, batch_size=4, learning_rate=3e-3, warmup_steps=1)
    return RecoverConfig(**{**base, **kw})


@pytest.mark.parametrize("method", ["lora", "masked"])
def test_recovery_lowers_the_loss_and_keeps_every_pruned_entry_zero(method):
    params, masks = pruned()
    config = small(method, steps=12, lora=LoraConfig(rank=4, alpha=8.0))
    result = recover(
        MODEL, params, data(), config, masks=masks, eval_windows=data(4, seed=9), progress=False
    )
    losses = [loss for _, loss in result.report["loss"]]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    (first, before), (last, after) = result.report["eval"][0], result.report["eval"][-1]
    assert (first, last) == (0, 12) and after < before
    for path, keep in masks.items():
        kernel = np.asarray(get_leaf(result.params, path))
        assert not kernel[~np.asarray(keep)].any(), path
    assert result.report["tokens"] == 12 * 4 * 16
    if method == "lora":
        assert result.lora is not None


def test_gradient_accumulation_equals_one_large_batch():
    params, _ = pruned()
    windows = data(8)
    one = recover(
        MODEL, params, windows, small("lora", steps=2, batch_size=8, clip_norm=0.0), progress=False
    )
    acc = recover(
        MODEL,
        params,
        windows,
        small("lora", steps=2, batch_size=4, grad_accum=2, clip_norm=0.0),
        progress=False,
    )
    for path, leaf in flat_leaves(one.lora).items():
        np.testing.assert_allclose(flat_leaves(acc.lora)[path], leaf, atol=2e-6)


def test_resume_after_interruption_gives_the_same_params(tmp_path):
    params, masks = pruned()
    windows, config = data(), small("masked", steps=6, save_every=3)

    class Interrupt(Exception):
        pass

    def stop_at_4(step, loss):
        if step == 4:
            raise Interrupt

    straight = recover(MODEL, params, windows, config, masks=masks, progress=False)
    with pytest.raises(Interrupt):
        recover(
            MODEL,
            params,
            windows,
            config,
            masks=masks,
            checkpoint_dir=tmp_path / "state",
            progress=False,
            on_step=stop_at_4,
        )
    resumed = recover(
        MODEL,
        params,
        windows,
        config,
        masks=masks,
        checkpoint_dir=tmp_path / "state",
        progress=False,
    )
    for path, leaf in flat_leaves(straight.params).items():
        np.testing.assert_array_equal(np.asarray(flat_leaves(resumed.params)[path]), leaf)
    assert [s for s, _ in resumed.report["loss"]] == list(range(1, 7))
    assert resumed.report["loss"] == straight.report["loss"]


def test_resume_refuses_a_state_of_another_run(tmp_path):
    params, masks = pruned()
    recover(
        MODEL,
        params,
        data(),
        small("masked", steps=2, save_every=2),
        masks=masks,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    with pytest.raises(ValueError, match="different run"):
        recover(
            MODEL,
            params,
            data(),
            small("masked", steps=3, save_every=2),
            masks=masks,
            checkpoint_dir=tmp_path,
            progress=False,
        )


def test_bfloat16_compute_keeps_float32_master_weights():
    params, masks = pruned()
    result = recover(
        MODEL,
        params,
        data(),
        small("masked", compute_dtype="bfloat16"),
        masks=masks,
        progress=False,
    )
    assert {leaf.dtype for leaf in jax.tree.leaves(result.params)} == {jnp.dtype(jnp.float32)}
    losses = [loss for _, loss in result.report["loss"]]
    assert np.isfinite(losses).all()


def test_batches_cycle_through_the_windows_deterministically():
    windows = np.arange(5 * 3).reshape(5, 3)
    config = RecoverConfig(steps=4, batch_size=2, grad_accum=2)
    np.testing.assert_array_equal(batch_at(windows, 1, config).reshape(4, 3)[:, 0], [12, 0, 3, 6])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="sgd"), "recovery method"),
        (dict(steps=0), "steps must be a positive integer"),
        (dict(compute_dtype="float16"), "compute_dtype"),
        (dict(warmup_steps=10, steps=5), "warmup_steps"),
        (dict(lora=dict(rank=0)), "rank must be a positive integer"),
    ],
)
def test_bad_configs_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RecoverConfig(**kwargs)


def test_masked_recovery_without_masks_trains_every_weight():
    params = MODEL.init_params(0)
    result = recover(MODEL, params, data(), small("masked", steps=2), progress=False)
    changed = [
        not np.array_equal(np.asarray(leaf), np.asarray(flat_leaves(params)[path]))
        for path, leaf in flat_leaves(result.params).items()
    ]
    assert all(changed)


def test_data_parallel_recovery_on_four_devices_equals_one_device():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "helpers" / "recover_mesh_check.py"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout)
    assert out["devices"] == 4
    for method in ("lora", "masked"):
        assert out[method]["max_diff"] < 1e-5, out[method]
        np.testing.assert_allclose(*(np.asarray(x)[:, 1] for x in out[method]["losses"]), rtol=1e-5)
