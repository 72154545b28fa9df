"""Parity of a converted model with its QAT model, its extraction and the integer reference.

``verify(model, tflite_bytes, data)`` answers the three questions a deployment
review asks, in one :class:`ParityReport`:

* outputs: how far the int8 TFLite outputs are from the QAT model's, in output
  LSBs (``|y_qat - (q - z) * s| / s``), and how often the predicted class agrees;
* weights: whether each weighted TFLite operator stores exactly the integers and
  scales :func:`tfmot_ext.extract` recovers from the QAT model;
* reference: whether :func:`tfmot_ext.reference.run_reference` reproduces every operator
  output of the interpreter bit for bit.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfmot_ext import micro
from tfmot_ext._compat import check_keras2, keras
from tfmot_ext.errors import IntegerReferenceError, ParityError
from tfmot_ext.extract import extract
from tfmot_ext.matching import TensorMatch, compare_with_tflite, pair_tensors, recompute
from tfmot_ext.params import QuantizedModelParams, as_deployed
from tfmot_ext.reference import run_reference
from tfmot_ext.rules import EXACT_WEIGHT_BITS, KERNEL_ROUNDING
from tfmot_ext.tflite import (
    WeightTensor,
    _resolver,
    _validated,
    interpreter,
    keras_layout,
    op_outputs,
    weight_tensors,
)

__all__ = ["LayerDrift", "OpDrift", "OutputParity", "ParityReport", "WeightParity",
           "layer_drift", "layer_outputs", "op_drift", "verify", "weight_parity"]

logger = logging.getLogger(__name__)

#: Slack on "within 1 LSB": both sides are float32 values of up to 255 LSBs, whose
#: rounding error is at most ``255 * 2**-24`` (1.5e-5) LSB each.
LSB_SLACK = 1e-4


@dataclass(frozen=True)
class OutputParity:
    """QAT model output vs TFLite int8 output, over the verification data.

    Invariants: ``0 <= mean_lsb <= max_lsb``; ``within_1lsb`` and ``agreement`` are
    fractions in ``[0, 1]`` (``agreement`` is None for a scalar output).
    """

    name: str
    elements: int
    max_lsb: float
    mean_lsb: float
    within_1lsb: float
    agreement: float | None


@dataclass(frozen=True)
class WeightParity:
    """One weighted TFLite operator vs the extracted layer it was converted from.

    ``kernel``: the stored integers equal those of
    :func:`tfmot_ext.params.as_deployed` of the layer: ``kernel_int`` at 8 and at
    4 bits (the converter keeps a 4-bit kernel's integers and scales), ``kernel_int *
    2**(8 - bits)`` at the other widths below 8 (the grid :func:`tfmot_ext.to_tflite`
    embeds in int8). A kernel the conversion did not embed (a quantizer that is not
    tfmot_ext's, or wider than 8 bits) TFLite re-grids on an int8 scale of its own: it
    counts when the dequantized values agree within half a TFLite LSB (``scales`` then
    says the same; its int32 bias is on that scale and ``bias``/``bias_scales`` are
    False). ``scales``, ``bias``, ``bias_scales``: exact equality of the float32 scales
    and the int32 bias with the embedded form's (a bias the converter dropped counts as
    equal when the extracted one is all zero). ``layer`` is None when no
    extracted layer matches the operator (then every flag is False).
    ``calibrated``: the operator's weights belong to no quantized layer of the QAT
    model (a layer left float, e.g. inside MultiHeadAttention) and the converter
    quantized them itself; such an operator is listed, not judged (``exact`` is True).
    ``note``: for such an operator whose layer extraction reported float with a reason
    (its deployed integers are not in the QAT model), that reason.
    """

    op: str
    layer: str | None
    bits: int | None
    kernel: bool
    scales: bool
    bias: bool
    bias_scales: bool
    calibrated: bool = False
    note: str = ""

    @property
    def exact(self) -> bool:
        return self.calibrated or (self.kernel and self.scales and self.bias
                                   and self.bias_scales)


@dataclass(frozen=True)
class ParityReport:
    """Outputs, weights and reference parity of one converted model, and its verdict.

    ``reference`` is None when the reference was not run (``reference=False``) and
    ``reference_error`` says why it could not run (an unsupported layer), else "".
    ``arena_bytes``: with ``kernels="micro"``, the least tensor arena TFLite Micro runs
    the model in (:func:`tfmot_ext.micro.arena_bytes`), else None.
    The thresholds say what :attr:`passed` requires: every output with at least
    ``min_within_1lsb`` of its elements within 1 LSB of the QAT model, and, as set,
    exact weights and a bit-exact reference. ``print(report)`` ends with the verdict
    and the thresholds:

    >>> import dataclasses
    >>> r = ParityReport((OutputParity("y", 10, 1.0, 0.1, 1.0, None),), (), None, "builtin")
    >>> r.passed, str(r).splitlines()[-1]
    (True, 'PARITY OK (threshold: >= 99.9 % of output elements within 1 LSB, weights equal)')
    >>> dataclasses.replace(r, min_within_1lsb=1.01).passed
    False
    """

    outputs: tuple[OutputParity, ...]
    weights: tuple[WeightParity, ...]
    reference: tuple[TensorMatch, ...] | None
    kernels: str
    reference_error: str = ""
    min_within_1lsb: float = 0.999
    require_weights: bool = True
    require_reference: bool = False
    arena_bytes: int | None = None

    @property
    def weights_exact(self) -> bool:
        return all(w.exact for w in self.weights)

    @property
    def reference_exact_fraction(self) -> float | None:
        """Fraction of interpreter tensor elements the reference reproduces exactly."""
        if not self.reference:
            return None
        size = sum(m.size for m in self.reference)
        bad = sum(m.mismatched for m in self.reference)
        return 1.0 - bad / size if size else None

    @property
    def passed(self) -> bool:
        """Whether every output has at least ``min_within_1lsb`` of its elements within
        1 LSB (and, as required, exact weights and a bit-exact reference)."""
        ok = all(o.within_1lsb >= self.min_within_1lsb for o in self.outputs)
        if self.require_weights:
            ok = ok and self.weights_exact
        if self.require_reference:
            ok = ok and self.reference is not None and self.reference_exact_fraction == 1.0 \
                and all(m.layer is not None for m in self.reference)
        return ok

    @property
    def verdict(self) -> str:
        """``PARITY OK`` or ``PARITY FAILED``, with the thresholds."""
        return ("PARITY " + ("OK" if self.passed else "FAILED")
                + f" (threshold: >= {self.min_within_1lsb * 100:g} % of output elements "
                "within 1 LSB" + (", weights equal" if self.require_weights else "")
                + (", reference bit-exact" if self.require_reference else "") + ")")

    def check(self, **thresholds: Any) -> None:
        """Raise :class:`tfmot_ext.errors.ParityError` (with the table) unless :attr:`passed`;
        ``thresholds`` (``min_within_1lsb``, ``require_weights``, ``require_reference``)
        judge it on other thresholds than the report's."""
        report = dataclasses.replace(self, **thresholds) if thresholds else self
        if not report.passed:
            raise ParityError(f"parity check failed:\n{report}")

    def __str__(self) -> str:
        lines = ["Outputs (QAT model vs TFLite int8):",
                 f"  {'output':<24} {'elements':>9} {'max LSB':>8} {'mean LSB':>9} "
                 f"{'<=1 LSB':>8} {'argmax agree':>12}"]
        for o in self.outputs:
            agree = "-" if o.agreement is None else f"{o.agreement * 100:.2f} %"
            lines.append(f"  {o.name[:24]:<24} {o.elements:>9} {o.max_lsb:>8.2f} "
                         f"{o.mean_lsb:>9.4f} {o.within_1lsb * 100:>7.2f}% {agree:>12}")
        lines.append("Weights (extracted vs stored in the .tflite):")
        lines.append(f"  {'layer':<28} {'op':<18} {'bits':>4}  kernel scales bias b.scales")
        for w in self.weights:
            def f(b: bool) -> str:
                return "ok" if b else "DIFF"
            if w.calibrated and w.note:
                lines.append(f"  {str(w.layer)[:28]:<28} {w.op:<18} {'-':>4}  not extracted: "
                             f"{w.note}"[:300])
                continue
            if w.calibrated:
                lines.append(f"  {'(float in QAT)':<28} {w.op:<18} {'-':>4}  quantized by "
                             "the converter from the representative data")
                continue
            lines.append(f"  {str(w.layer)[:28]:<28} {w.op:<18} {w.bits or '-':>4}  "
                         f"{f(w.kernel):>6} {f(w.scales):>6} {f(w.bias):>4} "
                         f"{f(w.bias_scales):>8}")
        if self.reference is not None:
            frac = self.reference_exact_fraction
            unmatched = sum(m.layer is None for m in self.reference)
            lines.append(f"Integer reference vs TFLite ({self.kernels} kernels): "
                         f"{len(self.reference)} tensors, "
                         f"{'-' if frac is None else f'{frac * 100:.4f} %'} elements "
                         f"bit-exact, {unmatched} unmatched")
            for m in self.reference:
                if m.mismatched or m.layer is None:
                    lines.append(f"  {m.op:<18} {m.layer!s:<28} {m.mismatched}/{m.size} "
                                 f"differ, max {m.max_abs_diff} LSB")
        elif self.reference_error:
            lines.append(f"Integer reference: not run ({self.reference_error})")
        if self.arena_bytes is not None:
            lines.append(f"TFLite Micro tensor arena: {self.arena_bytes} bytes "
                         f"({self.arena_bytes / 1024:.1f} KiB)")
        lines.append(self.verdict)
        return "\n".join(lines)


@dataclass(frozen=True)
class LayerDrift:
    """How far the QAT model's (float, fake-quantized) output of one layer is from the
    integer reference's, in LSBs of that tensor: ``|y_qat - (q - z) * s| / s``.

    Invariant: ``0 <= mean_lsb <= max_lsb``; ``over_1lsb`` is a fraction in [0, 1].
    """

    layer: str
    kind: str
    max_lsb: float
    mean_lsb: float
    over_1lsb: float


def layer_outputs(model: Any, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """The outputs of the named layers of ``model`` on ``x``, in one pass, by name."""
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outs = probe.predict(x, batch_size=256, verbose=0)
    return dict(zip(names, outs if isinstance(outs, list) else [outs]))


def layer_drift(model: Any, x: Any, params: QuantizedModelParams | None = None
                ) -> list[LayerDrift]:
    """Per layer, the QAT model's output vs the integer reference's on inputs ``x``.

    FakeQuant simulates the requantization of Conv/Dense outputs exactly but not the
    integer rounding inside pooling, MEAN or ADD, so those drift by up to one LSB;
    a layer far above that is not deployed the way it was trained.
    """
    check_keras2(model, "model")
    data = _validated(x, model)
    params = extract(model) if params is None else params
    ref = run_reference(params, data)
    names = [n for n in ref.tensors if params[n].kind != "QuantizeLayer"]
    result = []
    for n, y in layer_outputs(model, names, data).items():
        t = ref.tensors[n]
        lsb = np.abs(np.asarray(y, np.float64) - t.dequantize().astype(np.float64)) / t.scale
        result.append(LayerDrift(n, params[n].kind, float(lsb.max()), float(lsb.mean()),
                                 float((lsb > 1.0 + LSB_SLACK).mean())))
    return result


@dataclass(frozen=True)
class OpDrift:
    """The QAT model vs TFLite at one interpreter tensor, the QAT layer (and the layers
    between it and the nearest matched tensors upstream) computed from the
    interpreter's own inputs, dequantized: ``|y_qat - (q - z) * s| / s``.

    This is what each deployed operator adds: the end-to-end difference also carries
    every upstream one, multiplied by the gains after it (one LSB into a convolution
    with a gain above one is more than one LSB out of it).

    ``on_grid`` says whether the QAT layer's output lies on the tensor's grid (within
    1e-3 LSB): False where QAT has no range of its own for the tensor (a conv feeding
    only a MAXIMUM computes in float; the converter puts it on the MAXIMUM's scale,
    whose clamp commutes with the max), so its drift is not a deployment difference.

    Invariant: ``0 <= max_lsb``; ``within_1lsb`` is a fraction in [0, 1].
    """

    tensor: str
    op: str
    layer: str
    elements: int
    max_lsb: float
    within_1lsb: float
    on_grid: bool = True


def op_drift(model: Any, tflite_bytes: bytes, data: Any, *, kernels: str = "builtin",
             params: QuantizedModelParams | None = None) -> list[OpDrift]:
    """Per interpreter tensor that a layer of ``model`` accounts for, the QAT layer's
    output from the interpreter's inputs vs the interpreter's output (:class:`OpDrift`)."""
    check_keras2(model, "model")
    x = _validated(data, model)
    params = extract(model) if params is None else params
    ref = run_reference(params, x, KERNEL_ROUNDING.get(kernels, "reference"))
    q_in = next(t for n, t in ref.tensors.items() if params[n].kind == "QuantizeLayer")
    hits = pair_tensors(ref, op_outputs(tflite_bytes, q_in.values, kernels))
    theirs = {h[0]: t for t, h in hits if h is not None and h[1] == 0}

    def deq(n: str) -> np.ndarray:
        t = theirs[n]
        v = (t.values.astype(np.float64) - t.zero_point) * np.float32(t.scale)
        return v.reshape(ref.tensors[n].values.shape).astype(np.float32)

    def qat_layer(n: str, ins: dict[str, np.ndarray]) -> np.ndarray:
        xs = [ins[i] for i in params[n].inputs]
        return np.asarray(model.get_layer(n)(xs if len(xs) > 1 else xs[0], training=False))

    dequantized = {m: deq(m) for m in theirs}
    out = []
    for n, t in theirs.items():
        if params[n].kind in ("InputLayer", "QuantizeLayer") or not params[n].inputs:
            continue
        y = recompute(params, n, dequantized, lambda m: ref.tensors[m].dequantize(),
                      qat_layer)
        y = y.astype(np.float64).reshape(t.values.shape)
        on_grid = np.abs(y / t.scale - np.round(y / t.scale)) <= 1e-3
        lsb = np.abs(y - (t.values.astype(np.float64) - t.zero_point) * t.scale) / t.scale
        out.append(OpDrift(t.name, t.op, n, int(lsb.size), float(lsb.max(initial=0.0)),
                           float((lsb <= 1.0 + LSB_SLACK).mean()) if lsb.size else 1.0,
                           bool(on_grid.all())))
    return out


def weight_parity(params: QuantizedModelParams, weights: list[WeightTensor]) -> list[WeightParity]:
    """Compare each weighted TFLite operator with the extracted layer it comes from."""
    out = []
    for w in weights:
        names = [n for n, p in params.items()
                 if p.kernel_int is not None and f"/{n}/" in w.filter_name]
        if len(names) != 1:
            # no quantized layer's name in the tensor's: a layer left float in QAT, or one
            # extraction reported float with its reason
            noted = [p for n, p in params.items() if p.note and f"/{n}/" in w.filter_name]
            out.append(WeightParity(w.op, noted[0].name if noted else None, None, False,
                                    False, False, False, calibrated=not names,
                                    note=noted[0].note if noted else ""))
            continue
        p = params[names[0]]
        assert p.kernel_int is not None and p.kernel_scale is not None
        try:
            k = keras_layout(w.op, w.filter, p.kernel_int.shape)
        except ValueError:
            out.append(WeightParity(w.op, p.name, p.bits, False, False, False, False))
            continue
        # stored as trained at 8 and 4 bits; other widths below 8 embedded in int8 by
        # to_tflite (the trained integers times 2**(8 - bits))
        d = as_deployed(p)
        assert d.kernel_int is not None and d.kernel_scale is not None
        kernel_ok = bool(np.array_equal(k, d.kernel_int))
        scales_ok = bool(np.array_equal(w.filter_scales, np.atleast_1d(d.kernel_scale)))
        if not kernel_ok and p.bits not in EXACT_WEIGHT_BITS:
            # re-gridded by the converter (a quantizer not embedded, or above 8 bits):
            # TFLite's own int8 grid, judged on dequantized values
            s = _channel_broadcast(w.filter_scales, p.kernel_int.shape, p.axis)
            deq = k.astype(np.float64) * s
            kernel_ok = bool(np.all(np.abs(deq - p.dequantized_kernel()) <= s / 2))
            scales_ok = kernel_ok
            d = p
        if w.bias is None:  # the converter drops an all-zero bias
            bias_ok = bscale_ok = d.bias_int is None or not np.any(d.bias_int)
        else:  # ... and adds an all-zero one to a bias-less layer
            bias_ok = (not np.any(w.bias) if d.bias_int is None
                       else np.array_equal(w.bias, d.bias_int))
            bscale_ok = (w.bias_scales is not None and d.bias_scale is not None
                         and np.array_equal(w.bias_scales, np.atleast_1d(d.bias_scale)))
        out.append(WeightParity(w.op, p.name, p.bits, kernel_ok, scales_ok, bool(bias_ok),
                                bool(bscale_ok)))
    return out


def _channel_broadcast(scales: np.ndarray, shape: tuple[int, ...],
                       axis: tuple[int, ...] | None) -> np.ndarray:
    s = np.asarray(scales, np.float64)
    if s.size == 1 or axis is None:
        return s.reshape(()) if s.size == 1 else s
    if len(axis) == 2:  # depthwise (H, W, C, M): channel c * M + m
        return s.reshape(1, 1, *shape[2:])
    b = [1] * len(shape)
    b[axis[0]] = s.size
    return s.reshape(b)


def _check_belongs(model: Any, params: QuantizedModelParams, tflite_bytes: bytes,
                   weights: list[WeightTensor]) -> None:
    """Raise :class:`ParityError` when the ``.tflite`` was not converted from ``model``:
    another input shape, or weighted operators none of which comes from a quantized
    layer of the model (the converter names each operator's weights after its layer)."""
    fix = ("convert this model with tfmot_ext.to_tflite(model, data) (or tfmot-ext "
           "convert) and verify that file")
    # no XNNPACK: its delegate fails to prepare some int8 graphs (a MAXIMUM of 1-channel
    # tensors, measured) the builtin kernels run
    inp = interpreter(tflite_bytes, **_resolver("builtin")).get_input_details()[0]
    theirs = tuple(int(d) for d in inp.get("shape_signature", inp["shape"])[1:])
    ours = () if isinstance(model.input_shape, list) else tuple(model.input_shape[1:])
    if ours and (len(theirs) != len(ours) or any(  # None / -1: any size
            a != b for a, b in zip(theirs, ours) if a not in (None, -1) and b not in (None, -1))):
        raise ParityError(f"the .tflite does not belong to model '{model.name}': its input "
                          f"has shape {theirs}, the model's {ours}; {fix}")
    layers = [n for n, p in params.items() if p.kernel_int is not None]
    if layers and weights and not any(f"/{n}/" in w.filter_name for w in weights
                                      for n in layers):
        raise ParityError(
            f"the .tflite does not belong to model '{model.name}': none of its "
            f"{len(weights)} weighted operators comes from the model's quantized layers "
            f"({', '.join(layers[:5])}{', ...' if len(layers) > 5 else ''}); {fix}")


def verify(model: Any, tflite_bytes: bytes, data: Any, *, kernels: str = "builtin",
           reference: bool = True, params: QuantizedModelParams | None = None,
           min_within_1lsb: float = 0.999, require_weights: bool = True,
           require_reference: bool = False, measure_arena: bool = True) -> ParityReport:
    """Compare a QAT model with its int8 TFLite conversion (see the module docstring).

    Args:
        model: the tf_keras QAT model the ``.tflite`` was converted from.
        tflite_bytes: an int8-I/O model from :func:`tfmot_ext.to_tflite`.
        data: float inputs ``(N, *input_shape)``.
        kernels: interpreter kernels for the comparison: ``"builtin"`` (TFLite's
            optimized kernels, what a CPU deployment without a delegate runs; the
            default), ``"reference"`` (its reference kernels, which lack some op
            versions, e.g. the DEPTHWISE_CONV_2D v7 emitted for sub-8-bit weights) or
            ``"default"`` (XNNPACK; outputs only) or ``"micro"`` (TFLite Micro's
            interpreter, the optional ``micro`` extra; the report then also holds the
            arena bytes the model needs). See :func:`tfmot_ext.tflite.op_outputs`.
        reference: also run the integer reference and compare every tensor.
        params: the model's extraction, if already at hand.
        min_within_1lsb: the verdict's threshold: the fraction of every output's
            elements that must be within 1 LSB (:attr:`ParityReport.passed`).
        require_weights: the verdict also requires exact weights.
        require_reference: the verdict also requires a bit-exact integer reference.
        measure_arena: with ``kernels="micro"``, also measure the least tensor arena
            (:func:`tfmot_ext.micro.arena_bytes`, a bisection of about 20 child
            processes).

    Returns:
        :class:`ParityReport` (``print`` it for the table and the verdict).

    Raises:
        ParityError: the ``.tflite`` was not converted from ``model`` (another input
            shape, or none of its weighted operators comes from the model's layers).
    """
    check_keras2(model, "model")
    x = _validated(data, model)
    params = extract(model) if params is None else params
    tflite_weights = weight_tensors(tflite_bytes)
    _check_belongs(model, params, tflite_bytes, tflite_weights)
    tfl = op_outputs(tflite_bytes, x, kernels, intermediates=False)
    y = np.asarray(model.predict(x, batch_size=256, verbose=0), np.float64)
    outputs = []
    for t in tfl:
        deq = (t.values.astype(np.float64) - t.zero_point) * t.scale
        lsb = np.abs(y.reshape(deq.shape) - deq) / t.scale
        agree = None
        if deq.ndim == 2 and deq.shape[1] > 1:
            agree = float((deq.argmax(-1) == y.reshape(deq.shape).argmax(-1)).mean())
        outputs.append(OutputParity(t.name, int(lsb.size), float(lsb.max()), float(lsb.mean()),
                                    float((lsb <= 1.0 + LSB_SLACK).mean()), agree))
    weights = weight_parity(params, tflite_weights)
    matches: tuple[TensorMatch, ...] | None = None
    error = ""
    if reference:
        try:
            matches = tuple(compare_with_tflite(params, tflite_bytes, x, kernels))
        except IntegerReferenceError as e:
            error = str(e)
            logger.warning("integer reference not run: %s", e)
    arena_size = (micro.arena_bytes(tflite_bytes) if kernels == "micro" and measure_arena
                  else None)
    return ParityReport(tuple(outputs), tuple(weights), matches, kernels, error,
                        min_within_1lsb, require_weights, require_reference, arena_size)
