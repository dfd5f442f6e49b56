"""DSnoT against a per-output float64 Python transcription of its cycles, on every base method."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.core.sparsity import NM, Unstructured
from jaxprune.methods import PRUNING_METHODS, dsnot, get_method

D_IN, D_OUT, TOKENS = 32, 12, 128
BASES = ("magnitude", "wanda", "ria", "sparsegpt")


def inputs(seed):
    rng = np.random.default_rng(seed)
    # Non-zero means (what DSnoT's error reads) and unequal variances.
    x = rng.normal(size=(TOKENS, D_IN)) * rng.uniform(0.5, 2, D_IN) + rng.normal(size=D_IN)
    return x.astype(np.float32), rng.normal(size=(D_IN, D_OUT)).astype(np.float32)


def reference(dense, kernel, keep, x, nm, max_cycle=50, threshold=0.1 / 2048, monotone=True):
    """The cycles of dsnot.py's docstring, one output at a time, in float64 Python loops."""
    x = x.astype(np.float64)
    mu, var, sq = x.mean(0), np.maximum(x.var(0), 1e-12), (x**2).sum(0)
    new_keep = keep.copy()
    for j in range(dense.shape[1]):
        d, w = dense[:, j].astype(np.float64), np.where(keep[:, j], kernel[:, j], 0.0)
        grow_val, prune_val, wanda = d * mu, w * mu, np.abs(w) * np.sqrt(sq)
        r = r0 = np.sum((d - w) * mu)
        grow = sorted(np.flatnonzero(~keep[:, j]), key=lambda i: grow_val[i] / var[i])
        kept = np.flatnonzero(keep[:, j])
        group = np.sign(prune_val[kept]) + 1  # 0 negative, 1 zero, 2 positive
        order = sorted(range(len(kept)), key=lambda t: (group[t], wanda[kept[t]] * (1 - group[t])))
        prune_list = kept[order]
        gf, gb, pf, pb, regrown = 0, len(grow) - 1, 0, len(prune_list) - 1, set()
        for _ in range(max_cycle):
            if gf > gb or (nm is None and pf > pb):
                break
            g = grow[gb] if r > 0 else grow[gf]
            if nm is None:
                p = prune_list[pb] if r < 0 else prune_list[pf]
            else:
                start = g - g % nm
                cands = [i for i in range(start, start + nm) if new_keep[i, j] and i not in regrown]
                if not cands:
                    break
                p = min(cands, key=lambda i: (wanda[i], i))
            after = r + prune_val[p] - grow_val[g]
            if not (abs(r) > threshold and (abs(after) < abs(r) or not monotone)):
                break
            if nm is not None and np.sign(after) != np.sign(r0):
                break
            new_keep[p, j], new_keep[g, j] = False, True
            regrown.add(g)
            gf, gb = gf + (r <= 0), gb - (r > 0)
            pf, pb = pf + (r >= 0), pb - (r < 0)
            r = after
    return new_keep


def solve(name, x, w, target):
    method = get_method(name)
    state = method.statistics.init(D_IN) if method.statistics else None
    if state is not None:
        state = method.statistics.update(state, jnp.asarray(x))
    new, keep = method.solve(jnp.asarray(w), state, target, **method.options)
    return np.asarray(new), np.asarray(keep)


def output_error(dense, kernel, x):
    """|r_j|: the error DSnoT targets, the change of each output's mean."""
    return np.abs(((dense - kernel) * x.astype(np.float64).mean(0)[:, None]).sum(0))


# The default run keeps one N:M and the per-layer (magnitude) and updating (SparseGPT) bases.
FAST = {("wanda", "0.7"), ("wanda", "2:4"), ("magnitude", "0.7"), ("sparsegpt", "0.7")}
CASES = [
    pytest.param(base, target, id=f"{base}-{text}", marks=() if (base, text) in FAST else slow)
    for base in BASES
    for text, target in (("0.7", Unstructured(0.7)), ("2:4", NM(2, 4)))
    for slow in [pytest.mark.slow]
]


