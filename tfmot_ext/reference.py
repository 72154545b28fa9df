"""Integer-only inference over extracted parameters, bit-exact with TFLite.

``run(params, x)`` executes a model from :class:`~tfmot_ext.extract.QuantizedModelParams`
alone: int8 activations, int32 accumulators, fixed-point requantization, no float
anywhere on the data path (except TFLite's own float ``MEAN`` kernel, replicated
in float32 where TFLite uses it). It is what a hardware team implements, and it
matches the TFLite interpreter's reference kernels bit for bit.

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
``rounding="reference"`` / ``"optimized"`` reproduce each bit for bit.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tfmot_ext.configs import FIXED_ACTIVATION_RANGES
from tfmot_ext.errors import IntegerReferenceError
from tfmot_ext.extract import (
    PASS_THROUGH,
    LayerQuantParams,
    QuantizedModelParams,
    TensorQuant,
    int8_embedded,
    quantize_multiplier,
)
from tfmot_ext.qmath import round_half_away
from tfmot_ext.scheme import relu_kind

__all__ = [
    "DEPTHWISE_SIMD_CHANNELS",
    "KERNEL_ROUNDING",
    "ROUNDINGS",
    "SUPPORTED_KINDS",
    "IntTensor",
    "ReferenceRun",
    "TensorMatch",
    "activation_lut",
    "activation_range",
    "compare_with_tflite",
    "constant_operand",
    "match_tensors",
    "multiply_by_quantized_multiplier",
    "multiply_by_quantized_multiplier_single",
    "multiply_by_quantized_multiplier_up",
    "quantize_input",
    "requantize",
    "rounding_divide_by_pot",
    "run",
    "saturating_rounding_doubling_high_mul",
]

logger = logging.getLogger(__name__)

_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
I64 = npt.NDArray[np.int64]


# --------------------------------------------------------------------------- fixed point


def saturating_rounding_doubling_high_mul(a: npt.ArrayLike, b: npt.ArrayLike) -> I64:
    """gemmlowp's ``SaturatingRoundingDoublingHighMul`` on int32 values (as int64).

    ``(a * b + nudge) / 2**31`` truncated toward zero, ``nudge = 2**30`` for
    ``a * b >= 0`` else ``1 - 2**30``: equal to ``floor((a * b + 2**30) / 2**31)``,
    round to nearest with ties up. ``a == b == INT32_MIN`` saturates to ``INT32_MAX``.

    >>> int(saturating_rounding_doubling_high_mul(2**30, 2**30))
    536870912
    >>> int(saturating_rounding_doubling_high_mul(-3, 2**30))  # -1.5: ties go up
    -1
    """
    a64, b64 = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a64 * b64
    nudged = ab + np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    # C++ integer division truncates toward zero
    high = np.where(nudged >= 0, nudged >> 31, -((-nudged) >> 31))
    return np.where((a64 == _I32_MIN) & (b64 == _I32_MIN), np.int64(_I32_MAX), high)


def rounding_divide_by_pot(x: npt.ArrayLike, exponent: npt.ArrayLike) -> I64:
    """gemmlowp's ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded half away from zero.

    >>> rounding_divide_by_pot([5, -5, 6, -6], 2).tolist()
    [1, -1, 2, -2]
    """
    x64, e = np.asarray(x, np.int64), np.asarray(exponent, np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x64 & mask
    threshold = (mask >> 1) + (x64 < 0)
    return (x64 >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: npt.ArrayLike, m0: npt.ArrayLike,
                                     shift: npt.ArrayLike) -> I64:
    """TFLite's ``MultiplyByQuantizedMultiplier``: ``x * M0 * 2**(shift - 31)``, rounded.

    ``RDBPOT(SRDHM(x * 2**max(shift, 0), M0), max(-shift, 0))``, the double-rounding
    form TFLite builds by default.

    >>> m0, shift = quantize_multiplier(0.5)  # 1.5, -1.5, 2: the high multiply rounds ties up
    >>> multiply_by_quantized_multiplier([3, -3, 4], m0, shift).tolist()
    [2, -1, 2]
    >>> m0, shift = quantize_multiplier(0.25)  # 1.5, -1.5: the final shift rounds away
    >>> multiply_by_quantized_multiplier([6, -6], m0, shift).tolist()
    [2, -2]
    """
    return _high_mul_then_shift(x, m0, shift, rounding_divide_by_pot)


def _high_mul_then_shift(x: npt.ArrayLike, m0: npt.ArrayLike, shift: npt.ArrayLike,
                         right_shift: Callable[[I64, I64], I64]) -> I64:
    """``right_shift(SRDHM(x * 2**max(shift, 0), M0), max(-shift, 0))``."""
    s = np.asarray(shift, np.int64)
    left, right = np.maximum(s, 0), np.maximum(-s, 0)
    shifted = np.asarray(x, np.int64) * (np.int64(1) << left)
    return right_shift(saturating_rounding_doubling_high_mul(shifted, m0), right)


def _shift_right_ties_up(x: I64, e: I64) -> I64:
    """``x / 2**e`` rounded to nearest, ties up (``(x + 2**(e-1)) >> e``; ``x`` for e = 0)."""
    return np.where(e > 0, (x + (np.int64(1) << np.maximum(e - 1, 0))) >> e, x)


def multiply_by_quantized_multiplier_up(x: npt.ArrayLike, m0: npt.ArrayLike,
                                        shift: npt.ArrayLike) -> I64:
    """``MultiplyByQuantizedMultiplier`` as TFLite's optimized (SIMD) kernels compute it.

    The same high multiply, then a rounding right shift whose ties go up (toward
    +inf, like NEON's ``vrshl``) instead of away from zero:
    ``(SRDHM(x * 2**max(s, 0), M0) + 2**(r - 1)) >> r`` with ``r = max(-s, 0)``.
    It differs from :func:`multiply_by_quantized_multiplier` only on negative ties.

    >>> m0, shift = quantize_multiplier(0.25)
    >>> multiply_by_quantized_multiplier_up([6, -6, -5], m0, shift).tolist()
    [2, -1, -1]
    """
    return _high_mul_then_shift(x, m0, shift, _shift_right_ties_up)


def multiply_by_quantized_multiplier_single(x: npt.ArrayLike, m0: npt.ArrayLike,
                                            shift: npt.ArrayLike) -> I64:
    """The single-rounding form: ``(x * M0 + 2**(30 - shift)) >> (31 - shift)``.

    ``x * M0 * 2**(shift - 31)`` rounded once, ties up; TFLite's reference
    FULLY_CONNECTED kernel requantizes this way.

    >>> m0, shift = quantize_multiplier(0.5)
    >>> multiply_by_quantized_multiplier_single([3, -3, 4], m0, shift).tolist()
    [2, -1, 2]
    """
    total = 31 - np.asarray(shift, np.int64)
    prod = np.asarray(x, np.int64) * np.asarray(m0, np.int64)
    return (prod + (np.int64(1) << (total - 1))) >> total


#: Requantization rounding of Conv/Depthwise/FullyConnected, as measured against TFLite
#: (docs/integer_inference.md): "reference" kernels round Conv/Depthwise with
#: :func:`multiply_by_quantized_multiplier` and FullyConnected with
#: :func:`multiply_by_quantized_multiplier_single`; "optimized" kernels round all three
#: with :func:`multiply_by_quantized_multiplier_up`.
ROUNDINGS = ("reference", "optimized")
_ROUNDING: contextvars.ContextVar[str] = contextvars.ContextVar("rounding",
                                                               default="reference")
#: The rounding of each interpreter kernel set (see :func:`tfmot_ext.tflite.op_outputs`).
KERNEL_ROUNDING = {"reference": "reference", "builtin": "optimized", "default": "optimized"}


# --------------------------------------------------------------------------- tensors


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


def activation_range(activation: str, scale: float, zero_point: int,
                     where: str = "layer") -> tuple[int, int]:
    """The int8 clamp of a fused activation (TFLite ``CalculateActivationRangeQuantized``).

    ``relu``: ``[max(-128, z), 127]``; ``relu6``: also ``min(127, z + round(6 / s))``
    (``6 / s`` in float32, rounded half away from zero); ``linear``: ``[-128, 127]``.

    >>> activation_range("relu6", 0.05, -128)
    (-128, -8)
    """
    def q(f: float) -> int:
        return zero_point + int(round_half_away(np.float32(f) / np.float32(scale)))

    if activation in ("linear", "None", None):
        return -128, 127
    if activation == "relu":
        return max(-128, q(0.0)), 127
    if activation == "relu6":
        return max(-128, q(0.0)), min(127, q(6.0))
    raise IntegerReferenceError(
        f"{where}: fused activation '{activation}' has no integer form in the reference "
        "(supported: linear, relu, relu6)")


def quantize_input(x: npt.ArrayLike, scale: float, zero_point: int) -> npt.NDArray[np.int8]:
    """TFLite's float -> int8 ``QUANTIZE``: ``clamp(round_half_away(x / s) + z, -128, 127)``.

    The division is in float32, as the kernel does it.

    >>> quantize_input([0.0, 0.25, -1.0], 0.5, -1).tolist()
    [-1, 0, -3]
    """
    q = round_half_away((np.asarray(x, np.float32) / np.float32(scale)).astype(np.float32))
    return np.clip(q + zero_point, -128, 127).astype(np.int8)


def _mbqm(rounding: str, fc: bool = False) -> Callable[[Any, Any, Any], I64]:
    """The ``MultiplyByQuantizedMultiplier`` of a kernel set (:data:`ROUNDINGS`): ties of
    the final shift up in the optimized kernels; away from zero in the reference ones,
    whose FULLY_CONNECTED (``fc``) rounds once."""
    if rounding == "optimized":
        return multiply_by_quantized_multiplier_up
    return multiply_by_quantized_multiplier_single if fc else multiply_by_quantized_multiplier


def requantize(t: IntTensor, scale: float, zero_point: int, rounding: str | None = None
               ) -> IntTensor:
    """TFLite's int8 -> int8 ``QUANTIZE`` (a change of scale).

    ``M = double(s_in) / double(s_out)`` as ``(M0, shift)``;
    ``q = clamp(MBQM(q_in - z_in, M0, shift) + z_out, -128, 127)``, MBQM rounded as the
    kernel set of the run rounds, or as ``rounding`` says (:data:`ROUNDINGS`): the
    optimized QUANTIZE rounds the final shift's ties up
    (:func:`multiply_by_quantized_multiplier_up`), which matters for ``M < 1/2`` (a right
    shift: measured on NASNetMobile, a quarter of the elements one LSB apart with the
    reference kernels' rounding).
    """
    if scale == t.scale and zero_point == t.zero_point:
        return t
    m0, shift = quantize_multiplier(np.float64(np.float32(t.scale)) /
                                    np.float64(np.float32(scale)))
    mbqm = _mbqm(_ROUNDING.get() if rounding is None else rounding)
    acc = mbqm(t.values.astype(np.int64) - t.zero_point, m0, shift)
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


def _pair(v: Any, default: int = 1) -> tuple[int, int]:
    if v is None:
        return default, default
    if isinstance(v, int):
        return v, v
    a, b = v
    return int(a), int(b)


#: TFLite's optimized per-channel depthwise output stage requantizes channels in SIMD
#: groups of this many (ties up); the channels after the last full group go through
#: the scalar ``MultiplyByQuantizedMultiplier`` (ties away from zero).
DEPTHWISE_SIMD_CHANNELS = 8


def _finish(p: LayerQuantParams, acc: np.ndarray, where: str, fc: bool = False,
            depthwise: bool = False) -> IntTensor:
    """Add the int32 bias, requantize per output channel, add z_y, clamp."""
    assert p.output is not None and p.multiplier_q31 is not None and p.shift is not None
    if p.bias_int is not None:
        acc = acc + p.bias_int.astype(np.int64)
    y = _mbqm(_ROUNDING.get(), fc)(acc, p.multiplier_q31, p.shift)
    tail = acc.shape[-1] % DEPTHWISE_SIMD_CHANNELS
    if depthwise and tail and _ROUNDING.get() == "optimized":
        # measured: a 3-channel depthwise (MobileNetV3's input scaling x / 127.5 - 1,
        # every output a tie) rounds all ties away from zero in the optimized kernels
        m0, sh = (np.broadcast_to(v, acc.shape[-1:])[-tail:]
                  for v in (p.multiplier_q31, p.shift))
        y[..., -tail:] = multiply_by_quantized_multiplier(acc[..., -tail:], m0, sh)
    y = y + p.output.zero_point
    lo, hi = activation_range(p.activation, p.output.scale, p.output.zero_point, where)
    return IntTensor(np.clip(y, lo, hi).astype(np.int8), p.output.scale, p.output.zero_point)


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


def _conv(p: LayerQuantParams, x: IntTensor, where: str, depthwise: bool) -> IntTensor:
    _check_weighted(p, x, where)
    assert p.kernel_int is not None
    c = p.config
    if c.get("data_format", "channels_last") not in ("channels_last", None):
        raise IntegerReferenceError(f"{where}: only channels_last is supported")
    k = p.kernel_int.astype(np.int64)
    kh, kw = k.shape[0], k.shape[1]
    strides, dil = _pair(c.get("strides")), _pair(c.get("dilation_rate"))
    xs = x.values.astype(np.int64) - x.zero_point
    xs = _pad_hw(xs, kh, kw, strides, dil, str(c.get("padding", "valid")).lower(), 0)
    win = _windows(xs, kh, kw, strides, dil)  # (N, OH, OW, C, kh, kw)
    if depthwise:
        # (kh, kw, C, M) -> out[..., c*M + m] = sum win[..., c, i, j] * k[i, j, c, m]
        acc = np.einsum("nhwcij,ijcm->nhwcm", win, k, optimize=True)
        return _finish(p, acc.reshape(*acc.shape[:3], -1), where, depthwise=True)
    # groups g: kernel (kh, kw, C/g, O); output channel o reads the input channels
    # of its group o // (O/g): out[..., g*O/g + o] = sum win[..., g*C/g + c] k[.., c, o]
    groups = int(c.get("groups", 1) or 1)
    n, oh, ow, cin = win.shape[:4]
    if cin != k.shape[2] * groups:
        raise IntegerReferenceError(f"{where}: {cin} input channels do not match a "
                                    f"kernel of {k.shape[2]} per group x {groups} groups")
    wg = win.reshape(n, oh, ow, groups, cin // groups, kh, kw)
    kg = k.reshape(kh, kw, k.shape[2], groups, k.shape[3] // groups)
    acc = np.einsum("nhwgcij,ijcgo->nhwgo", wg, kg, optimize=True)
    return _finish(p, acc.reshape(n, oh, ow, -1), where)


def _dense(p: LayerQuantParams, x: IntTensor, where: str) -> IntTensor:
    _check_weighted(p, x, where)
    assert p.kernel_int is not None
    xs = x.values.astype(np.int64) - x.zero_point
    return _finish(p, xs @ p.kernel_int.astype(np.int64), where, fc=True)


def _relu(p: LayerQuantParams, x: IntTensor, where: str) -> IntTensor:
    """A ReLU/ReLU6 (or Activation) layer: the clamp TFLite would fuse (scheme.relu_kind),
    or, where the layer has its own output scale, TFLite's requantizing int8 RELU."""
    act = relu_kind(p.kind, p.config)
    if act is None:
        if p.kind == "Activation" and p.config.get("activation", "linear") == "linear":
            return x
        raise IntegerReferenceError(
            f"{where}: only ReLU, ReLU6 and Activation('relu'|'relu6'|'linear') have an "
            f"integer form in the reference (config {dict(p.config)})"[:600])
    out = p.output
    if out is None or (np.float32(out.scale) == np.float32(x.scale)
                       and out.zero_point == x.zero_point):
        lo, hi = activation_range(act, x.scale, x.zero_point, where)
        return IntTensor(np.clip(x.values, lo, hi).astype(np.int8), x.scale, x.zero_point)
    # not fused (its input has other consumers, e.g. Xception's Add -> ReLU -> separable):
    # TFLite's RELU requantizes, z_y + MBQM(q - z_x, M(s_x / s_y)), clamped to the range.
    # Both kernel sets run reference_ops::ReluX (optimized_ops.h imports it with `using`),
    # whose scalar MultiplyByQuantizedMultiplier rounds as the reference kernels do
    m0, shift = quantize_multiplier(np.float64(np.float32(x.scale)) / np.float64(
        np.float32(out.scale)))
    y = multiply_by_quantized_multiplier(x.values.astype(np.int64) - x.zero_point, m0,
                                         shift) + out.zero_point
    lo, hi = activation_range(act, out.scale, out.zero_point, where)
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
    f32 = np.float32
    q = np.arange(-128, 128, dtype=np.int32)
    d = (f32(in_scale) * (q - in_zero_point).astype(f32)).astype(f32)
    y = _LUT_FUNCTIONS[fn](d).astype(f32)
    r = round_half_away((y * (f32(1) / f32(out_scale))).astype(f32))
    return np.clip(r.astype(np.int64) + out_zero_point, -128, 127).astype(np.int8)


def _lut(x: IntTensor, fn: str) -> IntTensor:
    s, z = _LUT_OUTPUT[fn]
    table = activation_lut(fn, x.scale, x.zero_point, s, z)
    return IntTensor(table[x.values.astype(np.int64) + 128], s, z)


def _activation(p: LayerQuantParams, x: IntTensor, where: str) -> IntTensor:
    """An Activation layer: sigmoid / tanh (TFLite's table LOGISTIC / TANH, output at
    the fixed scale its QAT quantizer trains), swish (LOGISTIC, then MUL to the layer's
    output scale), else a ReLU (:func:`_relu`)."""
    act = p.config.get("activation")
    if act in _LUT_FUNCTIONS:
        y = _lut(x, str(act))
        if p.output is not None and (np.float32(p.output.scale), p.output.zero_point) != (
                np.float32(y.scale), y.zero_point):
            raise IntegerReferenceError(
                f"{where}: TFLite's int8 {act} outputs scale {y.scale}, zero point "
                f"{y.zero_point}; the layer was trained with ({p.output.scale}, "
                f"{p.output.zero_point})")
        return y
    if act in ("swish", "silu"):
        return _mul(dataclasses.replace(p, activation="linear"), [x, _lut(x, "sigmoid")],
                    where)
    return _relu(p, x, where)


def _max_pool(p: LayerQuantParams, x: IntTensor, where: str) -> IntTensor:
    c = p.config
    kh, kw = _pair(c.get("pool_size"), 2)
    strides = _pair(c.get("strides") or (kh, kw))
    xs = _pad_hw(x.values.astype(np.int64), kh, kw, strides, (1, 1),
                 str(c.get("padding", "valid")).lower(), -(2**40))
    out = _windows(xs, kh, kw, strides, (1, 1)).max(axis=(-2, -1))
    return IntTensor(out.astype(np.int8), x.scale, x.zero_point)


def _avg_pool(p: LayerQuantParams, x: IntTensor, where: str) -> IntTensor:
    """TFLite int8 ``AVERAGE_POOL_2D``: sum of the valid elements, divided by their count
    rounding half away from zero (integer ``(acc +- n/2) / n``)."""
    c = p.config
    kh, kw = _pair(c.get("pool_size"), 2)
    strides = _pair(c.get("strides") or (kh, kw))
    padding = str(c.get("padding", "valid")).lower()
    xs = _pad_hw(x.values.astype(np.int64), kh, kw, strides, (1, 1), padding, 0)
    ones = _pad_hw(np.ones((1, *x.values.shape[1:3], 1), np.int64), kh, kw, strides, (1, 1),
                   padding, 0)
    acc = _windows(xs, kh, kw, strides, (1, 1)).sum(axis=(-2, -1))
    n = _windows(ones, kh, kw, strides, (1, 1)).sum(axis=(-2, -1))
    out = _trunc_div(acc + np.where(acc > 0, n // 2, -(n // 2)), n)
    pooled = IntTensor(np.clip(out, -128, 127).astype(np.int8), x.scale, x.zero_point)
    final = _requantize_to_layer(p, pooled)
    return final if final is pooled else dataclasses.replace(final, steps=(pooled,))


def _trunc_div(a: np.ndarray, b: Any) -> np.ndarray:
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q)


def _global_avg_pool(p: LayerQuantParams, x: IntTensor, where: str) -> IntTensor:
    """TFLite int8 ``MEAN`` over H and W (what GlobalAveragePooling2D converts to).

    ``acc = sum(q_in - z_in)`` over the ``n = H * W`` elements (int32), then one
    requantization that folds the division in: ``M = s_in / (n * s_out)`` (float32,
    as the kernel computes it) as ``(M0, shift)``,
    ``q_out = clamp(MBQM(acc, M0, shift) + z_out, -128, 127)``.
    """
    if p.output is None:
        raise IntegerReferenceError(f"{where}: output is not quantized")
    f32 = np.float32
    if p.config.get("keepdims", False) and _ROUNDING.get() == "optimized":
        return _mean_keepdims(x, p.output, where)
    v = x.values.astype(np.int64) - x.zero_point
    n = v.shape[1] * v.shape[2]
    acc = v.sum(axis=(1, 2), keepdims=bool(p.config.get("keepdims", False)))
    m = f32(f32(x.scale) / (f32(n) * f32(p.output.scale)))
    m0, shift = quantize_multiplier(np.float64(m))
    out = multiply_by_quantized_multiplier(acc, m0, shift) + p.output.zero_point
    return IntTensor(np.clip(out, -128, 127).astype(np.int8), p.output.scale,
                     p.output.zero_point)


def _mean_keepdims(x: IntTensor, out: TensorQuant, where: str) -> IntTensor:
    """TFLite's optimized int8 ``MEAN`` over H, W of a 4-D tensor with keep-dims
    (``optimized_integer_ops::Mean``; the reference kernels take the integer path of
    :func:`_global_avg_pool`, measured).

    ``acc = sum(q_in)`` (raw values), rounded once to ``M = f32(s_in / (n * s_out))``
    (:func:`multiply_by_quantized_multiplier_up`), plus
    ``z_out - round(f32(z_in * s_in) / s_out)``: the input zero point's share rounded on
    its own, so the result can sit one LSB off the rounded mean (measured: 1 LSB on half
    the elements against the QAT model's fake-quantized mean), which is why
    :func:`tfmot_ext.graph.mean_without_keepdims` avoids this op.
    """
    f32 = np.float32
    if x.values.ndim != 4:
        raise IntegerReferenceError(f"{where}: keep-dims mean of a rank-{x.values.ndim} tensor")
    n = x.values.shape[1] * x.values.shape[2]
    acc = x.values.astype(np.int64).sum(axis=(1, 2), keepdims=True)
    m0, shift = quantize_multiplier(np.float64(f32(f32(x.scale) / (f32(n) * f32(out.scale)))))
    share = f32(f32(x.zero_point * f32(x.scale)) / f32(out.scale))
    share = np.trunc(share + (f32(0.5) if share > 0 else f32(-0.5)))
    q = multiply_by_quantized_multiplier_up(acc, m0, shift) + out.zero_point - int(share)
    return IntTensor(np.clip(q, -128, 127).astype(np.int8), out.scale, out.zero_point)


def _add(p: LayerQuantParams, xs: list[IntTensor], where: str) -> IntTensor:
    """TFLite int8 ``ADD``: inputs to a common scale ``2 * max(s1, s2)`` with 20 bits of
    headroom, summed, then to the output scale."""
    if len(xs) != 2:
        raise IntegerReferenceError(f"{where}: Add of {len(xs)} inputs; TFLite ADD is binary")
    if p.output is None:
        raise IntegerReferenceError(f"{where}: output is not quantized")
    a, b = xs
    s1, s2, so = np.float32(a.scale), np.float32(b.scale), np.float32(p.output.scale)
    twice_max = np.float64(np.float32(2) * max(s1, s2))
    m1, sh1 = quantize_multiplier(np.float64(s1) / twice_max)
    m2, sh2 = quantize_multiplier(np.float64(s2) / twice_max)
    mo, sho = quantize_multiplier(twice_max / np.float64(np.float32(1 << 20) * so))

    def scaled(t: IntTensor, m: Any, sh: Any) -> np.ndarray:
        v = (t.values.astype(np.int64) - t.zero_point) * (1 << 20)
        return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(v, m), -sh)

    raw = scaled(a, m1, sh1) + scaled(b, m2, sh2)
    y = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(raw, mo), -sho)
    y = y + p.output.zero_point
    lo, hi = activation_range(p.activation, p.output.scale, p.output.zero_point, where)
    return IntTensor(np.clip(y, lo, hi).astype(np.int8), p.output.scale, p.output.zero_point)


def _mul(p: LayerQuantParams, xs: list[IntTensor], where: str) -> IntTensor:
    """TFLite int8 ``MUL`` (broadcasting): ``(q1 - z1) * (q2 - z2)`` requantized with
    :func:`multiply_by_quantized_multiplier` to ``M = s1 * s2 / s_out`` (double; the same
    rounding in the reference and the optimized kernels, measured), plus ``z_out``,
    clamped to the activation range."""
    if len(xs) != 2:
        raise IntegerReferenceError(f"{where}: Multiply of {len(xs)} inputs; TFLite MUL is "
                                    "binary")
    if p.output is None:
        raise IntegerReferenceError(f"{where}: output is not quantized")
    a, b = xs
    m0, shift = quantize_multiplier(np.float64(np.float32(a.scale)) * np.float64(
        np.float32(b.scale)) / np.float64(np.float32(p.output.scale)))
    prod = (a.values.astype(np.int64) - a.zero_point) * (b.values.astype(np.int64)
                                                          - b.zero_point)
    y = multiply_by_quantized_multiplier(prod, m0, shift) + p.output.zero_point
    lo, hi = activation_range(p.activation, p.output.scale, p.output.zero_point, where)
    return IntTensor(np.clip(y, lo, hi).astype(np.int8), p.output.scale, p.output.zero_point)


#: TF functions of :class:`tfmot_ext.graph.TensorOp` layers with an integer kernel here:
#: two tensors, or a tensor and a scalar constant (:func:`constant_operand`).
_TENSOR_OP_KERNELS = {"__operators__.add": "Add", "math.add": "Add",
                      "math.add_v2": "Add", "math.multiply": "Multiply"}


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


def _tensor_op(p: LayerQuantParams, xs: list[IntTensor], where: str) -> IntTensor:
    op = p.config.get("op", {})
    fn = op.get("config", {}).get("function") if isinstance(op, dict) else None
    kind = _TENSOR_OP_KERNELS.get(str(fn))
    y = p.config.get("op_kwargs", {}).get("y")
    if (kind is not None and len(xs) == 1 and p.config.get("first_arg") == {"__input__": 0}
            and isinstance(y, (int, float)) and not isinstance(y, bool)):
        xs = [xs[0], constant_operand(y)]   # x + c, x * c: c quantized by the converter
    if kind is None or len(xs) != 2:
        raise IntegerReferenceError(
            f"{where}: the integer reference has no kernel for TensorOp '{fn}' with "
            f"{len(xs)} tensor input(s); supported: {sorted(_TENSOR_OP_KERNELS)} of two "
            "tensors")
    return _NARY[kind](p, xs, where)


def _concat(p: LayerQuantParams, xs: list[IntTensor], where: str) -> IntTensor:
    if p.output is None:
        raise IntegerReferenceError(f"{where}: output is not quantized")
    axis = int(p.config.get("axis", -1))
    parts = [requantize(t, p.output.scale, p.output.zero_point).values for t in xs]
    return IntTensor(np.concatenate(parts, axis=axis), p.output.scale, p.output.zero_point)


def _hw_pairs(v: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """ZeroPadding2D's / Cropping2D's ``int`` or ``(h, w)`` or ``((top, bottom), (left,
    right))`` as the last form."""
    if isinstance(v, int):
        return (v, v), (v, v)
    h, w = v
    return _pair(h), _pair(w)


def _zero_pad(p: LayerQuantParams, x: IntTensor, where: str) -> IntTensor:
    ph, pw = _hw_pairs(p.config.get("padding", 1))
    out = np.pad(x.values, ((0, 0), ph, pw, (0, 0)), constant_values=x.zero_point)
    return IntTensor(out, x.scale, x.zero_point)


def _crop(p: LayerQuantParams, x: IntTensor, where: str) -> IntTensor:
    """Cropping2D (channels last): the integers pass unchanged, rows/columns dropped."""
    (top, bottom), (left, right) = _hw_pairs(p.config.get("cropping", 0))
    h, w = x.values.shape[1:3]
    return IntTensor(x.values[:, top:h - bottom, left:w - right], x.scale, x.zero_point)


def _reshape(p: LayerQuantParams, x: IntTensor, where: str) -> IntTensor:
    if p.kind == "Flatten":
        return IntTensor(x.values.reshape(len(x.values), -1), x.scale, x.zero_point)
    target = p.config.get("target_shape")
    if not isinstance(target, (list, tuple)):
        raise IntegerReferenceError(f"{where}: Reshape without a target_shape")
    return IntTensor(x.values.reshape(len(x.values), *target), x.scale, x.zero_point)


def _requantize_to_layer(p: LayerQuantParams, t: IntTensor) -> IntTensor:
    if p.output is None:
        return t
    return requantize(t, p.output.scale, p.output.zero_point)


def _identity(p: LayerQuantParams, x: IntTensor, where: str) -> IntTensor:
    return x


_Unary = Callable[[LayerQuantParams, IntTensor, str], IntTensor]
_UNARY: dict[str, _Unary] = {
    "Conv2D": lambda p, x, w: _conv(p, x, w, depthwise=False),
    "FoldedConv2DBatchNorm": lambda p, x, w: _conv(p, x, w, depthwise=False),
    "DepthwiseConv2D": lambda p, x, w: _conv(p, x, w, depthwise=True),
    "FoldedDepthwiseConv2DBatchNorm": lambda p, x, w: _conv(p, x, w, depthwise=True),
    "Dense": _dense,
    "FoldedDenseBatchNorm": _dense,
    "ReLU": _relu,
    "Activation": _activation,
    "MaxPooling2D": _max_pool,
    "AveragePooling2D": _avg_pool,
    "GlobalAveragePooling2D": _global_avg_pool,
    "ZeroPadding2D": _zero_pad,
    "Cropping2D": _crop,
    "Flatten": _reshape,
    "Reshape": _reshape,
    "Dropout": _identity,
    "SpatialDropout2D": _identity,
    "Identity": lambda p, x, w: _requantize_to_layer(p, x),
}
_NARY = {"Add": _add, "Concatenate": _concat, "Multiply": _mul, "TensorOp": _tensor_op}

#: Layer kinds the reference executes.
SUPPORTED_KINDS = frozenset({*_UNARY, *_NARY, "InputLayer", "QuantizeLayer"})


def _execute(p: LayerQuantParams, args: list[IntTensor], where: str) -> IntTensor:
    if p.kind in _NARY:
        return _NARY[p.kind](p, args, where)
    if len(args) != 1:
        raise IntegerReferenceError(f"{where}: expected one input, got {len(args)}")
    return _UNARY[p.kind](p, args[0], where)


def run(params: QuantizedModelParams, x: npt.ArrayLike, rounding: str = "reference"
        ) -> ReferenceRun:
    """Run a model's integer parameters on a batch, integer arithmetic only.

    Args:
        params: from :func:`tfmot_ext.extract` (live model or H5 file); a kernel
            trained below 8 bits other than 4 runs in the int8 form that
            :func:`tfmot_ext.to_tflite` deploys (:func:`tfmot_ext.extract.int8_embedded`).
        x: the batch: int8 values already quantized with the model's input
            quantization (what an int8-I/O TFLite model takes), or float32 values,
            which are quantized first with :func:`quantize_input`.
        rounding: the requantization rounding of Conv/Depthwise/FullyConnected:
            ``"reference"`` (TFLite's reference kernels) or ``"optimized"`` (its
            optimized kernels); see :data:`ROUNDINGS`.

    Returns:
        :class:`ReferenceRun`: every layer's int8 tensor.

    Raises:
        IntegerReferenceError: a layer kind or setting the reference does not execute (the
            message names the layer), or a model with more than one input.
    """
    if rounding not in ROUNDINGS:
        raise IntegerReferenceError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    token = _ROUNDING.set(rounding)
    try:
        return _run(params, np.asarray(x))
    finally:
        _ROUNDING.reset(token)


def _converter_requantized(params: QuantizedModelParams, p: LayerQuantParams,
                           tensors: Mapping[str, IntTensor]) -> list[IntTensor]:
    """``p``'s input tensors; one that reaches a quantized layer through pass-through
    layers at another scale than the layer's input (DenseNet: a tensor a Concatenate
    also reads, which the converter gives the Concatenate's scale) is requantized
    there, as the converter's QUANTIZE does (before max pooling or padding, which
    commute with a monotonic requantization, or after an average pooling)."""
    args = [tensors[i] for i in p.inputs]
    if p.input is None or len(args) != 1:
        return args
    up, x = params[p.inputs[0]], args[0]
    if (up.kind in PASS_THROUGH and up.output is None
            and (np.float32(x.scale), x.zero_point)
            != (np.float32(p.input.scale), p.input.zero_point)):
        return [requantize(x, p.input.scale, p.input.zero_point)]
    return args


def _run(params: QuantizedModelParams, xs: np.ndarray) -> ReferenceRun:
    inputs = [n for n, p in params.items() if p.kind == "InputLayer"]
    if len(inputs) != 1:
        raise IntegerReferenceError(f"{params.source}: the reference runs single-input models "
                              f"(found {len(inputs)} inputs)")
    tensors: OrderedDict[str, IntTensor] = OrderedDict()
    raw_input = inputs[0]
    last = raw_input
    for name, p in params.items():
        where = f"{params.source}: layer '{name}' ({p.kind})"
        if name == raw_input:
            continue
        if p.kind not in SUPPORTED_KINDS:
            raise IntegerReferenceError(
                f"{where}: the integer reference has no kernel for {p.kind}; supported: "
                f"{', '.join(sorted(SUPPORTED_KINDS))}")
        if p.kind == "QuantizeLayer":
            if p.output is None:
                raise IntegerReferenceError(f"{where}: the input quantizer has no range")
            if xs.dtype == np.int8:
                q = xs
            else:
                q = quantize_input(xs, p.output.scale, p.output.zero_point)
            tensors[name] = IntTensor(q, p.output.scale, p.output.zero_point)
            last = name
            continue
        missing = [i for i in p.inputs if i not in tensors]
        if missing:
            raise IntegerReferenceError(f"{where}: its inputs {missing} were not computed "
                                  "(float layers before the model's QuantizeLayer?)")
        # a kernel trained below 8 bits (not 4) runs in the int8 form to_tflite deploys
        tensors[name] = _execute(int8_embedded(p), _converter_requantized(params, p, tensors),
                                 where)
        last = name
    return ReferenceRun(tensors, last)



# --------------------------------------------------------------------------- parity


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


def match_tensors(ref: ReferenceRun, tensors: list[Any],
                  params: QuantizedModelParams | None = None) -> list[TensorMatch]:
    """Pair interpreter tensors (:class:`tfmot_ext.tflite.OpTensor`) with reference ones.

    A TFLite tensor's name carries the Keras layer names it was fused from; among
    those, the latest layer whose reference tensor has the same shape, scale and
    zero point is its counterpart. The model output is matched to the reference
    output.

    With ``params``, each matched layer is recomputed from the interpreter's own
    input tensors where those are matched too, so a difference is attributed to the
    operator that makes it rather than inherited from an earlier one.
    """
    order = list(ref.tensors)
    hits: list[tuple[Any, tuple[str, int] | None]] = []
    for i, t in enumerate(tensors):
        comps = _components(t.name)
        cands = [n for n in order if n in comps]
        if i == len(tensors) - 1 or not cands:
            cands = [*cands, ref.output_name]
        hit: tuple[str, int] | None = None
        for n in reversed(cands):
            r = ref.tensors[n]
            for k, c in enumerate((r, *r.steps)):
                if (c.values.shape == t.values.shape and np.float32(c.scale) == np.float32(
                        t.scale) and c.zero_point == t.zero_point):
                    hit = (n, k)
                    break
            if hit is not None:
                break
        hits.append((t, hit))
    theirs = {h[0]: IntTensor(t.values, t.scale, t.zero_point)
              for t, h in hits if h is not None and h[1] == 0}
    out = []
    for t, h in hits:
        if h is None:
            out.append(TensorMatch(t.name, t.op, None, 0, 0, 0))
            continue
        layer, k = h
        mine = ref.tensors[layer]
        if params is not None:
            mine = _isolated(params, ref, theirs, layer)
        mine = (mine, *mine.steps)[k]
        d = np.abs(mine.values.astype(np.int32) - t.values.astype(np.int32))
        out.append(TensorMatch(t.name, t.op, layer, int(d.size), int((d > 0).sum()),
                               int(d.max()) if d.size else 0))
    return out


def _isolated(params: QuantizedModelParams, ref: ReferenceRun, theirs: dict[str, IntTensor],
              name: str) -> IntTensor:
    """Recompute layer ``name`` (and the unmatched layers between it and the nearest
    matched ones upstream) from the interpreter's tensors."""
    memo: dict[str, IntTensor] = {}

    def value(n: str, top: bool) -> IntTensor:
        if not top and n in theirs:
            return theirs[n]
        if n in memo:
            return memo[n]
        p = params[n]
        if p.kind in ("InputLayer", "QuantizeLayer") or not p.inputs:
            memo[n] = ref.tensors[n]
        else:
            ins = {i: value(i, False) for i in p.inputs}
            memo[n] = _execute(p, _converter_requantized(params, p, ins), f"layer '{n}'")
        return memo[n]

    return value(name, True)


def compare_with_tflite(params: QuantizedModelParams, model_content: bytes,
                        x: npt.ArrayLike, kernels: str = "reference",
                        isolate: bool = False, rounding: str | None = None
                        ) -> list[TensorMatch]:
    """Run the reference and the TFLite interpreter on ``x`` and compare every tensor.

    ``x`` is float (quantized with the model's input quantization) or int8. With
    ``kernels="default"`` only the outputs are compared (the XNNPACK delegate keeps
    its intermediate tensors to itself). ``isolate`` recomputes each operator from
    the interpreter's own inputs (see :func:`match_tensors`); ``rounding`` as in
    :func:`run`, by default the one of the chosen kernels (:data:`KERNEL_ROUNDING`).
    """
    from tfmot_ext.tflite import op_outputs

    rounding = KERNEL_ROUNDING.get(kernels, "reference") if rounding is None else rounding
    ref = run(params, x, rounding)
    q_in = next(iter(t for n, t in ref.tensors.items() if params[n].kind == "QuantizeLayer"))
    theirs = op_outputs(model_content, q_in.values, kernels)
    token = _ROUNDING.set(rounding)
    try:
        return match_tensors(ref, theirs, params if isolate else None)
    finally:
        _ROUNDING.reset(token)
