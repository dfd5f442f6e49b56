"""Tiny synthetic image data and a two-conv VGG with BatchNorm, shared by the federated tests."""

from __future__ import annotations

import numpy as np
import pytest

from jaxprune.models.vision import VGGConfig, VisionModel
from jaxprune.training.loop import Split


@pytest.fixture(scope="session")
def tiny_model() -> VisionModel:
    return VisionModel(VGGConfig(widths=(4, "M", 6), image_size=8, num_classes=3))


@pytest.fixture(scope="session")
def tiny_data() -> Split:
    """96 8×8 images of 3 classes whose pixel mean depends on the class (so splits are non-IID)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 32).astype(np.int32)
    images = rng.normal(size=(96, 8, 8, 1)).astype(np.float32) + labels[:, None, None, None]
    return Split(images, labels)
