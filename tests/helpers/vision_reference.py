"""Plain-JAX forward passes of the vision models, written from the papers' definitions.

They read the same nested-dict params and stats as ``VisionModel`` but share none of its code
(no NNX, no channel groups), and can zero any set of channels wherever they appear in the
activations: what removing those channels means. Used to check the NNX models and filter
pruning's masks and physical shrink.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

EPS = 1e-5  # BatchNorm's epsilon


def conv(x, kernel, stride=1):
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def batchnorm(x, p, s):
    return (x - s["mean"]) / jnp.sqrt(s["var"] + EPS) * p["scale"] + p["bias"]


def keep_of(zero, name, width):
    if zero is None or name not in zero:
        return jnp.ones((width,))
    return jnp.asarray(zero[name], jnp.float32)


def mlp(config, params, x, zero=None):
    h = x.reshape(x.shape[0], -1)
    n = len(config.hidden)
    for i in range(n + 1):
        layer = params["layers"][i]
        h = h @ layer["kernel"] + layer["bias"]
        if i < n:
            h = jax.nn.relu(h) * keep_of(zero, f"layers/{i}", h.shape[-1])
    return h


def vgg(config, params, stats, x, zero=None):
    i = 0
    for w in config.widths:
        if w == "M":
            x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
            continue
        layer, st = params["convs"][i], stats["convs"][i]
        x = jax.nn.relu(batchnorm(conv(x, layer["conv"]["kernel"]), layer["bn"], st["bn"]))
        x = x * keep_of(zero, f"convs/{i}", x.shape[-1])
        i += 1
    flat = x.reshape(x.shape[0], -1)  # (h, w, c) order, the head's (positions, channels) rows
    head = params["head"]["kernel"]
    return flat @ head.reshape(-1, head.shape[-1]) + params["head"]["bias"]


def resnet(config, params, stats, x, zero=None):
    stream = lambda s, t: t * keep_of(zero, f"stage{s}", t.shape[-1])
    x = stream(0, conv(x, params["stem"]["kernel"]))
    for j in range(len(config.mids)):
        b, st = params["blocks"][j], stats["blocks"][j]
        stage_in = config.stage_of(j) - (j > 0 and j % config.blocks == 0)
        h = stream(stage_in, jax.nn.relu(batchnorm(x, b["bn1"], st["bn1"])))
        stride = 2 if config.projects(j) else 1
        shortcut = conv(h, b["shortcut"]["kernel"], stride) if "shortcut" in b else x
        h = jax.nn.relu(batchnorm(conv(h, b["conv1"]["kernel"], stride), b["bn2"], st["bn2"]))
        h = h * keep_of(zero, f"blocks/{j}/mid", h.shape[-1])
        x = stream(config.stage_of(j), conv(h, b["conv2"]["kernel"]) + shortcut)
    last = len(config.widths) - 1
    x = stream(last, jax.nn.relu(batchnorm(x, params["final_bn"], stats["final_bn"])))
    return jnp.mean(x, axis=(1, 2)) @ params["head"]["kernel"] + params["head"]["bias"]
