"""Analysis of pruned networks' loss landscapes: the three-regime model (Zhou et al. 2023).

- :mod:`~.lmc`: linear mode connectivity, the loss barrier between two solutions (BatchNorm
  statistics recomputed at every interpolation point);
- :mod:`~.cka`: linear CKA between two representations;
- :mod:`~.hessian`: Hutchinson's estimate of a Hessian's trace;
- :mod:`~.regimes`: sweeps over load (density) and temperature (epochs, batch size), the regime
  (or collapsed) of each cell, the recommendation and the map (a matplotlib figure).

Everything returns arrays, dataclasses or figures (no files, no CLI), for notebooks.
"""

from jaxprune.analysis.cka import linear_cka, model_cka, representations
from jaxprune.analysis.hessian import HutchinsonResult, hutchinson_trace, loss_hessian_trace
from jaxprune.analysis.lmc import (
    LmcResult,
    barrier,
    evaluate_loss,
    interpolate,
    recompute_batch_stats,
)
from jaxprune.analysis.regimes import (
    COLLAPSED,
    RECOMMENDATIONS,
    REGIMES,
    RegimeCell,
    RegimeMap,
    Temperature,
    classify,
    collapsed,
    plot_regime_map,
    sweep,
)

__all__ = [
    "COLLAPSED",
    "RECOMMENDATIONS",
    "REGIMES",
    "HutchinsonResult",
    "LmcResult",
    "RegimeCell",
    "RegimeMap",
    "Temperature",
    "barrier",
    "classify",
    "collapsed",
    "evaluate_loss",
    "hutchinson_trace",
    "interpolate",
    "linear_cka",
    "loss_hessian_trace",
    "model_cka",
    "plot_regime_map",
    "recompute_batch_stats",
    "representations",
    "sweep",
]
