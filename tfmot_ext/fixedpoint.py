"""Fixed-point arithmetic of TFLite's integer kernels, in NumPy (no TensorFlow).

The requantization of an int32 accumulator to int8 is ``x * M`` for a real multiplier
``M``, written as ``M = M0 * 2**(shift - 31)`` with ``M0`` a Q31 int32
(:func:`quantize_multiplier`, TFLite's ``QuantizeMultiplier``) and applied with
gemmlowp's primitives (TFLite ``internal/common.h``):

* ``SRDHM(a, b)`` (:func:`saturating_rounding_doubling_high_mul`):
  ``floor((a * b + 2**30) / 2**31)``, round to nearest, ties up; saturates
  ``INT32_MIN * INT32_MIN`` to ``INT32_MAX``;
* ``RDBPOT(x, e)`` (:func:`rounding_divide_by_pot`): ``x / 2**e`` rounded half away
  from zero;
* ``MBQM(x, M0, s) = RDBPOT(SRDHM(x * 2**max(s, 0), M0), max(-s, 0))``
  (:func:`multiply_by_quantized_multiplier`), and the two other roundings TFLite's
  kernel sets use (:func:`multiply_by_quantized_multiplier_up`,
  :func:`multiply_by_quantized_multiplier_single`); :func:`mbqm` picks one by the
  rounding name of :data:`tfmot_ext.rules.ROUNDINGS`, explicitly.

Every function is pure: integers in, int64 out, no state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from tfmot_ext.errors import IntegerReferenceError
from tfmot_ext.qmath import round_half_away
from tfmot_ext.rules import ROUNDINGS

__all__ = [
    "I64",
    "mbqm",
    "multiply_by_quantized_multiplier",
    "multiply_by_quantized_multiplier_single",
    "multiply_by_quantized_multiplier_up",
    "quantize_multiplier",
    "requant_multiplier",
    "round_to_int32",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
]

_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
I64 = npt.NDArray[np.int64]


def quantize_multiplier(m: npt.ArrayLike) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """TFLite's ``QuantizeMultiplier``: ``m = M0 * 2**(shift - 31)``, ``M0`` a Q31 int32.

    ``(q, shift) = frexp(m)`` with ``q`` in ``[0.5, 1)``; ``M0 = round_half_away(q * 2**31)``
    (``M0 == 2**31`` becomes ``2**30`` with ``shift + 1``); ``shift < -31`` gives
    ``(0, 0)``; ``shift > 30`` saturates to ``(2**31 - 1, 30)``; ``m == 0`` gives ``(0, 0)``.

    >>> quantize_multiplier(0.25)
    (array(1073741824, dtype=int32), array(-1, dtype=int32))
    """
    mm = np.asarray(m, np.float64)
    q, shift = np.frexp(mm)
    m0 = round_half_away(q * 2.0**31)
    over = m0 == 2.0**31
    m0 = np.where(over, m0 / 2, m0)
    shift = np.where(over, shift + 1, shift)
    tiny = shift < -31
    m0 = np.where(tiny, 0, m0)
    shift = np.where(tiny, 0, shift)
    big = shift > 30
    m0 = np.where(big, 2.0**31 - 1, m0)
    shift = np.where(big, 30, shift)
    zero = mm == 0
    return (np.where(zero, 0, m0).astype(np.int32),
            np.where(zero, 0, shift).astype(np.int32))


def requant_multiplier(input_scale: float, kernel_scale: npt.ArrayLike, output_scale: float,
                       per_tensor_fc: bool = False) -> npt.NDArray[np.float64]:
    """The real multiplier ``M = s_in * s_w / s_out`` the way TFLite's kernels compute it.

    From the float32 scales stored in the model, in float64:
    ``double(s_in) * double(s_w) / double(s_out)`` per output channel (Conv2D,
    DepthwiseConv2D, per-channel FullyConnected); a per-tensor FullyConnected takes the
    product in float32 first, ``double(float(s_in * s_w)) / double(s_out)``
    (``GetQuantizedConvolutionMultipler``).

    >>> float(requant_multiplier(0.5, 0.25, 0.0625))
    2.0
    """
    s_in, s_out = np.float32(input_scale), np.float32(output_scale)
    s_w = np.asarray(kernel_scale, np.float32)
    if per_tensor_fc:
        prod = (s_in * s_w).astype(np.float32).astype(np.float64)
    else:
        prod = np.float64(s_in) * s_w.astype(np.float64)
    return np.asarray(prod / np.float64(s_out), np.float64)


def round_to_int32(x: np.ndarray) -> npt.NDArray[np.int32]:
    """``round_half_away(x)`` saturated to int32 (how the converter quantizes biases)."""
    return np.clip(round_half_away(x), -(2**31), 2**31 - 1).astype(np.int32)


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


def mbqm(rounding: str, fc: bool = False) -> Callable[[Any, Any, Any], I64]:
    """The ``MultiplyByQuantizedMultiplier`` of a kernel set (:data:`tfmot_ext.rules.ROUNDINGS`).

    ``"optimized"``: ties of the final shift go up
    (:func:`multiply_by_quantized_multiplier_up`); ``"reference"``: away from zero
    (:func:`multiply_by_quantized_multiplier`), except for FULLY_CONNECTED (``fc``),
    which rounds once (:func:`multiply_by_quantized_multiplier_single`); ``"micro"``
    (TFLite Micro): the double rounding for every operator, FULLY_CONNECTED included
    (tflite-micro ``reference/integer_ops/fully_connected.h`` calls
    ``MultiplyByQuantizedMultiplier``, and its build does not set
    ``TFLITE_SINGLE_ROUNDING``).

    >>> mbqm("reference", fc=True) is multiply_by_quantized_multiplier_single
    True
    >>> mbqm("micro", fc=True) is multiply_by_quantized_multiplier
    True
    """
    if rounding not in ROUNDINGS:
        raise IntegerReferenceError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    if rounding == "optimized":
        return multiply_by_quantized_multiplier_up
    if rounding == "micro":
        return multiply_by_quantized_multiplier
    return multiply_by_quantized_multiplier_single if fc else multiply_by_quantized_multiplier
