"""Evaluation: perplexity over token windows and zero-shot multiple-choice accuracy."""

from jaxprune.eval.perplexity import PerplexityResult, perplexity
from jaxprune.eval.zeroshot import TaskScore, score_examples, score_tasks

__all__ = ["PerplexityResult", "TaskScore", "perplexity", "score_examples", "score_tasks"]
