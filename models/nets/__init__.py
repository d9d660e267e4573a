"""The CoDeNet family and the blocks networks are built from."""

from convforge.models.nets.blocks import (
    BLOCKS,
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

__all__ = [
    "BLOCKS",
    "CONFIGS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OUTPUT_STRIDE",
    "ChannelShuffle",
    "ChannelSplit",
    "CoDeNet",
    "CoDeNetConfig",
    "Concat",
    "ConvBNAct",
    "MaxPool",
    "Node",
    "SquareDeformDW",
    "Trace",
    "Upsample2x",
    "build_codenet",
    "count_params_macs",
    "trace",
]
