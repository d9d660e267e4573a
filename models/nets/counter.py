"""Parameter and multiply-accumulate (MAC) counts of a network.

MACs are counted analytically per module from the shapes of one forward pass (forward
hooks). Two figures come out:

- ``conv_macs``: the multiply-accumulates the deployed (BN-folded) network performs;
- ``macs``: ``conv_macs`` plus one multiply per BatchNorm output element. This is the
  convention of the CoDeNet paper's figures (counted with ``thop``, which charges the BN
  scale), and it reproduces them within 1% for configs b-e and 2.1% for config a;
  ``conv_macs`` alone is 3.5% under the paper for config a.

Per module:

- convolution (:class:`~convforge.models.nets.blocks.ConvBNAct` or a bare ``nn.Conv2d``):
  ``out_elements * (in_ch / groups) * kh * kw``; bias and activations are free;
- BatchNorm (inside a ``ConvBNAct`` or bare): ``out_elements``, in ``macs`` only;
- square deformable depthwise 3x3: 9 MACs per output element (its 1x1 dilation branch is
  a ``ConvBNAct`` and counted as such);
- ``nn.Linear``: ``in_features * out_features`` per output row;
- data movement (split, concat, shuffle, upsample, max pool): 0.

The CoDeNet family only uses layers whose output size is the input size divided by a
fixed stride, so the pass runs at a reduced resolution with the same aspect ratio and
the count is scaled by the pixel ratio (exact, not an estimate); other sizes run at full
resolution.
"""

from __future__ import annotations

import torch
from torch import nn

from convforge.models.nets.blocks import ConvBNAct, SquareDeformDW


def _conv_macs(out: torch.Tensor, in_ch: int, groups: int, kernel: tuple[int, int]) -> int:
    return int(out[0].numel()) * (in_ch // groups) * kernel[0] * kernel[1]


def _reduced_size(h: int, w: int) -> tuple[int, int]:
    """The smallest ``(h/p, w/p)`` (``p`` a power of two) whose sides stay multiples of 32."""
    if h % 32 or w % 32:
        return h, w
    while h % 64 == 0 and w % 64 == 0:
        h, w = h // 2, w // 2
    return h, w


def count_params_macs(model: nn.Module, input_hw: tuple[int, int], in_ch: int = 3) -> dict:
    """Count ``model``'s parameters and its MACs for one ``input_hw`` image.

    Args:
        model: a network built from convforge blocks (other ``nn.Conv2d``/``nn.Linear``
            modules are counted too).
        input_hw: ``(H, W)`` input size in pixels.
        in_ch: input channels.

    Returns:
        ``{"params": int, "macs": int, "conv_macs": int, "input": [H, W]}`` (MACs for batch 1,
        see the module docstring for the two conventions).
    """
    h, w = int(input_hw[0]), int(input_hw[1])
    rh, rw = _reduced_size(h, w)
    macs = [0]
    bn_macs = [0]

    def hook(module: nn.Module, args: tuple, out) -> None:
        if isinstance(module, ConvBNAct):
            macs[0] += _conv_macs(out, module.in_ch, module.groups, (module.kernel, module.kernel))
            if module.bn is not None:
                bn_macs[0] += int(out[0].numel())
        elif isinstance(module, nn.BatchNorm2d):
            bn_macs[0] += int(out[0].numel())
        elif isinstance(module, SquareDeformDW):
            macs[0] += int(out[0].numel()) * 9
        elif isinstance(module, nn.Conv2d):
            macs[0] += _conv_macs(out, module.in_channels, module.groups, module.kernel_size)
        elif isinstance(module, nn.Linear):
            macs[0] += int(out.numel() // out.shape[-1]) // out.shape[0] * module.in_features * module.out_features

    # A ConvBNAct convolves functionally but calls its BN module: skip BNs inside blocks.
    inner_bn = {id(m.bn) for m in model.modules() if isinstance(m, ConvBNAct) and m.bn is not None}
    handles = [m.register_forward_hook(hook) for m in model.modules() if id(m) not in inner_bn]
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(1, in_ch, rh, rw, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    scale = (h * w) // (rh * rw)
    return {
        "params": int(sum(p.numel() for p in model.parameters())),
        "macs": int((macs[0] + bn_macs[0]) * scale),
        "conv_macs": int(macs[0] * scale),
        "input": [h, w],
    }
