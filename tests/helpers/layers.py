"""Small random layers and their input statistics, shared by the method tests."""

import math

import jax.numpy as jnp
import numpy as np

from jaxprune.core.sparsity import NM
from jaxprune.methods import statistics


def stats_of(x):
    return statistics.accumulate(statistics.init_stats(x.shape[-1], False), jnp.asarray(x))


def wanda_reference(kernel, x, target):
    """The reference ``prune_wanda`` in NumPy on the torch layout ``(out, in)``: True = kept."""
    w = np.asarray(kernel, np.float64).T
    metric = np.abs(w) * np.sqrt(np.sum(np.asarray(x, np.float64) ** 2, axis=0))[None, :]
    pruned = np.zeros(w.shape, bool)
    if isinstance(target, NM):
        for start in range(0, w.shape[1], target.m):
            group = metric[:, start : start + target.m]
            order = np.argsort(group, axis=1, kind="stable")[:, : target.m - target.n]
            np.put_along_axis(pruned[:, start : start + target.m], order, True, axis=1)
    else:
        k = math.floor(round(w.shape[1] * target.sparsity, 6))
        order = np.argsort(metric, axis=1, kind="stable")[:, :k]
        np.put_along_axis(pruned, order, True, axis=1)
    return ~pruned.T


def layer(rng, d_in, d_out, tokens=32):
    kernel = rng.normal(size=(d_in, d_out)).astype(np.float32)
    # Feature scales spread over two decades, so Wanda's ranking differs from magnitude's.
    x = rng.normal(size=(tokens, d_in)) * rng.lognormal(0.0, 1.5, size=d_in)
    return kernel, x.astype(np.float32)
