"""``prune --help`` states the calibration defaults each method really runs with."""

from __future__ import annotations

import argparse

import pytest

from jaxprune import cli
from jaxprune.cli._args import structured_recipe_from_args
from jaxprune.recipes import Recipe
from jaxprune.structured import STRUCTURED_METHODS, StructuredRecipe


@pytest.fixture(scope="module")
def help_text():
    parser = cli.build_parser()
    prune = parser._subparsers._group_actions[0].choices["prune"]
    # One line per option, so that no hyphenated name is broken across lines.
    prune.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=10_000)
    return " ".join(prune.format_help().split())


def test_prune_help_states_llm_pruners_own_calibration_defaults(help_text):
    llm = structured_recipe_from_args(
        cli.build_parser().parse_args(["prune", "--method", "llm-pruner"])
    )
    assert (llm.nsamples, llm.seqlen) == (10, 64)  # what runs when nothing is given
    assert f"calibration windows (default 64; llm-pruner: {llm.nsamples})" in help_text
    assert f"tokens per calibration window (default 512; llm-pruner: {llm.seqlen})" in help_text


def test_every_stated_default_is_the_recipes_own(help_text):
    one_shot = Recipe()
    structured = {m: StructuredRecipe(method=m) for m in STRUCTURED_METHODS}
    for field, text in (
        ("nsamples", "calibration windows"),
        ("seqlen", "tokens per calibration window"),
        ("seed", "seed of the calibration windows"),
        ("batch_size", "windows per forward pass"),
        ("allocation", "one ranking (global)"),
    ):
        stated = help_text.split(f"{text} (default ", 1)[1].split(")", 1)[0]
        expected = [str(getattr(one_shot, field))] + [
            f"{m}: {getattr(r, field)}"
            for m, r in structured.items()
            if getattr(r, field) != getattr(one_shot, field)
        ]
        assert stated == "; ".join(expected), field
    importance = structured["llm-pruner"].importance
    assert f"l1, l2, random (default {importance})" in help_text
