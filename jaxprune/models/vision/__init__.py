"""Small NNX image classifiers for training-time, filter and federated pruning experiments.

:class:`VisionModel` applies any of them to nested-dict ``params`` and BatchNorm ``stats``; the
configs are an MLP (:class:`MLPConfig`, LeNet-300-100 by default), a VGG-style CNN with BatchNorm
(:class:`VGGConfig`) and a pre-activation ResNet-20-style network (:class:`ResNetConfig`). Each
declares its channel groups (what filter pruning removes together) and its FLOPs.
"""

from jaxprune.models.vision.base import ChannelGroup, VisionModel
from jaxprune.models.vision.mlp import MLPConfig
from jaxprune.models.vision.resnet import ResNetConfig
from jaxprune.models.vision.vgg import VGGConfig

__all__ = ["ChannelGroup", "MLPConfig", "ResNetConfig", "VGGConfig", "VisionModel"]
