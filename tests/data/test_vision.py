"""ImageNet-style inputs from greyscale digits, against torch's bilinear interpolate."""

import numpy as np
import torch

from jaxprune.data.vision import IMAGENET_MEAN, IMAGENET_STD, imagenet_inputs


def test_grey_images_are_resized_bilinearly_and_normalised_per_channel():
    images = np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    out = np.asarray(imagenet_inputs(images, size=56))
    assert out.shape == (2, 56, 56, 3)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(images[:, None].astype(np.float32) / 255.0),
        size=(56, 56),
        mode="bilinear",
        align_corners=False,
    ).numpy()[:, 0]
    for c in range(3):
        np.testing.assert_allclose(
            out[..., c], (ref - IMAGENET_MEAN[c]) / IMAGENET_STD[c], atol=1e-5
        )
