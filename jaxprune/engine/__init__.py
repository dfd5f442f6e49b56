"""The one-shot engine: prune a whole model layer by layer from calibration data.

:func:`prune` is the entry point; the steps it runs are small modules of their own — ``plan``
(what will be pruned, decided before any work), ``calibrate`` (running a block over the windows,
statistics), ``block`` (solving one block), ``prepass`` (data-driven allocation), ``placement``
(one device, a mesh, or host offload) and ``report``.
"""

from jaxprune.engine.plan import PrunePlan
from jaxprune.engine.prune import prune
from jaxprune.engine.report import PruneResult

__all__ = ["PrunePlan", "PruneResult", "prune"]
