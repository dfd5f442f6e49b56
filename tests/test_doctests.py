"""The examples in the main public docstrings run, and give what they show."""

from __future__ import annotations

import doctest

import pytest

import jaxprune as jp
from jaxprune.training import keep_masks, sparse_training

DOCUMENTED = {
    "prune": jp.prune,
    "prune_pretrained": jp.prune_pretrained,
    "Recipe": jp.Recipe,
    "sparse_training": sparse_training,
    "keep_masks": keep_masks,
}


@pytest.mark.parametrize("name", DOCUMENTED)
def test_docstring_examples_run(name):
    tests = doctest.DocTestFinder(recurse=False).find(DOCUMENTED[name], name)
    assert tests and tests[0].examples, f"{name} has no doctest example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"
