"""Pure quantization math, in NumPy (float32, bit-exact with TensorFlow's kernels).

Conventions used throughout tfmot_ext:

* A ``bits``-bit tensor is stored as signed integers ``q`` in ``[qmin, qmax]`` with
  ``qmin = -2**(bits-1) (+1 if narrow_range)`` and ``qmax = 2**(bits-1) - 1``.
* The real value is ``r = scale * (q - zero_point)``; symmetric quantization has
  ``zero_point == 0``.
* Fake quantization is TensorFlow's ``FakeQuantWithMinMaxVars``: the range
  ``[min, max]`` is *nudged* so that real 0 is exactly representable, then values
  are clamped to the nudged range and rounded half up onto the grid. TFLite reads
  the same op when converting, so these are the numbers that get deployed.

The TF kernel works on the unsigned grid ``[quant_min, quant_max] = [narrow, 2**bits - 1]``;
the signed integers are ``q = u - 2**(bits-1)`` and ``zero_point = u_zp - 2**(bits-1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tfmot_ext.errors import ConfigError

__all__ = [
    "CONVERTER_MIN_RANGE",
    "MAX_BITS",
    "MIN_BITS",
    "MIN_RANGE",
    "NudgedRange",
    "converter_params",
    "fake_quant",
    "fold_batch_norm",
    "int8_embedding_range",
    "integer_range",
    "normalize_axis",
    "nudge",
    "pow2_ceil",
    "power_of_two_range",
    "quantize_to_int",
    "reciprocal",
    "round_half_away",
    "symmetric_range",
    "validate_bits",
    "widen_range",
]

MIN_BITS = 2
MAX_BITS = 16
#: Smallest ``max - min`` a quantizer lets a range collapse to. Below it the scale
#: would underflow or divide by zero (all-zero kernels, constant activations); the
#: range is widened to this width instead, keeping 0 inside it.
MIN_RANGE = 1e-6

#: The converter's smallest range width (MLIR's ``kNearZeroTolerance``): a FakeQuant
#: range not wider is widened to ``[min(lo, -5e-7), max(hi, 5e-7)]``
#: (:func:`converter_params`).
CONVERTER_MIN_RANGE = 1e-6

FloatArray = npt.NDArray[np.float32]


def validate_bits(bits: int, what: str = "quantizer") -> int:
    """Return ``bits`` if it is an int in ``[2, 16]``, else raise :class:`ConfigError`."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ConfigError(f"{what}: bits must be an integer in [2, 16], got {bits!r}")
    if not MIN_BITS <= int(bits) <= MAX_BITS:
        raise ConfigError(
            f"{what}: bits={bits} is outside [2, 16], the widths TensorFlow's FakeQuant "
            "kernels support; use a value in that range"
        )
    return int(bits)


def integer_range(bits: int, narrow_range: bool = False) -> tuple[int, int]:
    """Signed integer range of a ``bits``-bit tensor.

    ``qmin = -2**(bits-1) + narrow_range``, ``qmax = 2**(bits-1) - 1``.

    >>> integer_range(8)
    (-128, 127)
    >>> integer_range(8, narrow_range=True)
    (-127, 127)
    >>> integer_range(4)
    (-8, 7)
    """
    bits = validate_bits(bits)
    half = 1 << (bits - 1)
    return -half + int(bool(narrow_range)), half - 1


def symmetric_range(
    x_min: npt.ArrayLike, x_max: npt.ArrayLike, bits: int, narrow_range: bool
) -> tuple[FloatArray, FloatArray]:
    """The ``[min, max]`` to hand FakeQuant so that it quantizes symmetrically.

    With ``a = max(|x_min|, |x_max|)`` and ``scale = a * float32(1 / qmax)`` the result is
    ``(qmin * scale, qmax * scale)``: the zero point lands on 0 exactly and the
    grid is ``scale * [qmin .. qmax]`` (``qmin = -qmax - 1`` without narrow range,
    the extra negative level two's complement gives).

    >>> lo, hi = symmetric_range(-0.5, 1.27, bits=8, narrow_range=True)
    >>> float(lo), float(hi)
    (-1.2699999809265137, 1.2699999809265137)
    """
    qmin, qmax = integer_range(bits, narrow_range)
    a = np.maximum(np.abs(np.asarray(x_min, np.float32)), np.abs(np.asarray(x_max, np.float32)))
    a = np.maximum(a, np.float32(MIN_RANGE / 2)).astype(np.float32)
    scale = (a * reciprocal(qmax)).astype(np.float32)
    return (scale * np.float32(qmin)).astype(np.float32), (scale * np.float32(qmax)).astype(
        np.float32
    )


