"""Fake-quantised (QAT) versions of the compute blocks, and activation observers.

Every quantised block reads a tensor whose values are ``scale_x * q_x`` (``q_x`` integers
in the producer's range), and writes ``scale_y * q_y``. Two forward paths:

- **training** (``module.training``): float32 with straight-through rounding, so that
  gradients reach the weights, BatchNorm affine parameters and biases. The weights are the
  BN-folded weights (running statistics, frozen) quantised per output channel, the bias is
  quantised at ``s_x * s_w[c]``, and the output is ``clamp(floor(acc_real / s_y + 0.5), lo, hi)``
  with the exact real multiplier. The activation observer updates here.
- **eval**: the integer contract itself (INTEGER_SPEC §3/§4). The accumulator is computed
  from the integer weights and inputs in float64 (exact for these magnitudes), then
  :func:`~convforge.models.quant.intops.requant` applies the very ``(bias, M, S, lo, hi)``
  that export writes into the QGraph (:meth:`QConvBNAct.integer_params` serves both).
  The only float left is ``q_y * s_y`` on the way out.

Rounding is half up (``floor(x + 0.5)``) everywhere, as ``rshift_round``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convforge.errors import ConvforgeError, ExportError, ShapeError
from convforge.models.nets.blocks import Add, ConvBNAct, SquareDeformDW
from convforge.models.ops import deform_square_dw_conv2d, round_ste
from convforge.models.quant.intops import (
    M_MIN,
    act_range,
    derive_requant,
    requant,
    round_half_even,
    rshift_round,
    sat,
    weight_range,
)

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
#: Smallest observed maximum: a layer that never fired still gets a usable scale.
MIN_RANGE = 1e-3


class ActObserver(nn.Module):
    """Per-tensor activation range: an EMA of the batch maximum, and the scale it implies.

    Args:
        bits: activation width (8).
        signed: ``True`` for int8 ``[-128, 127]`` (observes ``max |y|``, scale ``max/127``),
            ``False`` for uint8 ``[0, 255]`` (observes ``max y``, scale ``max/255``).
        relu6: cap the range at 6 (scale ``min(max, 6)/255``, ``hi = round(6/scale)``).
        fixed: ``(scale, lo, hi)`` for a tensor with a fixed meaning (the network input:
            ``(1.0, 0, 255)``; a dilation map: ``(1.0, 0, D_max)``); never observes.
        momentum: EMA weight of a new batch maximum (the first batch initialises).

    A module shared by several layers (concat inputs) gives them one scale.
    """

    def __init__(
        self,
        bits: int = 8,
        signed: bool = False,
        relu6: bool = False,
        fixed: tuple[float, int, int] | None = None,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.bits, self.signed, self.relu6, self.momentum = bits, signed, relu6, momentum
        self.fixed = fixed
        #: When True the range stays put even in training mode (see ``qat.freeze_observers``).
        self.frozen = False
        self.register_buffer("max_val", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(fixed is not None))

    @property
    def qmax(self) -> int:
        return act_range(self.bits, self.signed)[1]

    def observe(self, y: torch.Tensor) -> None:
        """Fold a batch of real pre-activations into the running maximum."""
        if self.fixed is not None or self.frozen:
            return
        with torch.no_grad():
            m = y.abs().max() if self.signed else y.max().clamp(min=0)
            if not bool(self.initialized):
                self.max_val.copy_(m)
                self.initialized.fill_(True)
            else:
                self.max_val.mul_(1 - self.momentum).add_(self.momentum * m)

    def _range(self) -> torch.Tensor:
        r = self.max_val.clamp(min=MIN_RANGE)
        return r.clamp(max=6.0) if self.relu6 else r

    def scale_tensor(self) -> torch.Tensor:
        """The scale as a 0-d tensor on the observer's device (training path)."""
        if self.fixed is not None:
            return torch.tensor(float(self.fixed[0]), device=self.max_val.device)
        return self._range() / self.qmax

    def scale(self) -> float:
        """The scale (real value of one LSB) as a Python float.

        Raises:
            ConvforgeError: the observer has not seen data (calibrate the model first).
        """
        if self.fixed is not None:
            return float(self.fixed[0])
        if not bool(self.initialized):
            raise ConvforgeError(
                "an activation observer has seen no data; run convforge.models.quant.qat.calibrate "
                "(or a training step) before evaluating or exporting the QAT model"
            )
        return float(self._range()) / self.qmax

    def bounds(self) -> tuple[int, int]:
        """``(lo, hi)`` of the integer values this tensor takes (the activation folded in)."""
        if self.fixed is not None:
            return int(self.fixed[1]), int(self.fixed[2])
        lo, hi = act_range(self.bits, self.signed)
        if self.relu6:
            hi = min(hi, round_half_even(6.0 / self.scale()))
        return lo, hi

    def extra_repr(self) -> str:
        kind = f"fixed={self.fixed}" if self.fixed else ("int" if self.signed else "uint") + str(self.bits)
        return kind + (", relu6" if self.relu6 else "")


