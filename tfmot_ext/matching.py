"""Pairing TFLite interpreter tensors with the integer reference's, tensor by tensor.

:func:`compare_with_tflite` runs the reference (:func:`tfmot_ext.reference.run_reference`)
and the interpreter on the same batch and pairs every operator output with the reference
tensor it corresponds to (:func:`match_tensors`), optionally recomputing each layer from
the interpreter's own inputs so a difference is charged to the operator that makes it.
The comparison itself is NumPy; only running the interpreter needs TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from tfmot_ext.kernels import IntTensor, requantize
from tfmot_ext.params import QuantizedModelParams
from tfmot_ext.reference import ReferenceRun, layer_output, run_reference
from tfmot_ext.rules import KERNEL_ROUNDING

T = TypeVar("T")

__all__ = ["TensorMatch", "compare_with_tflite", "match_tensors", "pair_tensors", "recompute"]


@dataclass(frozen=True)
class TensorMatch:
    """One TFLite operator output compared with the reference tensor it corresponds to.

    Invariants: ``0 <= mismatched <= size``; ``max_abs_diff == 0`` iff
    ``mismatched == 0``; ``layer`` is None (and the counts are 0) when no reference
    tensor of the same shape and quantization carries a layer name of the TFLite
    tensor.
    """

    tflite_name: str
    op: str
    layer: str | None
    size: int
    mismatched: int
    max_abs_diff: int


def _components(name: str) -> set[str]:
    return {c.split(":")[0] for part in name.split(";") for c in part.split("/")}


def _same_layout(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes, or as many elements with the same channels last: the batch merged
    into the first axis (a Dense on a rank-3 tensor runs on ``(N * T, C)``, the
    interpreter's stacked per-sample outputs are ``(N, T, C)``), axes of 1 added (a 1-D
    pooling runs on ``(N, L, 1, C)``), spatial axes merged (an element-wise op the
    converter moved before a reshape)."""
    if a.shape == b.shape:
        return True
    return a.size == b.size and a.ndim >= 1 and b.ndim >= 1 and a.shape[-1] == b.shape[-1]


def _best_equal(ref: ReferenceRun, t: Any, names: list[str]
                ) -> tuple[tuple[str, int] | None, int]:
    """Among ``names`` (in order of preference), the tensor (or step) with ``t``'s layout,
    scale and zero point whose integers differ from ``t``'s on the fewest elements (the
    converter can move an element-wise op across a reshape, and two LOGISTICs share the
    fixed output scale: the name alone can point at the wrong one), and that count
    (``(None, -1)`` when none qualifies)."""
    best: tuple[int, tuple[str, int]] | None = None
    for n in names:
        if best is not None and best[0] == 0:
            break
        r = ref.tensors[n]
        for k, c in enumerate((r, *r.steps)):
            if (_same_layout(c.values, t.values) and np.float32(c.scale) == np.float32(
                    t.scale) and c.zero_point == t.zero_point):
                bad = int((c.values.reshape(t.values.shape) != t.values).sum())
                if best is None or bad < best[0]:
                    best = (bad, (n, k))
    return (None, -1) if best is None else (best[1], best[0])


def pair_tensors(ref: ReferenceRun, tensors: list[Any]
                 ) -> list[tuple[Any, tuple[str, int] | None]]:
    """Each interpreter tensor with its counterpart ``(layer, k)`` (``k = 0``: the layer's
    tensor, ``k >= 1``: its ``steps[k - 1]``, ``k = -1``: the layer's tensor requantized
    to this one's scale) or None, as :func:`match_tensors` describes."""
    order = list(ref.tensors)
    position = {n: i for i, n in enumerate(order)}
    hits: list[tuple[Any, tuple[str, int] | None]] = []
    taken: set[str] = set()  # layers matched to a tensor of their own (k = 0)
    last = -1                # the latest of them in execution order
    for i, t in enumerate(tensors):
        comps = _components(t.name)
        cands = [n for n in order if n in comps]
        if i == len(tensors) - 1 or not cands:
            cands = [*cands, ref.output_name]
        hit, bad = _best_equal(ref, t, list(reversed(cands)))
        if bad != 0 and t.op not in ("QUANTIZE", "RESHAPE"):
            # a name without layer names (a grouped conv runs in Keras's XLA function),
            # or naming another layer (an element-wise op moved across a reshape): the
            # layers after the last matched one are candidates too
            later = [n for n in order[last + 1:] if n not in taken and n not in cands]
            hit2, bad2 = _best_equal(ref, t, later)
            if hit2 is not None and (hit is None or bad2 < bad):
                hit = hit2
        if hit is None and t.op in ("QUANTIZE", "RESHAPE"):
            # a requantization the converter inserted (an input of a same-scale operator
            # that has other consumers), or a reshape of one: the named layer's tensor
            # moved to this scale
            named = [n for n in cands if n != ref.output_name] or order[:1]  # or the input
            hit = next(((n, -1) for n in reversed(named)
                        if _same_layout(ref.tensors[n].values, t.values)), None)
        if hit is not None and hit[1] == 0:
            taken.add(hit[0])
            last = max(last, position[hit[0]])
        hits.append((t, hit))
    return hits


