"""The detector families (CoDeNet, MobileNetV2) and the blocks networks are built from."""

from convforge.models.nets.blocks import (
    BLOCKS,
    Add,
    ChannelShuffle,
    ChannelSplit,
    Concat,
    ConvBNAct,
    MaxPool,
    SquareDeformDW,
    Upsample2x,
)
from convforge.models.nets.codenet import (
    CONFIGS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OUTPUT_STRIDE,
    CoDeNet,
    CoDeNetConfig,
    build_codenet,
)
from convforge.models.nets.counter import count_params_macs
from convforge.models.nets.graph import Node, Trace, trace
from convforge.models.nets.mobilenetv2 import (
    MBV2_CONFIGS,
    MobileNetV2,
    MobileNetV2Det,
    MobileNetV2DetConfig,
    build_mobilenetv2_det,
    load_imagenet_backbone,
    load_imagenet_classifier,
)

__all__ = [
    "BLOCKS",
    "Add",
    "CONFIGS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MBV2_CONFIGS",
    "OUTPUT_STRIDE",
    "ChannelShuffle",
    "ChannelSplit",
    "CoDeNet",
    "CoDeNetConfig",
    "Concat",
    "ConvBNAct",
    "MaxPool",
    "MobileNetV2",
    "MobileNetV2Det",
    "MobileNetV2DetConfig",
    "Node",
    "SquareDeformDW",
    "Trace",
    "Upsample2x",
    "build_codenet",
    "build_mobilenetv2_det",
    "count_params_macs",
    "load_imagenet_backbone",
    "load_imagenet_classifier",
    "trace",
]
