"""Image batches as ImageNet-trained Vision Transformers expect them.

Small greyscale datasets (MNIST, Fashion-MNIST) become ``(n, size, size, 3)`` float32 batches:
scaled to ``[0, 1]``, resized bilinearly (half-pixel centres, as ``torch``/``PIL`` do), grey
repeated over three channels, normalised with the ImageNet mean and standard deviation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@functools.partial(jax.jit, static_argnames="size")
def imagenet_inputs(images: jax.Array, size: int = 224) -> jax.Array:
    """``uint8`` images ``(n, h, w)`` or ``(n, h, w, c)`` → normalised ``(n, size, size, 3)``.

    Raises:
      ValueError: images with a channel count other than 1 or 3.
    """
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (n, h, w) or (n, h, w, 1|3), got {images.shape}")
    x = jax.image.resize(x, (x.shape[0], size, size, x.shape[-1]), method="bilinear")
    x = jnp.broadcast_to(x, x.shape[:-1] + (3,))
    return (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "imagenet_inputs"]
