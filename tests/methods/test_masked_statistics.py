"""``Statistic.update_masked`` adds exactly the tokens its mask selects: the same state as
``update`` of those tokens alone, batch after batch (what a mixture-of-experts expert sees)."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxprune.methods.statistics import HESSIAN, MOMENTS, SQ_NORMS, combine


@pytest.mark.parametrize(
    "statistic",
    [HESSIAN, SQ_NORMS, MOMENTS, combine(SQ_NORMS, MOMENTS)],
    ids=["hessian", "sq_norms", "moments", "combined"],
)
def test_masked_update_equals_the_update_of_the_selected_tokens(statistic):
    rng = np.random.default_rng(0)
    masked, plain = statistic.init(8), statistic.init(8)
    for batch in range(3):
        x = rng.standard_normal((32, 8)).astype(np.float32)
        mask = rng.random(32) < (0.0 if batch == 1 else 0.4)  # one batch routes no token
        masked = statistic.update_masked(masked, x, mask)
        if mask.any():
            plain = statistic.update(plain, x[mask])
    for got, want in zip(jax.tree.leaves(masked), jax.tree.leaves(plain), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_combination_with_a_statistic_lacking_a_masked_update_has_none():
    plain_only = SQ_NORMS._replace(update_masked=None)
    assert combine(SQ_NORMS, plain_only).update_masked is None
    assert combine(SQ_NORMS, MOMENTS).update_masked is not None


def test_a_method_without_masked_statistics_cannot_target_experts_and_is_told_before_work():
    from moe_models import moe_model

    import jaxprune as jp
    from jaxprune.engine import PrunePlan

    model, params = moe_model()
    wanda = jp.get_method("wanda")
    unmaskable = dataclasses.replace(
        wanda, name="wanda-plain", statistics=SQ_NORMS._replace(update_masked=None)
    )
    with pytest.raises(ValueError, match="cannot be gathered per expert"):
        PrunePlan.build(model, params, jp.Recipe(method="wanda"), unmaskable)
    recipe = jp.Recipe(method="wanda", ignore=(r".*/experts/.*",))
    assert all("experts" not in p for p in PrunePlan.build(model, params, recipe, unmaskable).paths)
