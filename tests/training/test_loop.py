"""The vision training loop: learns real digits, deterministic, resumes exactly, trains sparse."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from jaxprune.models.vision import MLPConfig, VGGConfig, VisionModel
from jaxprune.training import distributions, final_params, schedules, sparse_training, updaters
from jaxprune.training.loop import ImageData, Split, evaluate, train
from jaxprune.training.scratch import fresh_masked_init, kept_fan_out, scratch_b_epochs

pytest.importorskip("sklearn")

MLP = VisionModel(MLPConfig(hidden=(32,), image_size=8))


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return ImageData.load("digits")


def fit(data, epochs, tx=None, **kwargs):
    params, stats = MLP.init(0)
    tx = optax.adam(3e-3) if tx is None else tx
    return train(
        MLP, params, stats, tx, data.train, epochs=epochs, batch_size=50, seed=1, progress=False,
        **kwargs,
    )  # fmt: skip


def test_an_mlp_learns_the_digits_and_the_run_is_deterministic(digits):
    first, second = fit(digits, 3), fit(digits, 3)
    assert evaluate(MLP, first.params, first.stats, digits.test) > 0.85
    assert [h["epoch"] for h in first.history] == [1, 2, 3] and first.steps == 3 * 30
    jax.tree.map(np.testing.assert_array_equal, first.params, second.params)


def test_resuming_from_a_checkpoint_equals_one_uninterrupted_run(digits, tmp_path):
    whole = fit(digits, 2)
    fit(digits, 1, checkpoint_dir=tmp_path / "run")
    resumed = fit(digits, 2, checkpoint_dir=tmp_path / "run", resume=True)
    assert len(resumed.history) == 2
    jax.tree.map(np.testing.assert_array_equal, whole.params, resumed.params)
    jax.tree.map(np.testing.assert_array_equal, whole.opt_state, resumed.opt_state)


def test_batchnorm_statistics_come_back_from_training():
    model = VisionModel(VGGConfig(widths=(4,), image_size=8))
    params, stats = model.init(0)
    rng = np.random.default_rng(0)
    split = Split(rng.normal(2.0, 1.0, (64, 8, 8, 1)).astype(np.float32), np.zeros(64, np.int32))
    run = train(
        model, params, stats, optax.sgd(0.0), split, epochs=1, batch_size=32, progress=False
    )
    mean = np.asarray(run.stats["convs"][0]["bn"]["mean"])
    assert np.all(mean != 0.0)
    jax.tree.map(np.testing.assert_array_equal, run.params, params)  # lr 0: params unchanged


@pytest.mark.parametrize("updater", [updaters.magnitude(), updaters.ste()])
def test_sparse_training_in_the_loop_reaches_its_target_and_still_learns(digits, updater):
    params, _ = MLP.init(0)
    targets = distributions.uniform(params, 0.8)
    tx = sparse_training(optax.adam(3e-3), targets, updater, schedules.gmp(0, 60, 10))
    run = fit(digits, 3, tx=tx)
    pruned = final_params(run.params, run.opt_state)
    kernels = [np.asarray(pruned["layers"][i]["kernel"]) for i in (0, 1)]
    assert all(np.mean(k == 0) == pytest.approx(0.8, abs=0.01) for k in kernels)
    assert evaluate(MLP, pruned, run.stats, digits.test) > 0.6


def test_a_training_set_smaller_than_a_batch_is_refused(digits):
    params, stats = MLP.init(0)
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(MLP, params, stats, optax.sgd(0.1), digits.test.take(10), epochs=1, batch_size=50)


def test_scratch_b_scales_epochs_by_the_flops_ratio():
    assert scratch_b_epochs(10, 400, 100) == 40
    assert scratch_b_epochs(3, 300, 200) == 5  # 4.5 rounded up
    assert scratch_b_epochs(10, 400, 100, max_factor=2.0) == 20
    assert scratch_b_epochs(10, 100, 400) == 10  # never fewer than Scratch-E
    with pytest.raises(ValueError, match="positive FLOPs"):
        scratch_b_epochs(10, 0, 100)


def test_fresh_masked_init_is_a_new_draw_with_the_mask_applied():
    params, _ = MLP.init(0)
    keep = np.random.default_rng(0).random(params["layers"][0]["kernel"].shape) < 0.3
    fresh, _ = fresh_masked_init(MLP, {"layers/0/kernel": keep}, seed=7, init="dense")
    kernel, seeded = (
        np.asarray(fresh["layers"][0]["kernel"]),
        np.asarray(MLP.init(7)[0]["layers"][0]["kernel"]),
    )
    np.testing.assert_array_equal(kernel, np.where(keep, seeded, 0.0))
    assert not np.allclose(kernel[keep], np.asarray(params["layers"][0]["kernel"])[keep])


def test_reference_scratch_init_redraws_with_kaiming_std_over_the_kept_fan_out():
    # The reference (Rethinking, cifar_E.py): std = sqrt(2 / n), n = kept weights / c_in.
    model = VisionModel(VGGConfig(widths=(16, "M", 64), image_size=8))
    keep = np.random.default_rng(0).random((3, 3, 16, 64)) < 0.1
    masks = {"convs/1/conv/kernel": keep}
    fresh, _ = fresh_masked_init(model, masks, seed=3)
    kernel = np.asarray(fresh["convs"][1]["conv"]["kernel"])
    n = keep.sum() / 16
    assert kept_fan_out(keep) == pytest.approx(n)
    assert np.all(kernel[~keep] == 0.0)
    # ~920 kept draws: the sample std is within 3 standard errors (about 7%) of the closed form.
    np.testing.assert_allclose(kernel[keep].std(), np.sqrt(2.0 / n), rtol=0.07)
    # The dense init (LeCun, std sqrt(1 / (9 c_in))) masked is sqrt(2 c_in / (c_out d)) smaller.
    dense, _ = fresh_masked_init(model, masks, seed=3, init="dense")
    ratio = kernel[keep].std() / np.asarray(dense["convs"][1]["conv"]["kernel"])[keep].std()
    np.testing.assert_allclose(ratio, np.sqrt(2 * 16 / (64 * keep.mean())), rtol=0.1)
    # Unmasked leaves are the seed's init.
    np.testing.assert_array_equal(
        fresh["convs"][0]["conv"]["kernel"], dense["convs"][0]["conv"]["kernel"]
    )
    with pytest.raises(ValueError, match="init"):
        fresh_masked_init(model, {}, seed=0, init="kaiming")


def test_imbalanced_split_keeps_a_fraction_of_the_minority_classes():
    labels = np.repeat(np.arange(4), [10, 20, 30, 7]).astype(np.int32)
    split = Split(np.arange(len(labels), dtype=np.float32)[:, None, None, None], labels)
    small = split.imbalanced(minority=(1, 3), fraction=0.25, seed=0)
    counts = np.bincount(small.labels, minlength=4)
    np.testing.assert_array_equal(counts, [10, 5, 30, 1])  # floor(0.25 n), at least one
    # Images stay with their labels and in order; a different seed draws other minority examples.
    np.testing.assert_array_equal(labels[small.images[:, 0, 0, 0].astype(int)], small.labels)
    assert np.all(np.diff(small.images[:, 0, 0, 0]) > 0)
    other = split.imbalanced(minority=(1, 3), fraction=0.25, seed=1)
    assert not np.array_equal(other.images, small.images)
    with pytest.raises(ValueError, match="fraction"):
        split.imbalanced((1,), 0.0)
