"""Structured pruning: whole channels and filters removed, models physically shrunk.

CNN filter pruning (``filters``: coupled channel groups, L1 scores, masks, physical shrink;
``beta_rank``: Beta-Rank and HRank scores from calibration images) works on the vision models of
:mod:`jaxprune.models.vision`.
"""

from jaxprune.structured import beta_rank, filters

__all__ = ["beta_rank", "filters"]