@pytest.mark.parametrize(("base", "target"), CASES)
def test_dsnot_equals_the_reference_keeps_counts_and_never_increases_its_error(base, target):
    x, w = inputs(0)
    base_kernel, base_keep = solve(base, x, w, target)
    kernel, keep = solve(f"{base}+dsnot", x, w, target)
    nm = target.m if isinstance(target, NM) else None
    expected = reference(w, base_kernel, base_keep, x, nm)
    assert np.mean(keep == expected) > 0.998  # float32 vs float64 near-ties
    assert (keep != base_keep).any()  # the refinement did something
    np.testing.assert_array_equal(keep.sum(0), base_keep.sum(0))  # per output
    if nm:
        assert np.all(keep.reshape(D_IN // 4, 4, D_OUT).sum(1) == 2)
    # Weights the base kept keep its values (SparseGPT's updates); regrown ones are dense.
    np.testing.assert_array_equal(kernel, np.where(keep, np.where(base_keep, base_kernel, w), 0))
    before, after = output_error(w, base_kernel, x), output_error(w, kernel, x)
    assert np.all(after <= before + 1e-5) and after.sum() < before.sum()


def test_the_authors_non_monotone_rule_equals_the_reference_too():
    x, w = inputs(2)
    base_kernel, base_keep = solve("wanda", x, w, Unstructured(0.7))
    method = get_method("wanda+dsnot")
    state = method.statistics.update(method.statistics.init(D_IN), jnp.asarray(x))
    options = {**method.options, "monotone": False}
    _, keep = method.solve(jnp.asarray(w), state, Unstructured(0.7), **options)
    expected = reference(w, base_kernel, base_keep, x, None, monotone=False)
    assert np.mean(np.asarray(keep) == expected) > 0.998
    np.testing.assert_array_equal(np.asarray(keep).sum(0), base_keep.sum(0))


def test_refined_by_name_and_by_function_and_through_the_registry():
    composed = jp.refined("wanda", "dsnot")
    assert composed.name == "wanda+dsnot" and set(composed.options) == set(dsnot.OPTIONS)
    assert get_method("ria+dsnot").options["alpha"] == 0.5
    assert "ria+dsnot" in PRUNING_METHODS
    with pytest.raises(ValueError, match="unknown refinement"):
        jp.refined("wanda", "nope")
    with pytest.raises(ValueError, match=r"\+REFINEMENT \(dsnot\)"):
        get_method("wanda+nope")
    x, w = inputs(1)
    with pytest.raises(ValueError, match="max_cycle"):
        method = get_method("wanda+dsnot")
        state = method.statistics.update(method.statistics.init(D_IN), jnp.asarray(x))
        method.solve(
            jnp.asarray(w), state, Unstructured(0.5), **{**method.options, "max_cycle": -1}
        )


def test_prune_refine_flag_composes_and_is_refused_for_structured_methods(capsys):
    from jaxprune import cli

    parser = cli.build_parser()
    args = parser.parse_args(["prune", "--method", "sparsegpt", "--refine", "dsnot"])
    assert cli._args.recipe_from_args(args).method == "sparsegpt+dsnot"
    args = parser.parse_args(["prune", "--refine", "dsnot", "--sparsity", "0.6"])
    assert cli._args.recipe_from_args(args).method == "magnitude+dsnot"
    rc = cli.main(["prune", "--method", "flap", "--sparsity", "0.2", "--refine", "dsnot"])
    assert rc == 2 and "--refine" in capsys.readouterr().err


@pytest.mark.slow
def test_wanda_dsnot_runs_in_the_engine_with_exact_per_output_counts():
    from tiny_models import TINY_LLAMA

    from jaxprune.engine import prune
    from jaxprune.models import LanguageModel
    from jaxprune.recipes import Recipe

    model = LanguageModel(TINY_LLAMA)
    params = model.init_params(0)
    windows = np.random.default_rng(0).integers(0, 64, (4, 16))
    result = prune(model, params, windows, Recipe(method="wanda+dsnot", sparsity=0.5))
    keep = np.asarray(result.masks["layers"][0]["mlp"]["down_proj"]["kernel"])
    assert np.all(keep.sum(axis=0) == keep.shape[0] // 2)
    assert result.report["method"] == "wanda+dsnot"
