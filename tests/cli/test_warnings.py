"""Warnings on the command line: jaxprune's own are labelled as jaxprune's, a dependency's keep
their origin, and jaxprune's calls trigger no dependency deprecation warnings."""

from __future__ import annotations

import sys
import warnings

import numpy as np
from structured_models import TINY_GQA, random_params, windows

from jaxprune import cli
from jaxprune.cli import show_warning
from jaxprune.data.windows import random_windows
from jaxprune.models import LanguageModel
from jaxprune.structured import StructuredRecipe, prune_structured


def _warn_from(module: str, message: str) -> None:
    """Issues ``message`` from code whose module is ``module`` (as a dependency would)."""
    namespace = {"__name__": module, "warnings": warnings}
    exec("def issue(m):\n    warnings.warn(m, UserWarning, stacklevel=2)", namespace)
    namespace["issue"](message)


def _handed_on(issue) -> list[tuple]:
    """What ``show_warning`` passed to Python's own display while ``issue()`` ran."""
    handed_on = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show_warning("prune", lambda *a: handed_on.append(a))
        issue()
    return handed_on


def test_a_dependencys_warning_is_not_relabelled_as_jaxprunes(capsys):
    handed_on = _handed_on(lambda: _warn_from("flax.nnx.statelib", "State will be deprecated"))
    assert "jaxprune prune: warning" not in capsys.readouterr().err
    assert len(handed_on) == 1 and str(handed_on[0][0]) == "State will be deprecated"


def test_jaxprunes_own_warning_is_labelled_with_the_command(capsys):
    tokens = np.arange(40)
    handed_on = _handed_on(lambda: random_windows(tokens, 8, 16, np.random.default_rng(0)))
    err = capsys.readouterr().err
    assert handed_on == []
    assert err.startswith("jaxprune prune: warning: text has 40 tokens") and "overlap" in err


def test_the_cli_hands_a_dependency_warning_to_python(monkeypatch, tmp_path, capsys, recwarn):
    import jaxprune.eval.plots as plots

    def read_report(source):
        _warn_from("somedependency.module", "somedependency says hello")
        return {"method": "x"}

    monkeypatch.setattr(plots, "read_report", read_report)
    monkeypatch.setattr(sys, "argv", ["jaxprune"])
    rc = cli.main(["plot", str(tmp_path / "report.json")])
    err = capsys.readouterr().err
    assert rc == 2  # the stub report has nothing to plot
    assert "warning: somedependency says hello" not in err
    # Python's own display got it (here pytest's recorder stands in for printing to stderr).
    assert [str(w.message) for w in recwarn] == ["somedependency says hello"]


def test_structured_pruning_calls_no_deprecated_flax_api():
    model = LanguageModel(TINY_GQA)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        params = random_params(model)
        for method in ("flap", "llm-pruner"):
            recipe = StructuredRecipe(method=method, sparsity=0.2, nsamples=4, seqlen=12)
            prune_structured(model, params, windows(), recipe, progress=False)
    deprecated = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert not [m for m in deprecated if "flax" in m], deprecated
