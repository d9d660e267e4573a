"""Compare the integer reference with the fake-quant model, layer by layer.

Used by the export round-trip test, ``convforge demo`` and the benchmarks, so that "agrees
within 1 LSB on 99 % of elements" means one thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from convforge.models.quant.qgraph import QGraph


@dataclass(frozen=True)
class LayerAgreement:
    """How one tensor of the integer reference agrees with the fake-quant model.

    ``exact`` and ``within_1lsb`` are fractions of elements; ``max_lsb`` the largest
    difference in LSBs of the tensor's scale.
    """

    tensor: str
    elements: int
    exact: float
    within_1lsb: float
    max_lsb: int


def layer_agreement(
    graph: QGraph, int_values: dict[str, torch.Tensor], qat_values: dict[str, torch.Tensor]
) -> list[LayerAgreement]:
    """Per tensor written by a layer of ``graph``: agreement of the integers with the
    fake-quant activations divided by the tensor's scale (rounded to the nearest LSB)."""
    rows = []
    for layer in graph.layers:
        for name in layer.outputs:
            if name not in int_values or name not in qat_values:
                continue
            q_int = int_values[name].to(torch.int64)
            q_fake = torch.round(qat_values[name].double() / graph.tensors[name].scale).to(torch.int64)
            diff = (q_int - q_fake).abs()
            n = diff.numel()
            rows.append(
                LayerAgreement(
                    tensor=name,
                    elements=n,
                    exact=float((diff == 0).sum()) / n,
                    within_1lsb=float((diff <= 1).sum()) / n,
                    max_lsb=int(diff.max()) if n else 0,
                )
            )
    return rows


def heatmap_peaks(hm: torch.Tensor) -> torch.Tensor:
    """Boolean mask of heatmap peaks (INTEGER_SPEC v1.1 §5): the decoders' own
    :func:`~convforge.models.eval.decode.peak_mask` (plateaus give one peak, NaN never
    wins). Works on integer logits or dequantised floats; padding never wins.
    """
    from convforge.models.eval.decode import peak_mask

    return peak_mask(hm)
