"""RIA: masks equal to a NumPy reference of the paper's score, exact counts, and a CLI run."""

import math

import numpy as np
import pytest
from layers import layer, stats_of

from jaxprune import cli
from jaxprune.core.sparsity import NM, Unstructured
from jaxprune.methods import get_method, ria, wanda


def ria_reference(kernel, x, target, alpha=0.5, selection="output"):
    """The reference ``prune_ria`` in NumPy on the torch layout ``(out, in)``: True = kept.

    ``selection="layer"`` is the reference's default (no ``--per_outneuron``): one threshold for
    the whole layer, here removing exactly ⌊s·size⌋ weights (ties by flat ``(in, out)`` position).
    """
    w = np.abs(np.asarray(kernel, np.float64).T)  # (out, in)
    norms = np.sqrt(np.sum(np.asarray(x, np.float64) ** 2, axis=0))  # ‖X_j‖ per input
    metric = (w / w.sum(axis=0) + w / w.sum(axis=1, keepdims=True)) * norms[None, :] ** alpha
    pruned = np.zeros(w.shape, bool)
    if isinstance(target, NM):
        for start in range(0, w.shape[1], target.m):
            group = metric[:, start : start + target.m]
            order = np.argsort(group, axis=1, kind="stable")[:, : target.m - target.n]
            np.put_along_axis(pruned[:, start : start + target.m], order, True, axis=1)
    elif selection == "layer":
        k = math.floor(round(w.size * target.sparsity, 6))
        order = np.argsort(metric.T.ravel(), kind="stable")[:k]
        flat = np.zeros(w.size, bool)
        flat[order] = True
        pruned = flat.reshape(w.shape[1], w.shape[0]).T
    else:
        k = math.floor(round(w.shape[1] * target.sparsity, 6))
        order = np.argsort(metric, axis=1, kind="stable")[:, :k]
        np.put_along_axis(pruned, order, True, axis=1)
    return ~pruned.T


@pytest.mark.parametrize("shape", [(64, 48), (96, 40)])
@pytest.mark.parametrize("target", [Unstructured(0.5), Unstructured(0.7), NM(2, 4)], ids=str)
@pytest.mark.parametrize("alpha", [0.5, 1.0])
@pytest.mark.parametrize("selection", ["layer", "output"])
def test_ria_matches_numpy_reference(shape, target, alpha, selection):
    kernel, x = layer(np.random.default_rng(shape[0]), *shape)
    new, keep = ria.solve(kernel, stats_of(x), target, alpha=alpha, selection=selection)
    expected = ria_reference(kernel, x, target, alpha, selection)
    np.testing.assert_array_equal(np.asarray(keep), expected)
    np.testing.assert_array_equal(np.asarray(new), np.where(keep, kernel, 0.0))
    # The relative term changes the choice: RIA is not Wanda with another name.
    assert not np.array_equal(
        np.asarray(keep), np.asarray(wanda.solve(kernel, stats_of(x), target)[1])
    )


def test_ria_selects_per_layer_by_default_as_the_reference():
    """The reference thresholds the whole layer unless ``--per_outneuron`` (Wanda's tactic)."""
    kernel, x = layer(np.random.default_rng(11), 64, 48)
    _, keep = ria.solve(kernel, stats_of(x), Unstructured(0.5))
    keep = np.asarray(keep)
    np.testing.assert_array_equal(keep, ria_reference(kernel, x, Unstructured(0.5), 0.5, "layer"))
    assert (~keep).sum() == 64 * 48 // 2
    assert len(set((~keep).sum(axis=0))) > 1  # outputs lose different counts: not per output


def test_alpha_zero_ignores_the_activations():
    kernel, x = layer(np.random.default_rng(1), 32, 16)
    _, with_x = ria.solve(kernel, stats_of(x), Unstructured(0.5), alpha=0.0)
    _, other_x = ria.solve(kernel, stats_of(x * 7.0 + 1.0), Unstructured(0.5), alpha=0.0)
    np.testing.assert_array_equal(np.asarray(with_x), np.asarray(other_x))


def test_dead_rows_and_columns_score_zero_not_nan():
    kernel, x = layer(np.random.default_rng(2), 32, 16)
    kernel[:, 3] = 0.0  # an output with no weights
    kernel[5, :] = 0.0  # an input with no weights
    scores = np.asarray(ria.scores(kernel, stats_of(x).sq_norms))
    assert np.all(np.isfinite(scores)) and np.all(scores[:, 3] == 0) and np.all(scores[5] == 0)
    _, keep = ria.solve(kernel, stats_of(x), Unstructured(0.5), selection="output")
    assert np.all(np.asarray(keep).sum(axis=0) == 16)


def test_ria_is_registered_with_its_option_and_checks_it():
    method = get_method("ria")
    assert dict(method.options) == {"alpha": 0.5, "selection": "layer"} and method.needs_inputs
    kernel, x = layer(np.random.default_rng(3), 16, 8)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        ria.solve(kernel, stats_of(x), Unstructured(0.5), alpha=-1.0)
    with pytest.raises(ValueError, match="selection must be 'layer' or 'output'"):
        ria.solve(kernel, stats_of(x), Unstructured(0.5), selection="row")
    with pytest.raises(ValueError, match="squared input norms"):
        ria.solve(kernel, None, Unstructured(0.5))


def test_cli_accepts_ria_and_its_option(capsys):
    args = cli.build_parser().parse_args(
        ["prune", "--method", "ria", "--pattern", "2:4", "--option", "alpha=0.3"]
        + ["--option", "selection=output"]
    )
    recipe = cli._args.recipe_from_args(args)
    assert recipe.options == {"alpha": 0.3, "selection": "output"}
    assert recipe.method == "ria" and str(recipe.target) == "2:4"
