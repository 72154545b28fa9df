"""TFLite's int8 kernels in NumPy: one pure function per operator, bit-exact.

Each kernel takes a layer's :class:`~tfmot_ext.params.LayerQuantParams`, its int8
input tensor(s) (:class:`IntTensor`) and a :class:`Call` (the layer's name for messages
and the requantization rounding of the kernel set reproduced), and returns the int8
output: int32 accumulators, fixed-point requantization (:mod:`tfmot_ext.fixedpoint`),
no float on the data path except where TFLite itself uses float (the ``MEAN`` kernel's
multiplier, the LOGISTIC/TANH tables, built once from the scales).
:func:`tfmot_ext.reference.run_reference` runs a model with them.

The arithmetic (Jacob et al. 2017, arXiv 1712.05877, section 2.2; TFLite's
``internal/common.h``):

* a layer with a kernel: ``acc = sum((q_x - z_x) * q_w) + q_b`` (int32), then
  ``q_y = clamp(MBQM(acc, M0, shift) + z_y, act_min, act_max)`` with
  ``MBQM(x, M0, s) = RDBPOT(SRDHM(x * 2**max(s, 0), M0), max(-s, 0))``;
* ``SRDHM(a, b)`` (saturating rounding doubling high multiply) is
  ``(a * b + (2**30 if a * b >= 0 else 1 - 2**30)) / 2**31`` truncated toward zero,
  i.e. ``floor((a * b + 2**30) / 2**31)``: round to nearest, ties up; it saturates
  ``INT32_MIN * INT32_MIN`` to ``INT32_MAX``;
* ``RDBPOT(x, e)`` (rounding divide by power of two) is ``(x >> e) + (r > t)`` with
  ``r = x & (2**e - 1)`` and ``t = (2**e - 1) >> 1`` plus one for negative ``x``:
  round half away from zero;
* the fused ReLU/ReLU6 clamp is ``[z_y + round(0 / s_y), z_y + round(6 / s_y)]``
  intersected with ``[-128, 127]``.

Add follows TFLite's ``ADD`` (both inputs shifted left by 20 bits and rescaled to
twice the larger input scale, then to the output), Concatenate requantizes inputs
whose scale differs from the output's (TFLite ``QUANTIZE``), pooling and ``MEAN``
follow their TFLite kernels. Sigmoid and tanh are TFLite's int8 LOGISTIC / TANH: a
256-entry table built once from the scales in float32 (:func:`activation_lut`), so the
data path is a lookup; swish is LOGISTIC then MUL.

The requantization of Conv/Depthwise/FullyConnected rounds differently in TFLite's
kernel sets (measured, see docs/integer_inference.md): the reference kernels use
the form above for Conv/Depthwise but a single rounding for FullyConnected; the
optimized kernels use the form above with a final shift whose ties go up.
``rounding="reference"`` / ``"optimized"`` reproduce each bit for bit, and
``"micro"`` TFLite Micro's kernels (the form above for all three; its other
differences are :mod:`tfmot_ext.microkernels`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tfmot_ext.errors import IntegerReferenceError
from tfmot_ext.fixedpoint import (
    mbqm,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from tfmot_ext.microkernels import logistic_int8, relu6_int8, sub_multipliers, tanh_int8
from tfmot_ext.params import LayerQuantParams
from tfmot_ext.qmath import round_half_away
from tfmot_ext.rules import (
    FIXED_ACTIVATION_RANGES,
    FOLDED_KINDS,
    REMOVED_AT_INFERENCE,
    TF_ADD_OPS,
    TF_MUL_OPS,
    fused_activation_range,
    relu_kind,
)
from tfmot_ext.softmax import softmax_optimized, softmax_reference

__all__ = [
    "DEPTHWISE_SIMD_CHANNELS",
    "NARY",
    "REQUANTIZE_SIMD_ELEMENTS",
    "SUPPORTED_KINDS",
    "UNARY",
    "Call",
    "IntTensor",
    "activation_lut",
    "add_sub",
    "constant_operand",
    "hw_pairs",
    "lookup_table",
    "pair",
    "quantize_input",
    "requantize",
    "softmax",
]


@dataclass(frozen=True)
class Call:
    """What a kernel needs besides its operands: the layer's name for messages and the
    requantization rounding of the kernel set being reproduced (:data:`ROUNDINGS`)."""

    where: str
    rounding: str = "reference"


@dataclass(frozen=True)
class IntTensor:
    """An integer activation tensor with its per-tensor quantization.

    Invariant: ``values`` is int8 (NHWC for images) and lies in ``[-128, 127]``;
    the real value is ``(values - zero_point) * scale``. ``steps`` holds tensors the
    TFLite graph materializes on the way (a pooling result before the QUANTIZE that
    moves it to the layer's scale), oldest first.
    """

    values: npt.NDArray[np.int8]
    scale: float
    zero_point: int
    steps: tuple[IntTensor, ...] = ()

    def dequantize(self) -> npt.NDArray[np.float32]:
        """``(values - zero_point) * scale`` in float32."""
        return ((self.values.astype(np.int32) - self.zero_point).astype(np.float32)
                * np.float32(self.scale)).astype(np.float32)


def quantize_input(x: npt.ArrayLike, scale: float, zero_point: int) -> npt.NDArray[np.int8]:
    """TFLite's float -> int8 ``QUANTIZE``: ``clamp(round_half_away(x / s) + z, -128, 127)``.

    The division is in float32, as the kernel does it.

    >>> quantize_input([0.0, 0.25, -1.0], 0.5, -1).tolist()
    [-1, 0, -3]
    """
    q = round_half_away((np.asarray(x, np.float32) / np.float32(scale)).astype(np.float32))
    return np.clip(q + zero_point, -128, 127).astype(np.int8)


def requantize(t: IntTensor, scale: float, zero_point: int, rounding: str = "reference"
               ) -> IntTensor:
    """TFLite's int8 -> int8 ``QUANTIZE`` (a change of scale).

    ``M = double(s_in) / double(s_out)`` as ``(M0, shift)``;
    ``q = clamp(MBQM(q_in - z_in, M0, shift) + z_out, -128, 127)``, MBQM rounded as
    ``rounding`` says (:data:`tfmot_ext.rules.ROUNDINGS`): the
    optimized QUANTIZE rounds the final shift's ties up
    (:func:`multiply_by_quantized_multiplier_up`), which matters for ``M < 1/2`` (a right
    shift: measured on NASNetMobile, a quarter of the elements one LSB apart with the
    reference kernels' rounding), in blocks of :data:`REQUANTIZE_SIMD_ELEMENTS` of each
    sample; the sample's last ``size % 16`` elements are rounded by the scalar MBQM
    (ties away from zero; measured on samples of 36, 40 and 48 elements).
    """
    if scale == t.scale and zero_point == t.zero_point:
        return t
    m0, shift = quantize_multiplier(np.float64(np.float32(t.scale)) /
                                    np.float64(np.float32(scale)))
    d = t.values.astype(np.int64) - t.zero_point
    acc = mbqm(rounding)(d, m0, shift)
    if rounding == "optimized" and d.ndim >= 2:
        # the optimized QUANTIZE runs 16 elements at a time (ties up); the elements of
        # each sample after the last full 16 go through the scalar MBQM (ties away)
        flat, rest = acc.reshape(len(d), -1), d.reshape(len(d), -1)
        tail = flat.shape[1] % REQUANTIZE_SIMD_ELEMENTS
        if tail:
            flat[:, -tail:] = multiply_by_quantized_multiplier(rest[:, -tail:], m0, shift)
        acc = flat.reshape(d.shape)
    return IntTensor(np.clip(acc + zero_point, -128, 127).astype(np.int8), scale, zero_point)


# --------------------------------------------------------------------------- ops


def _same_padding(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pad_hw(x: np.ndarray, kh: int, kw: int, strides: tuple[int, int],
            dilation: tuple[int, int], padding: str, value: int) -> np.ndarray:
    if padding == "valid":
        return x
    ph = _same_padding(x.shape[1], kh, strides[0], dilation[0])
    pw = _same_padding(x.shape[2], kw, strides[1], dilation[1])
    return np.pad(x, ((0, 0), ph, pw, (0, 0)), constant_values=value)


def _windows(x: np.ndarray, kh: int, kw: int, strides: tuple[int, int],
             dilation: tuple[int, int]) -> np.ndarray:
    """``(N, OH, OW, C, kh, kw)`` view of the (already padded) input's windows."""
    span_h, span_w = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
    win = np.lib.stride_tricks.sliding_window_view(x, (span_h, span_w), axis=(1, 2))
    return win[:, :: strides[0], :: strides[1], :, :: dilation[0], :: dilation[1]]


def pair(v: Any, default: int = 1) -> tuple[int, int]:
    """A Keras ``int`` or ``(h, w)`` argument (None: ``default``) as ``(h, w)``."""
    if v is None:
        return default, default
    if isinstance(v, int):
        return v, v
    a, b = v
    return int(a), int(b)


#: TFLite's optimized int8 -> int8 QUANTIZE rounds in SIMD blocks of this many elements.
REQUANTIZE_SIMD_ELEMENTS = 16

#: TFLite's optimized per-channel depthwise output stage requantizes channels in SIMD
#: groups of this many (ties up); the channels after the last full group go through
#: the scalar ``MultiplyByQuantizedMultiplier`` (ties away from zero).
DEPTHWISE_SIMD_CHANNELS = 8


def _finish(p: LayerQuantParams, acc: np.ndarray, call: Call, fc: bool = False,
            depthwise: bool = False) -> IntTensor:
    """Add the int32 bias, requantize per output channel, add z_y, clamp."""
    assert p.output is not None and p.multiplier_q31 is not None and p.shift is not None
    if p.bias_int is not None:
        acc = acc + p.bias_int.astype(np.int64)
    y = mbqm(call.rounding, fc)(acc, p.multiplier_q31, p.shift)
    tail = acc.shape[-1] % DEPTHWISE_SIMD_CHANNELS
    if depthwise and tail and call.rounding == "optimized":
        # measured: a 3-channel depthwise (MobileNetV3's input scaling x / 127.5 - 1,
        # every output a tie) rounds all ties away from zero in the optimized kernels
        m0, sh = (np.broadcast_to(v, acc.shape[-1:])[-tail:]
                  for v in (p.multiplier_q31, p.shift))
        y[..., -tail:] = multiply_by_quantized_multiplier(acc[..., -tail:], m0, sh)
    y = y + p.output.zero_point
    if p.activation == "softmax":  # kept in the layer in QAT; TFLite's SOFTMAX after it
        linear = IntTensor(np.clip(y, -128, 127).astype(np.int8), p.output.scale,
                           p.output.zero_point)
        return dataclasses.replace(softmax(linear, call), steps=(linear,))
    lo, hi = fused_activation_range(p.activation, p.output.scale, p.output.zero_point,
                                    call.where)
    return IntTensor(np.clip(y, lo, hi).astype(np.int8), p.output.scale, p.output.zero_point)


def softmax(x: IntTensor, call: Call) -> IntTensor:
    """TFLite's int8 SOFTMAX over the last axis at its fixed output grid (1/256, -128):
    :func:`tfmot_ext.softmax.softmax_reference` with the reference kernels and TFLite
    Micro's, :func:`tfmot_ext.softmax.softmax_optimized` with the optimized ones (which
    differ on near-ties)."""
    s, z = _LUT_OUTPUT["softmax"]
    try:
        fn = softmax_optimized if call.rounding == "optimized" else softmax_reference
        return IntTensor(fn(x.values, x.scale, x.zero_point), s, z)
    except IntegerReferenceError as e:
        raise IntegerReferenceError(f"{call.where}: {e}") from e


def _check_weighted(p: LayerQuantParams, x: IntTensor, where: str) -> None:
    if p.kernel_int is None or p.multiplier_q31 is None or p.output is None or p.input is None:
        raise IntegerReferenceError(f"{where}: needs an integer kernel and input/output "
                              "quantization; the layer is not (fully) quantized")
    if p.kernel_zero_point is not None and np.any(p.kernel_zero_point != 0):
        raise IntegerReferenceError(f"{where}: asymmetric kernels (zero point != 0) are not "
                              "supported; TFLite int8 kernels are symmetric")
    if (x.scale, x.zero_point) != (p.input.scale, p.input.zero_point):
        raise IntegerReferenceError(f"{where}: input quantization ({x.scale}, {x.zero_point})"
                              f" differs from the layer's ({p.input.scale}, "
                              f"{p.input.zero_point})")
    if p.bits is not None and p.bits > 8:
        raise IntegerReferenceError(f"{where}: {p.bits}-bit weights; the int8 reference takes "
                              "kernels of at most 8 bits")


def _conv(p: LayerQuantParams, x: IntTensor, call: Call, depthwise: bool) -> IntTensor:
    _check_weighted(p, x, call.where)
    assert p.kernel_int is not None
    c = p.config
    if c.get("data_format", "channels_last") not in ("channels_last", None):
        raise IntegerReferenceError(f"{call.where}: only channels_last is supported")
    k = p.kernel_int.astype(np.int64)
    kh, kw = k.shape[0], k.shape[1]
    strides, dil = pair(c.get("strides")), pair(c.get("dilation_rate"))
    xs = x.values.astype(np.int64) - x.zero_point
    xs = _pad_hw(xs, kh, kw, strides, dil, str(c.get("padding", "valid")).lower(), 0)
    win = _windows(xs, kh, kw, strides, dil)  # (N, OH, OW, C, kh, kw)
    if depthwise:
        # (kh, kw, C, M) -> out[..., c*M + m] = sum win[..., c, i, j] * k[i, j, c, m]
        acc = np.einsum("nhwcij,ijcm->nhwcm", win, k, optimize=True)
        return _finish(p, acc.reshape(*acc.shape[:3], -1), call, depthwise=True)
    # groups g: kernel (kh, kw, C/g, O); output channel o reads the input channels
    # of its group o // (O/g): out[..., g*O/g + o] = sum win[..., g*C/g + c] k[.., c, o]
    groups = int(c.get("groups", 1) or 1)
    n, oh, ow, cin = win.shape[:4]
    if cin != k.shape[2] * groups:
        raise IntegerReferenceError(f"{call.where}: {cin} input channels do not match a "
                                    f"kernel of {k.shape[2]} per group x {groups} groups")
    wg = win.reshape(n, oh, ow, groups, cin // groups, kh, kw)
    kg = k.reshape(kh, kw, k.shape[2], groups, k.shape[3] // groups)
    acc = np.einsum("nhwgcij,ijcgo->nhwgo", wg, kg, optimize=True)
    if groups > 1:  # TFLite runs a grouped CONV_2D with its reference kernel in both
        call = dataclasses.replace(call, rounding="reference")  # sets (measured)
    return _finish(p, acc.reshape(n, oh, ow, -1), call)


def _dense(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    _check_weighted(p, x, call.where)
    assert p.kernel_int is not None
    xs = x.values.astype(np.int64) - x.zero_point
    return _finish(p, xs @ p.kernel_int.astype(np.int64), call, fc=True)


def _relu(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    """A ReLU/ReLU6 (or Activation) layer: the clamp TFLite would fuse (scheme.relu_kind),
    or, where the layer has its own output scale, TFLite's requantizing int8 RELU."""
    act = relu_kind(p.kind, p.config)
    if act is None:
        if p.kind == "Activation" and p.config.get("activation", "linear") == "linear":
            return x
        raise IntegerReferenceError(
            f"{call.where}: only ReLU, ReLU6 and Activation('relu'|'relu6'|'linear') have an "
            f"integer form in the reference (config {dict(p.config)})"[:600])
    out = p.output
    if out is None or (np.float32(out.scale) == np.float32(x.scale)
                       and out.zero_point == x.zero_point):
        lo, hi = fused_activation_range(act, x.scale, x.zero_point, call.where)
        return IntTensor(np.clip(x.values, lo, hi).astype(np.int8), x.scale, x.zero_point)
    # not fused (its input has other consumers, e.g. Xception's Add -> ReLU -> separable):
    # TFLite's RELU requantizes, z_y + MBQM(q - z_x, M(s_x / s_y)), clamped to the range.
    # Both kernel sets run reference_ops::ReluX (optimized_ops.h imports it with `using`),
    # whose scalar MultiplyByQuantizedMultiplier rounds as the reference kernels do;
    # M is the float32 quotient (ReluPrepare: double m = input scale / output scale, two
    # floats; a double quotient misses ties, measured in tests/test_microkernels.py).
    # TFLite Micro's RELU6 does not requantize
    if call.rounding == "micro" and act == "relu6":
        return IntTensor(relu6_int8(x.values, x.scale, x.zero_point), out.scale,
                         out.zero_point)
    m0, shift = quantize_multiplier(np.float64(np.float32(x.scale) / np.float32(out.scale)))
    y = multiply_by_quantized_multiplier(x.values.astype(np.int64) - x.zero_point, m0,
                                         shift) + out.zero_point
    lo, hi = fused_activation_range(act, out.scale, out.zero_point, call.where)
    return IntTensor(np.clip(y, lo, hi).astype(np.int8), out.scale, out.zero_point)


#: float32 functions of TFLite's int8 lookup-table activations.
_LUT_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": lambda v: np.float32(1) / (np.float32(1) + np.exp(-v)),
    "tanh": np.tanh,
}
#: the int8 output quantization TFLite requires of LOGISTIC and TANH (1/256, -128 and
#: 1/128, 0): the grid of the fixed ranges QAT trains them on, ``s = (max - min) / 255``,
#: ``z = -128 - min / s``.
_LUT_OUTPUT = {fn: ((hi - lo) / 255.0, -128 - round(lo * 255.0 / (hi - lo)))
               for fn, (lo, hi) in FIXED_ACTIVATION_RANGES.items()}


def activation_lut(fn: str, in_scale: float, in_zero_point: int, out_scale: float,
                   out_zero_point: int) -> npt.NDArray[np.int8]:
    """TFLite's int8 LOGISTIC/TANH table (``LUTPopulate``), indexed by ``q + 128``.

    In float32: ``d = s_in * (q - z_in)``, ``y = f(d)``,
    ``t[q + 128] = clamp(round_half_away(y * (1 / s_out)) + z_out, -128, 127)``.

    >>> t = activation_lut("sigmoid", 0.1, 0, 1 / 256, -128)
    >>> int(t[0 + 128]), int(t[127 + 128])    # sigmoid(0) = 0.5 -> 0; sigmoid(12.7) -> 127
    (0, 127)
    """
    if fn not in _LUT_FUNCTIONS:
        raise IntegerReferenceError(f"no lookup table for activation '{fn}'; "
                                    f"supported: {sorted(_LUT_FUNCTIONS)}")
    return lookup_table(_LUT_FUNCTIONS[fn], in_scale, in_zero_point, out_scale,
                        out_zero_point)


def lookup_table(f: Callable[[np.ndarray], np.ndarray], in_scale: float, in_zero_point: int,
                 out_scale: float, out_zero_point: int) -> npt.NDArray[np.int8]:
    """TFLite's int8 table of a float32 function ``f`` (``LUTPopulate``), indexed by
    ``q + 128``: ``d = f32(s_in * (q - z_in))``,
    ``t[q + 128] = clamp(round_half_away(f(d) * (1 / s_out)) + z_out, -128, 127)``."""
    f32 = np.float32
    q = np.arange(-128, 128, dtype=np.int32)
    d = (f32(in_scale) * (q - in_zero_point).astype(f32)).astype(f32)
    y = np.asarray(f(d)).astype(f32)
    r = round_half_away((y * (f32(1) / f32(out_scale))).astype(f32))
    return np.clip(r.astype(np.int64) + out_zero_point, -128, 127).astype(np.int8)


def _lut(x: IntTensor, fn: str, rounding: str) -> IntTensor:
    """LOGISTIC / TANH: TFLite's table, or TFLite Micro's gemmlowp fixed point."""
    s, z = _LUT_OUTPUT[fn]
    if rounding == "micro":
        micro = logistic_int8 if fn == "sigmoid" else tanh_int8
        return IntTensor(micro(x.values, x.scale, x.zero_point), s, z)
    table = activation_lut(fn, x.scale, x.zero_point, s, z)
    return IntTensor(table[x.values.astype(np.int64) + 128], s, z)


def _activation(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    """An Activation layer: sigmoid / tanh (TFLite's table LOGISTIC / TANH, output at
    the fixed scale its QAT quantizer trains), swish (LOGISTIC, then MUL to the layer's
    output scale), else a ReLU (:func:`_relu`)."""
    act = p.config.get("activation")
    if act in _LUT_FUNCTIONS:
        y = _lut(x, str(act), call.rounding)
        if p.output is not None and (np.float32(p.output.scale), p.output.zero_point) != (
                np.float32(y.scale), y.zero_point):
            raise IntegerReferenceError(
                f"{call.where}: TFLite's int8 {act} outputs scale {y.scale}, zero point "
                f"{y.zero_point}; the layer was trained with ({p.output.scale}, "
                f"{p.output.zero_point})")
        return y
    if act == "softmax":
        return softmax(x, call)
    if act in ("swish", "silu"):  # LOGISTIC (a step TFLite materializes), then MUL
        sig = _lut(x, "sigmoid", call.rounding)
        y = _mul(dataclasses.replace(p, activation="linear"), [x, sig], call)
        return dataclasses.replace(y, steps=(sig,))
    return _relu(p, x, call)


def _max_pool(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    c = p.config
    kh, kw = pair(c.get("pool_size"), 2)
    strides = pair(c.get("strides") or (kh, kw))
    xs = _pad_hw(x.values.astype(np.int64), kh, kw, strides, (1, 1),
                 str(c.get("padding", "valid")).lower(), -(2**40))
    out = _windows(xs, kh, kw, strides, (1, 1)).max(axis=(-2, -1))
    return IntTensor(out.astype(np.int8), x.scale, x.zero_point)


def _avg_pool(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    """TFLite int8 ``AVERAGE_POOL_2D``: sum of the valid elements, divided by their count
    rounding half away from zero (integer ``(acc +- n/2) / n``)."""
    c = p.config
    kh, kw = pair(c.get("pool_size"), 2)
    strides = pair(c.get("strides") or (kh, kw))
    padding = str(c.get("padding", "valid")).lower()
    xs = _pad_hw(x.values.astype(np.int64), kh, kw, strides, (1, 1), padding, 0)
    ones = _pad_hw(np.ones((1, *x.values.shape[1:3], 1), np.int64), kh, kw, strides, (1, 1),
                   padding, 0)
    acc = _windows(xs, kh, kw, strides, (1, 1)).sum(axis=(-2, -1))
    n = _windows(ones, kh, kw, strides, (1, 1)).sum(axis=(-2, -1))
    out = _trunc_div(acc + np.where(acc > 0, n // 2, -(n // 2)), n)
    pooled = IntTensor(np.clip(out, -128, 127).astype(np.int8), x.scale, x.zero_point)
    final = _requantize_to_layer(p, pooled, call)
    return final if final is pooled else dataclasses.replace(final, steps=(pooled,))


def _trunc_div(a: np.ndarray, b: Any) -> np.ndarray:
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q)


def add_sub(p: LayerQuantParams, xs: list[IntTensor], call: Call, subtract: bool = False
            ) -> IntTensor:
    """TFLite int8 ``ADD`` (``SUB``): inputs to a common scale ``2 * max(s1, s2)`` with 20
    bits of headroom, summed (subtracted), then to the output scale."""
    if len(xs) != 2:
        raise IntegerReferenceError(f"{call.where}: {p.kind} of {len(xs)} inputs; TFLite "
                                    "ADD/SUB is binary")
    if p.output is None:
        raise IntegerReferenceError(f"{call.where}: output is not quantized")
    a, b = xs
    s1, s2, so = np.float32(a.scale), np.float32(b.scale), np.float32(p.output.scale)
    if subtract and call.rounding == "micro":  # TFLite Micro's SUB: float32 quotients
        (m1, sh1), (m2, sh2), (mo, sho) = sub_multipliers(float(s1), float(s2), float(so))
    else:
        twice_max = np.float64(np.float32(2) * max(s1, s2))
        m1, sh1 = quantize_multiplier(np.float64(s1) / twice_max)
        m2, sh2 = quantize_multiplier(np.float64(s2) / twice_max)
        mo, sho = quantize_multiplier(twice_max / np.float64(np.float32(1 << 20) * so))

    def scaled(t: IntTensor, m: Any, sh: Any) -> np.ndarray:
        v = (t.values.astype(np.int64) - t.zero_point) * (1 << 20)
        return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(v, m), -sh)

    raw = scaled(a, m1, sh1) + (-1 if subtract else 1) * scaled(b, m2, sh2)
    y = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(raw, mo), -sho)
    y = y + p.output.zero_point
    lo, hi = fused_activation_range(p.activation, p.output.scale, p.output.zero_point,
                                    call.where)
    return IntTensor(np.clip(y, lo, hi).astype(np.int8), p.output.scale, p.output.zero_point)


def _mul(p: LayerQuantParams, xs: list[IntTensor], call: Call) -> IntTensor:
    """TFLite int8 ``MUL`` (broadcasting): ``(q1 - z1) * (q2 - z2)`` requantized with
    :func:`multiply_by_quantized_multiplier` to ``M = s1 * s2 / s_out`` (double; the same
    rounding in the reference and the optimized kernels, measured), plus ``z_out``,
    clamped to the activation range."""
    if len(xs) != 2:
        raise IntegerReferenceError(f"{call.where}: Multiply of {len(xs)} inputs; TFLite MUL is "
                                    "binary")
    if p.output is None:
        raise IntegerReferenceError(f"{call.where}: output is not quantized")
    a, b = xs
    m0, shift = quantize_multiplier(np.float64(np.float32(a.scale)) * np.float64(
        np.float32(b.scale)) / np.float64(np.float32(p.output.scale)))
    prod = (a.values.astype(np.int64) - a.zero_point) * (b.values.astype(np.int64)
                                                          - b.zero_point)
    y = multiply_by_quantized_multiplier(prod, m0, shift) + p.output.zero_point
    lo, hi = fused_activation_range(p.activation, p.output.scale, p.output.zero_point,
                                    call.where)
    return IntTensor(np.clip(y, lo, hi).astype(np.int8), p.output.scale, p.output.zero_point)


#: TF functions of :class:`tfmot_ext.graph.TensorOp` layers with an integer kernel here:
#: two tensors, or a tensor and a scalar constant (:func:`constant_operand`).
_TENSOR_OP_KERNELS = {**dict.fromkeys(TF_ADD_OPS, "Add"), **dict.fromkeys(TF_MUL_OPS, "Multiply")}


def constant_operand(value: float) -> IntTensor:
    """A scalar constant operand of ADD/MUL as the converter quantizes it: int8 on the
    range ``[min(c, 0), max(c, 0)]``, so ``s = |c| / 255`` (float64, stored as float32)
    and ``c`` is the extreme level: ``q = 127, z = -128`` for ``c > 0``, ``q = -128,
    z = 127`` for ``c < 0`` (measured on MobileNetV3's ``x + 3.0`` and ``* (1/6)``).

    >>> t = constant_operand(3.0)
    >>> int(t.values), t.zero_point, float(np.float32(t.scale)) == float(np.float32(3 / 255))
    (127, -128, True)
    """
    c = float(value)
    if c == 0.0:
        return IntTensor(np.array(0, np.int8), 1.0, 0)
    scale = float(np.float32(abs(c) / 255.0))
    return (IntTensor(np.array(127, np.int8), scale, -128) if c > 0
            else IntTensor(np.array(-128, np.int8), scale, 127))


def _tensor_op(p: LayerQuantParams, xs: list[IntTensor], call: Call) -> IntTensor:
    op = p.config.get("op", {})
    fn = op.get("config", {}).get("function") if isinstance(op, dict) else None
    kind = _TENSOR_OP_KERNELS.get(str(fn))
    y = p.config.get("op_kwargs", {}).get("y")
    if (kind is not None and len(xs) == 1 and p.config.get("first_arg") == {"__input__": 0}
            and isinstance(y, (int, float)) and not isinstance(y, bool)):
        xs = [xs[0], constant_operand(y)]   # x + c, x * c: c quantized by the converter
    if kind is None or len(xs) != 2:
        raise IntegerReferenceError(
            f"{call.where}: the integer reference has no kernel for TensorOp '{fn}' with "
            f"{len(xs)} tensor input(s); supported: {sorted(_TENSOR_OP_KERNELS)} of two "
            "tensors")
    return NARY[kind](p, xs, call)


def _concat(p: LayerQuantParams, xs: list[IntTensor], call: Call) -> IntTensor:
    if p.output is None:
        raise IntegerReferenceError(f"{call.where}: output is not quantized")
    axis = int(p.config.get("axis", -1))
    parts = [requantize(t, p.output.scale, p.output.zero_point, call.rounding).values
             for t in xs]
    return IntTensor(np.concatenate(parts, axis=axis), p.output.scale, p.output.zero_point)


def hw_pairs(v: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """ZeroPadding2D's / Cropping2D's ``int`` or ``(h, w)`` or ``((top, bottom), (left,
    right))`` as the last form."""
    if isinstance(v, int):
        return (v, v), (v, v)
    h, w = v
    return pair(h), pair(w)


def _zero_pad(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    ph, pw = hw_pairs(p.config.get("padding", 1))
    out = np.pad(x.values, ((0, 0), ph, pw, (0, 0)), constant_values=x.zero_point)
    return IntTensor(out, x.scale, x.zero_point)


def _crop(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    """Cropping2D (channels last): the integers pass unchanged, rows/columns dropped."""
    (top, bottom), (left, right) = hw_pairs(p.config.get("cropping", 0))
    h, w = x.values.shape[1:3]
    return IntTensor(x.values[:, top:h - bottom, left:w - right], x.scale, x.zero_point)


def _reshape(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    if p.kind == "Flatten":
        return IntTensor(x.values.reshape(len(x.values), -1), x.scale, x.zero_point)
    target = p.config.get("target_shape")
    if not isinstance(target, (list, tuple)):
        raise IntegerReferenceError(f"{call.where}: Reshape without a target_shape")
    return IntTensor(x.values.reshape(len(x.values), *target), x.scale, x.zero_point)


def _requantize_to_layer(p: LayerQuantParams, t: IntTensor, call: Call) -> IntTensor:
    if p.output is None:
        return t
    return requantize(t, p.output.scale, p.output.zero_point, call.rounding)


def _identity(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    return x


#: kernel of a one-input layer kind
Unary = Callable[[LayerQuantParams, IntTensor, Call], IntTensor]
_OPS: dict[str, Unary] = {
    "Conv2D": lambda p, x, c: _conv(p, x, c, depthwise=False),
    "DepthwiseConv2D": lambda p, x, c: _conv(p, x, c, depthwise=True),
    "Dense": _dense,
    "ReLU": _relu,
    "Activation": _activation,
    "Softmax": lambda p, x, c: softmax(x, c),
    "MaxPooling2D": _max_pool,
    "AveragePooling2D": _avg_pool,
    "ZeroPadding2D": _zero_pad,
    "Cropping2D": _crop,
    "Flatten": _reshape,
    "Reshape": _reshape,
    "Identity": _requantize_to_layer,
}
#: kernel of each one-input layer kind: the ops above, each folded kind as the op it
#: deploys as, the layers the converter removes as the identity (tfmot_ext.rules)
UNARY: dict[str, Unary] = {
    **_OPS, **{k: _OPS[op] for k, op in FOLDED_KINDS.items()},
    **dict.fromkeys(REMOVED_AT_INFERENCE, _identity)}
NARY = {"Add": add_sub, "Concatenate": _concat, "Multiply": _mul, "TensorOp": _tensor_op}

#: Layer kinds the reference executes.
SUPPORTED_KINDS = frozenset({*UNARY, *NARY, "InputLayer", "QuantizeLayer"})