@dataclass
class IntParams:
    """A layer's integer parameters, exactly as export writes them (INTEGER_SPEC §2/§3).

    ``weight``/``bias``/``M``/``S`` are int64 tensors; ``lo``/``hi`` the output clamp;
    ``in_scale``, ``w_scale`` (per channel) and ``out_scale`` the real scales they derive from.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    M: torch.Tensor
    S: torch.Tensor
    lo: int
    hi: int
    in_scale: float
    w_scale: torch.Tensor
    out_scale: float


def weight_scales(w: torch.Tensor, w_bits: int) -> torch.Tensor:
    """Per-output-channel symmetric scales ``max|w[c]| / qmax`` (detached).

    An all-zero channel takes the layer's largest scale (or ``1/qmax`` when the whole layer is
    zero) so that its bias still quantises at a sensible step.
    """
    qmax = weight_range(w_bits)[1]
    with torch.no_grad():
        amax = w.detach().abs().flatten(1).max(dim=1).values
        fallback = amax.max() if bool((amax > 0).any()) else torch.ones((), dtype=w.dtype, device=w.device)
        return torch.where(amax > 0, amax, fallback) / qmax


class _QuantMixin:
    """Shared state of quantised blocks: bit widths, observers, name."""

    w_bits: int
    qname: str
    act_obs: ActObserver

    def _init_quant(self, w_bits: int, act_obs: ActObserver) -> None:
        self.w_bits = int(w_bits)
        self.act_obs = act_obs
        self.qname = "?"
        self._in_obs: list[ActObserver] = []  # set by prepare_qat; plain list: not submodules

    def set_input_observers(self, observers: list[ActObserver]) -> None:
        """The observers of this block's input tensors (not registered as submodules)."""
        self._in_obs = list(observers)

    @property
    def in_obs(self) -> ActObserver:
        if not self._in_obs:
            raise ConvforgeError(f"block {self.qname!r} has no input observer; build it with prepare_qat")
        return self._in_obs[0]

    def _int_requant(self, name: str, w_scale: torch.Tensor, in_scale: float, out_scale: float):
        ms = [derive_requant(in_scale * float(sw) / out_scale, name) for sw in w_scale.tolist()]
        M = torch.tensor([m.M for m in ms], dtype=torch.int64, device=w_scale.device)
        S = torch.tensor([m.S for m in ms], dtype=torch.int64, device=w_scale.device)
        return M, S

    def _fake_out(self, pre: torch.Tensor) -> torch.Tensor:
        """Training path: observe the real pre-activation, quantise it to the output grid."""
        if self.training:
            self.act_obs.observe(pre)
        if self.act_obs.fixed is not None:
            s_y = float(self.act_obs.fixed[0])
            lo, hi = self.act_obs.bounds()
        else:
            s_y = self.act_obs.scale_tensor()
            lo, hi = act_range(self.act_obs.bits, self.act_obs.signed)
            if self.act_obs.relu6:
                hi = min(hi, round_half_even(6.0 / float(s_y)))
        return torch.clamp(round_ste(pre / s_y), lo, hi) * s_y

    def _input_ints(self, x: torch.Tensor, obs: ActObserver, s_x) -> torch.Tensor:
        lo, hi = obs.bounds() if obs.fixed is not None or bool(obs.initialized) else act_range(obs.bits, obs.signed)
        return torch.clamp(round_ste(x / s_x), lo, hi)


