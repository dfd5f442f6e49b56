"""Linear CKA: 1 for identical representations, invariant to orthogonal maps and isotropic
scaling, equal to the Gram-matrix (HSIC) form computed in NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune.analysis import linear_cka, model_cka
from jaxprune.models.vision import VGGConfig, VisionModel


def features(n=40, p=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, p)).astype(np.float32)


def gram_cka(x, y):
    """HSIC form with centring matrices, float64 (Kornblith et al., eq. 3 with linear kernels)."""
    n = len(x)
    h = np.eye(n) - 1.0 / n
    kx, ky = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)
    return hsic(kx, ky) / np.sqrt(hsic(kx, kx) * hsic(ky, ky))


def test_identical_representations_have_cka_one():
    x = features()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-6)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), scale=st.floats(0.01, 100.0))
def test_invariant_to_orthogonal_transforms_and_isotropic_scaling(seed, scale):
    rng = np.random.default_rng(seed)
    x, y = features(seed=seed), features(p=4, seed=seed + 1) + 0.5 * features(seed=seed)[:, :4]
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    base = linear_cka(x, y)
    assert linear_cka((scale * x @ q).astype(np.float32), y) == pytest.approx(base, abs=2e-5)
    assert linear_cka(x, (y / scale).astype(np.float32)) == pytest.approx(base, abs=2e-5)


def test_not_invariant_to_arbitrary_linear_maps():
    x = features()
    stretched = x * np.asarray([10.0, 1, 1, 1, 1, 0.1], np.float32)
    assert linear_cka(x, stretched) < 0.9


def test_equals_the_gram_matrix_form():
    x, y = features(seed=3), features(p=9, seed=4)
    y[:, :3] += x[:, :3]
    want = gram_cka(x.astype(np.float64), y.astype(np.float64))
    assert linear_cka(x, y) == pytest.approx(want, abs=1e-5)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="same"):
        linear_cka(features(n=5), features(n=6))
    with pytest.raises(ValueError, match="constant"):
        linear_cka(features(), np.ones((40, 3), np.float32))


def test_model_cka_of_a_model_with_itself_is_one_and_taps_are_checked():
    model = VisionModel(VGGConfig(widths=(4, "M", 6), image_size=8))
    params, stats = model.init(0)
    images = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype(np.float32)
    assert model_cka(model, (params, stats), (params, stats), images) == pytest.approx(
        1.0, abs=1e-6
    )
    other = model.init(1)
    assert model_cka(model, (params, stats), other, images, tap="convs/1:act") < 0.999
    with pytest.raises(ValueError, match="no tap"):
        model_cka(model, (params, stats), other, images, tap="nope")
