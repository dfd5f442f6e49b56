"""Evaluation: perplexity over token windows."""

from jaxprune.eval.perplexity import PerplexityResult, perplexity

__all__ = ["PerplexityResult", "perplexity"]
