"""Integer-only inference over extracted parameters, bit-exact with TFLite.

``run_reference(params, x)`` executes a model from
:class:`~tfmot_ext.params.QuantizedModelParams` alone with TFLite's int8 kernels
(:mod:`tfmot_ext.kernels`): int8 activations, int32 accumulators, fixed-point
requantization, no float anywhere on the data path (except TFLite's own float ``MEAN``
multiplier, replicated in float32 where TFLite uses it). It is what a hardware team
implements, and it matches the TFLite interpreter's kernels bit for bit, with the
rounding of its reference kernels (``rounding="reference"``) or of its optimized ones
(``"optimized"``), or TFLite Micro's kernels (``"micro"``); measured, see
docs/integer_inference.md.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tfmot_ext.errors import IntegerReferenceError
from tfmot_ext.extrakernels import MORE_NARY, MORE_UNARY
from tfmot_ext.kernels import (
    NARY,
    SUPPORTED_KINDS,
    UNARY,
    Call,
    IntTensor,
    quantize_input,
    requantize,
)
from tfmot_ext.params import LayerQuantParams, QuantizedModelParams, as_deployed
from tfmot_ext.rules import (
    MICRO_MISSING_OPS,
    ROUNDINGS,
    deploys_as_reshape,
    passes_input_scale,
    tflite_op,
)

__all__ = ["KERNELS", "ReferenceRun", "layer_output", "run_reference"]

_UNARY = {**UNARY, **MORE_UNARY}
_NARY = {**NARY, **MORE_NARY}
#: Layer kinds the reference executes (:mod:`tfmot_ext.kernels`, :mod:`tfmot_ext.extrakernels`).
KERNELS = frozenset({*SUPPORTED_KINDS, *_UNARY, *_NARY})


@dataclass(frozen=True)
class ReferenceRun:
    """Every tensor of one reference run, by layer name, in execution order.

    Invariant: ``tensors`` holds one :class:`IntTensor` per executed layer (the input
    layer's is the quantized input); ``output`` is the last layer's.
    """

    tensors: OrderedDict[str, IntTensor]
    output_name: str

    @property
    def output(self) -> IntTensor:
        return self.tensors[self.output_name]


def _converter_requantized(params: QuantizedModelParams, p: LayerQuantParams,
                           args: list[IntTensor], rounding: str) -> list[IntTensor]:
    """``p``'s input tensors; one that reaches a quantized layer through pass-through
    layers at another scale than the layer's input (DenseNet: a tensor a Concatenate
    also reads, which the converter gives the Concatenate's scale) is requantized
    there, as the converter's QUANTIZE does (before max pooling or padding, which
    commute with a monotonic requantization, or after an average pooling)."""
    if p.input is None or len(args) != 1:
        return args
    up, x = params[p.inputs[0]], args[0]
    if (passes_input_scale(up.kind) and up.output is None
            and (np.float32(x.scale), x.zero_point)
            != (np.float32(p.input.scale), p.input.zero_point)):
        return [requantize(x, p.input.scale, p.input.zero_point, rounding)]
    return args


def _is_reshape(p: LayerQuantParams) -> bool:
    """A layer that deploys as a RESHAPE (:func:`tfmot_ext.rules.deploys_as_reshape`)."""
    op = p.config.get("op", {})
    fn = op.get("config", {}).get("function") if isinstance(op, dict) else None
    return deploys_as_reshape(p.kind, fn)


def layer_output(params: QuantizedModelParams, name: str, inputs: Mapping[str, IntTensor],
                 rounding: str = "reference") -> IntTensor:
    """One layer's int8 output from its input tensors (layer name -> tensor).

    The layer runs as TFLite deploys it: a kernel trained below 8 bits (not 4) in its
    int8 form (:func:`tfmot_ext.params.as_deployed`), an input reaching it at another
    scale requantized as the converter does. :func:`run_reference` and the isolated
    comparison of :mod:`tfmot_ext.matching` both compute every layer with this.
    """
    p = params[name]
    call = Call(f"{params.source}: layer '{name}' ({p.kind})", rounding)
    if p.kind not in KERNELS:
        raise IntegerReferenceError(
            f"{call.where}: the integer reference has no kernel for {p.kind}; supported: "
            f"{', '.join(sorted(KERNELS))}")
    if rounding == "micro" and tflite_op(p.kind, p.config) in MICRO_MISSING_OPS:
        raise IntegerReferenceError(
            f"{call.where}: TFLite Micro has no {tflite_op(p.kind, p.config)} kernel; use "
            "another activation (e.g. swish) for a micro-controller")
    missing = [i for i in p.inputs if i not in inputs]
    if missing:
        raise IntegerReferenceError(f"{call.where}: its inputs {missing} were not computed "
                                    "(float layers before the model's QuantizeLayer?)")
    args = _converter_requantized(params, p, [inputs[i] for i in p.inputs], rounding)
    if (len(args) == 1 and args[0].steps and _is_reshape(p)
            and _is_reshape(params[p.inputs[0]])):
        args = [args[0].steps[-1]]  # TFLite folds the reshapes: the first one's input
    deployed = as_deployed(p)
    if p.kind in _NARY:
        return _NARY[p.kind](deployed, args, call)
    if len(args) != 1:
        raise IntegerReferenceError(f"{call.where}: expected one input, got {len(args)}")
    out = _UNARY[p.kind](deployed, args[0], call)
    if passes_input_scale(p.kind) and p.output is not None and (
            np.float32(out.scale), out.zero_point) != (np.float32(p.output.scale),
                                                       p.output.zero_point):
        # the QUANTIZE the converter puts after a pass-through operator whose output a
        # same-scale operator reads (extract's requantized_after)
        moved = requantize(out, p.output.scale, p.output.zero_point, rounding)
        out = IntTensor(moved.values, moved.scale, moved.zero_point,
                        (*out.steps, IntTensor(out.values, out.scale, out.zero_point)))
    return out


def run_reference(params: QuantizedModelParams, x: npt.ArrayLike, rounding: str = "reference"
                  ) -> ReferenceRun:
    """Run a model's integer parameters on a batch, integer arithmetic only.

    Args:
        params: from :func:`tfmot_ext.extract` (live model or H5 file); a kernel
            trained below 8 bits other than 4 runs in the int8 form that
            :func:`tfmot_ext.to_tflite` deploys (:func:`tfmot_ext.params.as_deployed`).
        x: the batch: int8 values already quantized with the model's input
            quantization (what an int8-I/O TFLite model takes), or float32 values,
            which are quantized first with :func:`quantize_input`.
        rounding: the requantization rounding of Conv/Depthwise/FullyConnected:
            ``"reference"`` (TFLite's reference kernels), ``"optimized"`` (its
            optimized kernels) or ``"micro"`` (TFLite Micro's); see
            :data:`tfmot_ext.rules.ROUNDINGS`.

    Returns:
        :class:`ReferenceRun`: every layer's int8 tensor.

    Raises:
        IntegerReferenceError: a layer kind or setting the reference does not execute (the
            message names the layer), or a model with more than one input.
    """
    if rounding not in ROUNDINGS:
        raise IntegerReferenceError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    xs = np.asarray(x)
    inputs = [n for n, p in params.items() if p.kind == "InputLayer"]
    if len(inputs) != 1:
        raise IntegerReferenceError(f"{params.source}: the reference runs single-input models "
                                    f"(found {len(inputs)} inputs)")
    tensors: OrderedDict[str, IntTensor] = OrderedDict()
    raw_input = inputs[0]
    last = raw_input
    for name, p in params.items():
        if name == raw_input:
            continue
        if p.kind == "QuantizeLayer":
            if p.output is None:
                raise IntegerReferenceError(f"{params.source}: layer '{name}' ({p.kind}): the "
                                            "input quantizer has no range")
            q = xs if xs.dtype == np.int8 else quantize_input(xs, p.output.scale,
                                                              p.output.zero_point)
            tensors[name] = IntTensor(q, p.output.scale, p.output.zero_point)
        else:
            tensors[name] = layer_output(params, name, tensors, rounding)
        last = name
    return ReferenceRun(tensors, last)