class QConvBNAct(_QuantMixin, ConvBNAct):
    """Fake-quantised :class:`ConvBNAct` (shares the float block's ``conv`` and ``bn``)."""

    @classmethod
    def from_float(cls, float_block: ConvBNAct, w_bits: int, act_obs: ActObserver) -> QConvBNAct:
        q = cls.__new__(cls)
        nn.Module.__init__(q)
        for key in ("in_ch", "out_ch", "kernel", "stride", "padding", "groups", "act", "d_max"):
            setattr(q, key, getattr(float_block, key))
        q.conv = float_block.conv
        q.bn = float_block.bn
        q.register_buffer("in_mean", float_block.in_mean)
        q.register_buffer("in_std", float_block.in_std)
        q._init_quant(w_bits, act_obs)
        q.train(float_block.training)
        return q

    def folded(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """BN-folded ``(weight, bias)`` on this layer's input (running statistics)."""
        w, b = self.conv_weight_bias()
        if dtype is not None:
            w = w.to(dtype)
            b = b.to(dtype) if b is not None else None
        if b is None:
            b = torch.zeros(self.out_ch, dtype=w.dtype, device=w.device)
        if self.bn is None:
            return w, b
        bn = self.bn
        gain = bn.weight.to(w.dtype) / torch.sqrt(bn.running_var.to(w.dtype) + bn.eps)
        return w * gain.view(-1, 1, 1, 1), (b - bn.running_mean.to(w.dtype)) * gain + bn.bias.to(w.dtype)

    def integer_params(self) -> IntParams:
        """The integer weights, bias and requantisation that export writes (float64 maths)."""
        with torch.no_grad():
            w, b = self.folded(torch.float64)
            s_x = self.in_obs.scale()
            s_w = weight_scales(w, self.w_bits)
            lo_w, hi_w = weight_range(self.w_bits)
            wq = torch.clamp(torch.floor(w / s_w.view(-1, 1, 1, 1) + 0.5), lo_w, hi_w).to(torch.int64)
            bq = torch.clamp(torch.floor(b / (s_x * s_w) + 0.5), INT32_MIN, INT32_MAX).to(torch.int64)
            s_y = self.act_obs.scale()
            M, S = self._int_requant(self.qname, s_w, s_x, s_y)
            lo, hi = self.act_obs.bounds()
        return IntParams(wq, bq, M, S, lo, hi, s_x, s_w, s_y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            p = self.integer_params()
            xq = torch.round(x.detach().to(torch.float64) / p.in_scale)
            xq = torch.clamp(xq, *self.in_obs.bounds())
            acc = F.conv2d(xq, p.weight.to(torch.float64), None, self.stride, self.padding, 1, self.groups)
            q = requant(acc.round().to(torch.int64), p.bias, p.M, p.S, p.lo, p.hi)
            return (q.to(torch.float64) * p.out_scale).to(x.dtype)
        w, b = self.folded()
        s_x = self.in_obs.scale_tensor()
        s_w = weight_scales(w, self.w_bits)
        lo_w, hi_w = weight_range(self.w_bits)
        wq = torch.clamp(round_ste(w / s_w.view(-1, 1, 1, 1)), lo_w, hi_w)
        bq = torch.clamp(round_ste(b / (s_x * s_w)), INT32_MIN, INT32_MAX)
        xq = self._input_ints(x, self.in_obs, s_x)
        acc = F.conv2d(xq, wq, bq, self.stride, self.padding, 1, self.groups)
        return self._fake_out(acc * (s_x * s_w).view(1, -1, 1, 1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, w_bits={self.w_bits}"


class QSquareDeformDW(_QuantMixin, SquareDeformDW):
    """Fake-quantised :class:`SquareDeformDW` (shares the float block's ``weight``); no bias.

    Inputs: the feature map (``scale_x * q_x``) and the dilation map (integers, scale 1).
    """

    @classmethod
    def from_float(cls, float_block: SquareDeformDW, w_bits: int, act_obs: ActObserver) -> QSquareDeformDW:
        q = cls.__new__(cls)
        nn.Module.__init__(q)
        q.channels, q.stride, q.d_max = float_block.channels, float_block.stride, float_block.d_max
        q.weight = float_block.weight
        q._init_quant(w_bits, act_obs)
        q.train(float_block.training)
        return q

    def integer_params(self) -> IntParams:
        """Integer weights (bias 0) and requantisation, as export writes them."""
        with torch.no_grad():
            w = self.weight.detach().to(torch.float64)
            s_x = self.in_obs.scale()
            s_w = weight_scales(w, self.w_bits)
            lo_w, hi_w = weight_range(self.w_bits)
            wq = torch.clamp(torch.floor(w / s_w.view(-1, 1, 1, 1) + 0.5), lo_w, hi_w).to(torch.int64)
            bq = torch.zeros(self.channels, dtype=torch.int64, device=w.device)
            s_y = self.act_obs.scale()
            M, S = self._int_requant(self.qname, s_w, s_x, s_y)
            lo, hi = self.act_obs.bounds()
        return IntParams(wq, bq, M, S, lo, hi, s_x, s_w, s_y)

    def forward(self, x: torch.Tensor, dilation: torch.Tensor) -> torch.Tensor:
        d_obs = self._in_obs[1] if len(self._in_obs) > 1 else None
        d_lo, d_hi = d_obs.bounds() if d_obs is not None else (0, self.d_max)
        if not self.training:
            p = self.integer_params()
            xq = torch.clamp(torch.round(x.detach().to(torch.float64) / p.in_scale), *self.in_obs.bounds())
            d = torch.clamp(torch.round(dilation.detach().to(torch.float64)), d_lo, d_hi)
            acc = deform_square_dw_conv2d(xq, d, p.weight.to(torch.float64), stride=self.stride)
            q = requant(acc.round().to(torch.int64), p.bias, p.M, p.S, p.lo, p.hi)
            return (q.to(torch.float64) * p.out_scale).to(x.dtype)
        w = self.weight
        s_x = self.in_obs.scale_tensor()
        s_w = weight_scales(w, self.w_bits)
        lo_w, hi_w = weight_range(self.w_bits)
        wq = torch.clamp(round_ste(w / s_w.view(-1, 1, 1, 1)), lo_w, hi_w)
        xq = self._input_ints(x, self.in_obs, s_x)
        d = torch.clamp(round_ste(dilation), d_lo, d_hi)
        acc = deform_square_dw_conv2d(xq, d.to(xq.dtype), wq.to(xq.dtype), stride=self.stride)
        return self._fake_out(acc * (s_x * s_w).view(1, -1, 1, 1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, w_bits={self.w_bits}"


@dataclass
class AddParams:
    """A residual add's integer parameters (INTEGER_SPEC §4 "Add"): ``y = sat(rshift_round(
    a*Ma + b*Mb, S), lo, hi)``; ``a_scale``, ``b_scale``, ``out_scale`` the real scales."""

    Ma: int
    Mb: int
    S: int
    lo: int
    hi: int
    a_scale: float
    b_scale: float
    out_scale: float


def derive_add_requant(ra: float, rb: float, layer: str = "?") -> tuple[int, int, int]:
    """``(Ma, Mb, S)`` for an add with real multipliers ``ra = s_a/s_y``, ``rb = s_b/s_y``.

    One shift for both operands: the larger multiplier gets the 15-bit ``(M, S)`` of
    :func:`~convforge.models.quant.intops.derive_requant` (INTEGER_SPEC §3), the smaller
    ``round_half_even(r * 2**S)`` at the same ``S`` (so ``Ma/2**S`` and ``Mb/2**S`` are both
    within half an LSB of ``2**S`` of their real values).

    Raises:
        ExportError: a multiplier is negative, not finite, or the shift is out of range.
    """
    big = derive_requant(max(ra, rb), layer)
    if big.M == 0:
        return 0, 0, 0
    m_small = round_half_even(min(ra, rb) * 2.0**big.S)
    if m_small < 0 or big.M < M_MIN:
        raise ExportError(f"layer {layer!r}: add multipliers {ra!r}, {rb!r} give no usable (Ma, Mb, S)")
    return (big.M, m_small, big.S) if ra >= rb else (m_small, big.M, big.S)


class QAdd(_QuantMixin, Add):
    """Fake-quantised :class:`~convforge.models.nets.blocks.Add`: reads two quantised tensors
    ``s_a * q_a`` and ``s_b * q_b``, writes ``s_y * q_y``.

    Eval: ``q_y = sat(rshift_round(q_a*Ma + q_b*Mb, S), lo, hi)`` with the ``(Ma, Mb, S)`` of
    :meth:`integer_params` (what export writes). Training: ``clamp(round(y / s_y), lo, hi) * s_y``
    with a straight-through gradient and the real multipliers (within 1 LSB of eval).
    """

    @classmethod
    def from_float(cls, float_block: Add, act_obs: ActObserver) -> QAdd:
        q = cls.__new__(cls)
        nn.Module.__init__(q)
        q.act = float_block.act
        q._init_quant(8, act_obs)
        q.train(float_block.training)
        return q

    def integer_params(self) -> AddParams:
        """``(Ma, Mb, S, lo, hi)`` and the scales, exactly as export writes them."""
        if len(self._in_obs) != 2:
            raise ConvforgeError(f"add {self.qname!r} has no input observers; build it with prepare_qat")
        s_a, s_b = self._in_obs[0].scale(), self._in_obs[1].scale()
        s_y = self.act_obs.scale()
        Ma, Mb, S = derive_add_requant(s_a / s_y, s_b / s_y, self.qname)
        lo, hi = self.act_obs.bounds()
        return AddParams(Ma, Mb, S, lo, hi, s_a, s_b, s_y)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape:
            raise ShapeError(f"add {self.qname!r}: operand shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
        obs_a, obs_b = self._in_obs[0], self._in_obs[1]
        if not self.training:
            p = self.integer_params()
            qa = torch.clamp(torch.round(a.detach().to(torch.float64) / p.a_scale), *obs_a.bounds()).to(torch.int64)
            qb = torch.clamp(torch.round(b.detach().to(torch.float64) / p.b_scale), *obs_b.bounds()).to(torch.int64)
            q = sat(rshift_round(qa * p.Ma + qb * p.Mb, p.S), p.lo, p.hi)
            return (q.to(torch.float64) * p.out_scale).to(a.dtype)
        s_a, s_b = obs_a.scale_tensor(), obs_b.scale_tensor()
        y = self._input_ints(a, obs_a, s_a) * s_a + self._input_ints(b, obs_b, s_b) * s_b
        return self._fake_out(y)

    def extra_repr(self) -> str:
        return f"act={self.act}"


QUANT_BLOCKS = (QConvBNAct, QSquareDeformDW, QAdd)