def match_tensors(ref: ReferenceRun, tensors: list[Any],
                  params: QuantizedModelParams | None = None,
                  rounding: str = "reference") -> list[TensorMatch]:
    """Pair interpreter tensors (:class:`tfmot_ext.tflite.OpTensor`) with reference ones.

    A TFLite tensor's name carries the Keras layer names it was fused from; among
    those, the latest layer whose reference tensor has the same shape, scale and
    zero point is its counterpart (a name with no layer name in it: the next layer after
    the last matched one that has those). The model output is matched to the reference
    output. A converter QUANTIZE that no layer accounts for (an input of a same-scale
    operator that also feeds other layers), or a RESHAPE of one, is compared with the
    named layer's tensor requantized to its scale.

    With ``params``, each matched layer is recomputed from the interpreter's own
    input tensors where those are matched too, so a difference is attributed to the
    operator that makes it rather than inherited from an earlier one (with the
    requantization ``rounding`` of :data:`tfmot_ext.rules.ROUNDINGS`, as the layer
    deploys: :func:`tfmot_ext.reference.layer_output`).
    """
    hits = pair_tensors(ref, tensors)
    # the interpreter's tensors by layer, with the steps matched to the layer's (a folded
    # reshape reads the tensor before the converter's QUANTIZE: reference.layer_output)
    steps: dict[str, dict[int, IntTensor]] = {}
    for t, h in hits:
        if h is not None and h[1] >= 1:
            step = ref.tensors[h[0]].steps[h[1] - 1]
            steps.setdefault(h[0], {})[h[1]] = IntTensor(
                t.values.reshape(step.values.shape), t.scale, t.zero_point)
    theirs = {h[0]: IntTensor(t.values.reshape(ref.tensors[h[0]].values.shape), t.scale,
                              t.zero_point,
                              tuple(v for _, v in sorted(steps.get(h[0], {}).items())))
              for t, h in hits if h is not None and h[1] == 0}
    out = []
    for t, h in hits:
        if h is None:
            out.append(TensorMatch(t.name, t.op, None, 0, 0, 0))
            continue
        layer, k = h
        mine = ref.tensors[layer]
        if k == -1:
            mine = requantize(theirs.get(layer, mine) if params is not None else mine,
                              t.scale, t.zero_point, rounding)
        else:
            if params is not None:
                mine = _isolated(params, ref, theirs, layer, rounding)
            mine = (mine, *mine.steps)[k]
        d = np.abs(mine.values.reshape(t.values.shape).astype(np.int32)
                   - t.values.astype(np.int32))
        out.append(TensorMatch(t.name, t.op, layer, int(d.size), int((d > 0).sum()),
                               int(d.max()) if d.size else 0))
    return out


def recompute(params: QuantizedModelParams, name: str, theirs: Mapping[str, T],
              source: Callable[[str], T], compute: Callable[[str, dict[str, T]], T]) -> T:
    """Layer ``name`` (and the unmatched layers between it and the nearest matched ones
    upstream) recomputed from the interpreter's tensors ``theirs`` (layer name -> value):
    ``compute(layer, {input: value})`` for each layer on the way, ``source(layer)`` for
    the model's input layers. The integer reference's isolated comparison and
    :func:`tfmot_ext.parity.op_drift` (the QAT layers on dequantized tensors) use it."""
    memo: dict[str, T] = {}

    def value(n: str, top: bool) -> T:
        if not top and n in theirs:
            return theirs[n]
        if n not in memo:
            p = params[n]
            memo[n] = (source(n) if p.kind in ("InputLayer", "QuantizeLayer") or not p.inputs
                       else compute(n, {i: value(i, False) for i in p.inputs}))
        return memo[n]

    return value(name, True)


def _isolated(params: QuantizedModelParams, ref: ReferenceRun, theirs: dict[str, IntTensor],
              name: str, rounding: str) -> IntTensor:
    """Recompute layer ``name`` with the reference kernels from the interpreter's tensors
    (:func:`recompute`)."""
    return recompute(params, name, theirs, lambda n: ref.tensors[n],
                     lambda n, ins: layer_output(params, n, ins, rounding))


def compare_with_tflite(params: QuantizedModelParams, model_content: bytes,
                        x: npt.ArrayLike, kernels: str = "reference",
                        isolate: bool = False, rounding: str | None = None
                        ) -> list[TensorMatch]:
    """Run the reference and the TFLite interpreter on ``x`` and compare every tensor.

    ``x`` is float (quantized with the model's input quantization) or int8. With
    ``kernels="default"`` only the outputs are compared (the XNNPACK delegate keeps
    its intermediate tensors to itself). ``isolate`` recomputes each operator from
    the interpreter's own inputs (see :func:`match_tensors`); ``rounding`` as in
    :func:`tfmot_ext.reference.run_reference`, by default the one of the chosen kernels
    (:data:`tfmot_ext.rules.KERNEL_ROUNDING`).
    """
    from tfmot_ext.tflite import op_outputs

    rounding = KERNEL_ROUNDING.get(kernels, "reference") if rounding is None else rounding
    ref = run_reference(params, x, rounding)
    q_in = next(iter(t for n, t in ref.tensors.items() if params[n].kind == "QuantizeLayer"))
    theirs = op_outputs(model_content, q_in.values, kernels)
    return match_tensors(ref, theirs, params if isolate else None, rounding)