def normalize_axis(axis: int | Sequence[int] | None, rank: int, where: str = "tensor") -> tuple[
    int, ...
] | None:
    """Positive, sorted, contiguous channel axes of a rank-``rank`` tensor, or None.

    Several axes are flattened together (row-major) into one channel axis:
    DepthwiseConv2D's kernel ``(H, W, C, M)`` with ``axis=(2, 3)`` has channel
    ``c * M + m``, TFLite's output-channel order.

    >>> normalize_axis(-1, 4), normalize_axis((2, 3), 4), normalize_axis(None, 2)
    ((3,), (2, 3), None)
    """
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if not axes:
        raise ConfigError(f"{where}: empty axis; use None for per-tensor quantization")
    out = []
    for a in axes:
        if not -rank <= int(a) < rank:
            raise ConfigError(
                f"{where}: axis {axis} is out of range for a rank-{rank} tensor; "
                f"use an axis in [-{rank}, {rank - 1}] (or None for per-tensor)"
            )
        out.append(int(a) % rank)
    out.sort()
    if out != list(range(out[0], out[0] + len(out))):
        raise ConfigError(f"{where}: axes {axis} must be contiguous to form one channel axis")
    return tuple(out)


def fold_batch_norm(kernel: np.ndarray, bias: np.ndarray | None, gamma: np.ndarray,
                    beta: np.ndarray, mean: np.ndarray, variance: np.ndarray, epsilon: float,
                    depthwise: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The folded kernel and bias as the folded layer (and the converter) computes them.

    ``sf = gamma / sqrt(var + eps)``, ``W_fold = W * sf``, ``b_fold = beta + (b - mean) * sf``,
    float32, same operation order as TF. Square root and division are correctly
    rounded IEEE operations in TF and NumPy alike (the folded layer divides with
    ``DivNoNan``, which TF's graph optimizers do not turn into an approximate ``rsqrt``),
    so this is bit for bit what training and the converter compute, on any CPU. A
    depthwise kernel ``(H, W, C, M)`` scales output channel ``c*M + m``.

    >>> w, b = fold_batch_norm(np.ones((1, 2), np.float32), None, np.float32([1, 2]),
    ...                        np.float32([0, 1]), np.float32([0, 1]), np.float32([3, 0]), 1.0)
    >>> w.tolist(), b.tolist()
    ([[0.5, 2.0]], [0.0, -1.0])
    """
    f32 = np.float32
    sigma = np.sqrt((np.asarray(variance, f32) + f32(epsilon)).astype(f32), dtype=f32)
    sf = np.divide(np.asarray(gamma, f32), sigma, dtype=f32)
    k = np.asarray(kernel, f32)
    w = np.multiply(k, sf.reshape(k.shape[-2], k.shape[-1]) if depthwise else sf, dtype=f32)
    b = np.zeros_like(sf) if bias is None else np.asarray(bias, f32)
    b_fold = (np.asarray(beta, f32) + ((b - np.asarray(mean, f32)).astype(f32) * sf)
              .astype(f32)).astype(f32)
    return w, b_fold


def round_half_away(x: npt.ArrayLike) -> np.ndarray:
    """``std::round``: to nearest, ties away from zero, exact in the input's precision.

    ``floor(|x| + 0.5)`` is not: in float32, ``0.49999997 + 0.5`` rounds up to ``1.0``.
    Here NumPy's exact half-to-even rounding is corrected on exact ties only.

    >>> round_half_away(np.float32([0.5, -0.5, 2.5, 0.49999997])).tolist()
    [1.0, -1.0, 3.0, 0.0]
    """
    a = np.asarray(x)
    with np.errstate(invalid="ignore"):  # inf/NaN pass through unchanged
        t = np.trunc(a)
        tie = np.abs(a - t) == 0.5
        return np.where(tie, t + np.sign(a), np.round(a)).astype(a.dtype)


def reciprocal(n: float | np.floating[Any]) -> np.float32:
    """``float32(1 / n)``: range code multiplies by it instead of dividing by ``n``.

    TF's graph optimizers, and with them the TFLite converter's constant folding,
    rewrite a division by a constant as a multiplication by its reciprocal; writing
    the multiplication keeps eager TF, graph TF, this twin and the deployed scales on
    the same float32 value.

    >>> bool(reciprocal(127) == np.float32(1 / 127))
    True
    """
    return np.float32(1.0 / float(n))


def widen_range(x_min: npt.ArrayLike, x_max: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Make an asymmetric range contain 0 and be at least :data:`MIN_RANGE` wide.

    ``min' = min(x_min, 0)``, ``max' = max(x_max, 0, min' + MIN_RANGE)``.
    """
    lo = np.minimum(np.asarray(x_min, np.float32), np.float32(0.0))
    hi = np.maximum(np.asarray(x_max, np.float32), np.float32(0.0))
    hi = np.maximum(hi, lo + np.float32(MIN_RANGE)).astype(np.float32)
    return lo.astype(np.float32), hi


def pow2_ceil(s: npt.ArrayLike) -> FloatArray:
    """Smallest power of two ``>= s`` for positive normal float32 ``s``, exactly.

    Read off the float32 bits (no logarithm, so no rounding error):
    ``k = exponent(s) + (mantissa(s) != 0)``, result ``2**k``.

    >>> pow2_ceil(np.float32(0.3)), pow2_ceil(np.float32(0.25))
    (np.float32(0.5), np.float32(0.25))
    """
    bits = np.asarray(s, np.float32).view(np.int32)
    exponent = (bits >> 23) & 0xFF
    k = exponent + (bits & 0x7FFFFF != 0).astype(np.int32)
    return (k.astype(np.int32) << 23).view(np.float32)


def power_of_two_range(
    x_min: npt.ArrayLike, x_max: npt.ArrayLike, bits: int, narrow_range: bool, symmetric: bool
) -> tuple[FloatArray, FloatArray]:
    """The ``[min, max]`` whose FakeQuant grid has ``scale = 2**k``.

    ``scale = pow2_ceil(s)`` where ``s`` is the float32 scale the plain range would
    need (``a / qmax`` symmetric, ``(max - min) / (quant_max - quant_min)``
    asymmetric), so the power-of-two grid still covers the range. Symmetric:
    ``(qmin * scale, qmax * scale)``. Asymmetric: zero point
    ``zp_u = clamp(round_half_even(quant_min - min / scale))`` on the unsigned grid and
    ``((quant_min - zp_u) * scale, (quant_max - zp_u) * scale)``; where that rounding
    leaves an end of ``[min, max]`` outside the grid, the scale is doubled once (which
    always covers ``max``; a sliver of ``min`` below half a step can still fall off, as
    with any nudged asymmetric range). Exact in float32 because the scale is a power of
    two.

    ``1/127`` rounds up to ``2**-6``:

    >>> lo, hi = power_of_two_range(-1.0, 1.0, bits=8, narrow_range=True, symmetric=True)
    >>> float(lo), float(hi), float(hi) / 127
    (-1.984375, 1.984375, 0.015625)
    """
    qmin, qmax = integer_range(bits, narrow_range)
    if symmetric:
        a = np.maximum(np.abs(np.asarray(x_min, np.float32)), np.abs(np.asarray(x_max, np.float32)))
        a = np.maximum(a, np.float32(MIN_RANGE / 2)).astype(np.float32)
        scale = pow2_ceil(a * reciprocal(qmax))
        return (scale * np.float32(qmin)).astype(np.float32), (scale * np.float32(qmax)).astype(
            np.float32
        )
    lo, hi = widen_range(x_min, x_max)
    quant_min, quant_max = np.float32(int(bool(narrow_range))), np.float32((1 << bits) - 1)
    scale = pow2_ceil((hi - lo).astype(np.float32) * reciprocal(quant_max - quant_min))
    zp = np.clip(np.round(quant_min - lo / scale), quant_min, quant_max).astype(np.float32)
    # rounding the zero point can shift the grid off one end (e.g. 2 bits, [-16, 33]):
    # one doubling of the scale always covers it again
    short = ((quant_min - zp) * scale > lo) | ((quant_max - zp) * scale < hi)
    scale = np.where(short, scale * np.float32(2), scale).astype(np.float32)
    zp = np.clip(np.round(quant_min - lo / scale), quant_min, quant_max).astype(np.float32)
    return ((quant_min - zp) * scale).astype(np.float32), ((quant_max - zp) * scale).astype(
        np.float32
    )


@dataclass(frozen=True)
class NudgedRange:
    """A range after TensorFlow's nudging, per tensor or per channel.

    Invariants: ``scale > 0`` (``== 0`` only for a degenerate ``min == max`` range, where
    FakeQuant outputs 0); ``qmin <= zero_point <= qmax``;
    ``nudged_min == (quant_min - (zero_point + 2**(bits-1))) * scale`` in float32
    (real 0 is a grid point); all arrays have the shape of the input range.

    Attributes:
        nudged_min: lowest representable real value.
        nudged_max: highest representable real value.
        scale: grid step, ``(max - min) / (quant_max - quant_min)`` in float32.
        inv_scale: ``(quant_max - quant_min) / (max - min)`` in float32 (TF recomputes
            it rather than taking ``1 / scale``; the per-channel kernel multiplies by it).
        zero_point: signed integer zero point, int32.
        bits: bit width.
        narrow_range: whether the lowest level is unused.
    """

    nudged_min: FloatArray
    nudged_max: FloatArray
    scale: FloatArray
    inv_scale: FloatArray
    zero_point: npt.NDArray[np.int32]
    bits: int
    narrow_range: bool


def nudge(
    x_min: npt.ArrayLike, x_max: npt.ArrayLike, bits: int, narrow_range: bool = False
) -> NudgedRange:
    """TensorFlow's ``Nudge`` (``fake_quant_ops_functor.h``), vectorised, in float32.

    ``scale = (max - min) / (quant_max - quant_min)``;
    ``zp_u = clamp(round_half_away(quant_min - min / scale), quant_min, quant_max)``;
    ``nudged_min = (quant_min - zp_u) * scale``; ``nudged_max = (quant_max - zp_u) * scale``.

    Args:
        x_min: range minimum (scalar or per-channel array), ``<= 0``.
        x_max: range maximum, same shape, ``x_max > x_min``.
        bits: 2..16.
        narrow_range: use ``[1, 2**bits - 1]`` instead of ``[0, 2**bits - 1]``.

    In float32, ``[-1, 1]`` at 8 bits gives ``zp_from_min = 127.49999`` -> 127 (unsigned),
    i.e. signed zero point -1:

    >>> r = nudge(-1.0, 1.0, bits=8)
    >>> float(r.scale), int(r.zero_point)
    (0.007843137718737125, -1)
    """
    bits = validate_bits(bits)
    lo = np.asarray(x_min, np.float32)
    hi = np.asarray(x_max, np.float32)
    quant_min = np.float32(1.0 if narrow_range else 0.0)
    quant_max = np.float32((1 << bits) - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = ((hi - lo) / (quant_max - quant_min)).astype(np.float32)
        inv_scale = ((quant_max - quant_min) / (hi - lo)).astype(np.float32)
        zp_from_min = (quant_min - lo / scale).astype(np.float32)
    # std::round rounds half away from zero; only values in [quant_min, quant_max] reach it.
    zp_u = np.where(
        zp_from_min < quant_min,
        quant_min,
        np.where(zp_from_min > quant_max, quant_max, round_half_away(zp_from_min)),
    ).astype(np.float32)
    # min == max (TF outputs 0 then): report zero point 0 rather than NaN.
    zp_u = np.where(np.isfinite(zp_u), zp_u, np.float32(1 << (bits - 1))).astype(np.float32)
    nudged_min = ((quant_min - zp_u) * scale).astype(np.float32)
    nudged_max = ((quant_max - zp_u) * scale).astype(np.float32)
    zero_point = (zp_u.astype(np.int64) - (1 << (bits - 1))).astype(np.int32)
    return NudgedRange(
        nudged_min, nudged_max, scale, inv_scale, zero_point, bits, bool(narrow_range)
    )


def _broadcast_channel(a: np.ndarray, rank: int, axis: int | None) -> np.ndarray:
    if axis is None or a.ndim == 0:
        return a
    shape = [1] * rank
    shape[axis] = a.shape[0]
    return a.reshape(shape)


def _steps(x: npt.ArrayLike, r: NudgedRange, axis: int | None) -> FloatArray:
    """``k = q - zero_point`` as TF's kernel computes it (float32, in place on one buffer).

    Per tensor (``axis is None``):
    ``k = floor((clamp(x) - nudged_min) / scale - quant_zero + 0.5)``.
    Per channel: the same with ``* inv_scale`` in place of ``/ scale``.
    In both, ``quant_zero = floor(-nudged_min * inv_scale + 0.5)``. Same operations in
    the same order as TF, so the result is bit-exact; extraction of large models is
    bound by it, hence one buffer.
    """
    xx = np.asarray(x, np.float32)
    lo = _broadcast_channel(r.nudged_min, xx.ndim, axis)
    hi = _broadcast_channel(r.nudged_max, xx.ndim, axis)
    inv = _broadcast_channel(r.inv_scale, xx.ndim, axis)
    quant_zero = np.floor(-lo * inv + np.float32(0.5)).astype(np.float32)
    t = np.maximum(xx, lo, dtype=np.float32)
    np.minimum(t, hi, out=t)
    np.subtract(t, lo, out=t)
    with np.errstate(divide="ignore", invalid="ignore"):
        if axis is None:
            np.divide(t, _broadcast_channel(r.scale, xx.ndim, axis), out=t)
        else:
            np.multiply(t, inv, out=t)
    np.subtract(t, quant_zero, out=t)
    np.add(t, np.float32(0.5), out=t)
    np.floor(t, out=t)
    return t


def quantize_to_int(
    x: npt.ArrayLike, r: NudgedRange, axis: int | None = None,
    dtype: npt.DTypeLike = np.int32,
) -> npt.NDArray[Any]:
    """The signed integers FakeQuant rounds ``x`` to: ``q = k + zero_point``.

    ``k`` is TF's rounding (see :func:`fake_quant`), so
    ``(q - zero_point) * scale == fake_quant(x)`` bit for bit and ``qmin <= q <= qmax``.

    Args:
        x: values.
        r: the nudged range (per tensor, or per channel along ``axis``).
        axis: channel axis of ``x`` when ``r`` is per channel, else None.
        dtype: integer dtype of the result (int8 holds up to 8 bits, int16 up to 16).
    """
    t = _steps(x, r, axis)
    # k and zero_point are small integers: exact in float32
    np.add(t, _broadcast_channel(r.zero_point, t.ndim, axis).astype(np.float32), out=t)
    return t.astype(dtype)


def fake_quant(
    x: npt.ArrayLike,
    x_min: npt.ArrayLike,
    x_max: npt.ArrayLike,
    bits: int,
    narrow_range: bool = False,
    axis: int | None = None,
) -> FloatArray:
    """NumPy twin of ``tf.quantization.fake_quant_with_min_max_vars[_per_channel]``.

    ``out = k * scale`` with
    ``k = floor((clamp(x, nudged_min, nudged_max) - nudged_min) / scale - quant_zero + 0.5)``
    (per channel: ``* inv_scale`` instead of ``/ scale``, as TF's kernels do), and
    ``min == max == 0`` giving 0.

    At 2 bits ``[-1, 1]`` nudges to the grid ``{-4/3, -2/3, 0, 2/3}``:

    >>> tuple(round(float(v), 4) for v in fake_quant([-0.9, 0.3, 0.4, 5.0], -1.0, 1.0, bits=2))
    (-0.6667, 0.0, 0.6667, 0.6667)
    """
    r = nudge(x_min, x_max, bits, narrow_range)
    k = _steps(x, r, axis)
    out = (k * _broadcast_channel(r.scale, k.ndim, axis)).astype(np.float32)
    both_zero = (np.asarray(x_min) == 0) & (np.asarray(x_max) == 0)
    if np.any(both_zero):
        out = np.where(_broadcast_channel(both_zero, out.ndim, axis), np.float32(0), out)
    return out.astype(np.float32)


def converter_params(
    x_min: npt.ArrayLike, x_max: npt.ArrayLike, bits: int, narrow_range: bool = False
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int32]]:
    """Scale and zero point as the TFLite converter derives them from a FakeQuant op.

    The converter (MLIR ``fakeQuantAttrsToType``) redoes the nudge in float64 on the
    *unsigned* storage range ``[u_min, u_max] = [0 (1 narrow), 2**bits - 1]``:
    ``scale = (max - min) / (u_max - u_min)``, the zero point solved from the end whose
    terms are smaller (``u_min - min / scale`` where
    ``|u_min| + |min / scale| < |u_max| + |max / scale|``, else ``u_max - max / scale``),
    ``clamp(round_half_away(.), u_min, u_max)``, then shifted to int8 by
    ``-2**(bits - 1)``; the flatbuffer stores ``float32(scale)``. This can differ from
    TF's float32 kernel scale (:func:`nudge`) in the last bit; the integers are the
    same. The unsigned domain matters on a half-integer zero point (a symmetric range:
    measured, the converter stores 0 where rounding ``-0.5`` in the signed domain
    would give -1). A range not wider than :data:`CONVERTER_MIN_RANGE` is first
    widened to ``[min(min, -5e-7), max(max, 5e-7)]`` (MLIR's ``ExpandVerySmallRange``:
    a dead ReLU's ``[0, 1e-6]`` deploys on ``[-5e-7, 1e-6]``).

    >>> int(converter_params(-0.3229931890964508, 0.3229931890964508, 8)[1])
    0
    >>> s, z = converter_params(0.0, 1e-6, 8)
    >>> round(float(s) * 255 * 1e7, 3), int(z)
    (15.0, -43)

    Returns:
        ``(scale_float64, zero_point_int32)``.
    """
    qmin, qmax = integer_range(bits, narrow_range)
    shift = 1 << (bits - 1)
    umin, umax = qmin + shift, qmax + shift
    lo = np.asarray(x_min, np.float32).astype(np.float64)
    hi = np.asarray(x_max, np.float32).astype(np.float64)
    # MLIR's ExpandVerySmallRange: a range not wider than 1e-6 (a dead ReLU's [0, 0],
    # widened to MIN_RANGE) becomes [min(lo, -5e-7), max(hi, 5e-7)]
    small = ~(hi - lo > CONVERTER_MIN_RANGE)
    lo = np.where(small, np.minimum(lo, -CONVERTER_MIN_RANGE / 2), lo)
    hi = np.where(small, np.maximum(hi, CONVERTER_MIN_RANGE / 2), hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (hi - lo) / float(umax - umin)
        zp_from_min = umin - lo / scale
        zp_from_max = umax - hi / scale
        from_min = abs(umin) + np.abs(lo / scale) < abs(umax) + np.abs(hi / scale)
    zp_double = np.where(from_min, zp_from_min, zp_from_max)
    rounded = round_half_away(zp_double)
    zp = np.where(zp_double < umin, umin, np.where(zp_double > umax, umax, rounded)) - shift
    degenerate = np.abs(hi - lo) < np.finfo(np.float64).eps
    scale = np.where(degenerate, 1.0, scale)
    zp = np.where(degenerate | ~np.isfinite(zp), qmin, zp)
    return scale.astype(np.float64), zp.astype(np.int32)


def int8_embedding_range(scale: npt.ArrayLike, zero_point: npt.ArrayLike, bits: int,
                   narrow_range: bool = False) -> tuple[FloatArray, FloatArray]:
    """The 8-bit FakeQuant range whose grid holds a ``bits``-bit grid (``bits < 8``).

    With ``f = 2**(8 - bits)``, the nudged ``bits``-bit grid of scale ``s`` and signed
    zero point ``z`` (:func:`nudge`) is the subset ``f * q`` of the 8-bit grid of scale
    ``s8 = s / f`` and zero point ``z8 = f * z``: ``(q - z) * s = (f*q - z8) * s8``, and
    ``f * q`` stays in the 8-bit range (``f * (2**(bits-1) - 1) <= 127``). Returned is
    that 8-bit range, ``lo8 = (qmin8 - z8) * s8``, ``hi8 = (127 - z8) * s8``
    (``qmin8 = -127`` narrow, else ``-128``), in float32 as
    ``tfmot_ext.quantizers`` computes it: a FakeQuant on it leaves the ``bits``-bit
    values where they are, and the TFLite converter stores them as the int8 integers
    ``f * q`` on the scale ``s8``.

    >>> r = nudge(-0.31, 0.31, bits=6, narrow_range=True)   # s = 0.01, z = 0
    >>> lo8, hi8 = int8_embedding_range(r.scale, r.zero_point, 6, narrow_range=True)
    >>> round(float(lo8) / 0.0025, 3), round(float(hi8) / 0.0025, 3)
    (-127.0, 127.0)
    """
    bits = validate_bits(bits)
    if bits >= 8:
        raise ValueError(f"int8_embedding_range: bits={bits}, must be below 8")
    f = np.float32(1 << (8 - bits))
    s8 = (np.asarray(scale, np.float32) / f).astype(np.float32)
    z8 = (np.asarray(zero_point, np.float32) * f).astype(np.float32)
    qmin8 = np.float32(-127.0 if narrow_range else -128.0)
    lo8 = ((qmin8 - z8) * s8).astype(np.float32)
    hi8 = ((np.float32(127.0) - z8) * s8).astype(np.float32)
    return lo8, hi8
