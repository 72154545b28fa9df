"""TFLite's int8 SOFTMAX kernels, in NumPy, bit-exact with the interpreter.

Softmax runs over the last axis; int8 in, int8 out with the fixed output quantization
``scale = 1/256, zero_point = -128``. Both kernel sets look only at the differences
``d = q - max(q)`` (``d`` in ``[-255, 0]``), so the input zero point never matters.

**Reference kernels** (``OpResolverType.BUILTIN_REF``): gemmlowp fixed point,
:func:`softmax_reference`. ``SoftmaxPrepare<kReference>`` (``activations.cc``) calls
``PreprocessSoftmaxScaling`` and ``CalculateInputRadius`` (``quantization_util.cc``)::

    M * 2**(ls - 31) = min(double(beta) * double(s_in) * 2**26, 2**31 - 1)
                                              # QuantizeMultiplierGreaterThanOne
    diff_min = -floor(31 * 2**26 / 2**ls)

and ``reference_ops::Softmax`` (``reference/softmax.h``) computes, per row::

    x_c   = SRDHM(d_c * 2**ls, M)                       # Q5.26, for d_c >= diff_min
    e_c   = exp_on_negative_values(x_c)                 # Q0.31 (gemmlowp)
    S     = sum_c RDBPOT(e_c, 12)                       # Q12.19, Rescale<12>
    h     = clz(S);  R = one_over_one_plus_x_for_x_in_0_1(S * 2**h - 2**31)
                                                        # GetReciprocal (common.h)
    out_c = clamp(RDBPOT(SRDHM(R, e_c), 35 - h) - 128, -128, 127)   (-128 if d_c < diff_min)

``SRDHM``/``RDBPOT`` are gemmlowp's ``SaturatingRoundingDoublingHighMul`` and
``RoundingDivideByPOT`` (:mod:`tfmot_ext.fixedpoint`); ``35 - h`` is
``num_bits_over_unit + 31 - 8`` with ``num_bits_over_unit = 12 - h``. TFLite checks
``35 - h <= 31`` (``TFLITE_CHECK``, which aborts the process): a row whose ``S`` reaches
``2**28`` (``512 * exp(0)``, e.g. 512 equal values) cannot run there, and
:func:`softmax_reference` raises :class:`~tfmot_ext.errors.IntegerReferenceError`.

**Optimized kernels** (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``; also ``BUILTIN``, whose
XNNPACK delegate leaves int8 SOFTMAX to them): float32 throughout,
:func:`softmax_optimized`. ``PopulateSoftmaxLookupTable`` and the quantized
``optimized_ops::Softmax`` (``optimized/optimized_ops.h``, the x86 build, where
``TFLITE_SOFTMAX_USE_UINT16_LUT`` is undefined)::

    table[255 - v] = expf(float(-s_in * beta) * v),  v = 0..255        (float32)
    sum   = table[255 + d_0] + table[255 + d_1] + ...                  (float32, in order)
    inv   = 1.0f / (sum * (1/256))                                     (float32)
    out_c = clamp(std::round(table[255 + d_c] * inv) - 128, -128, 127)

``expf`` is the C library's: glibc's (2.28+) as its x86-64 FMA variant computes it, which
:func:`_expf` reproduces bit for bit (the table differs from a correctly rounded
``exp`` in about 0.05% of its arguments).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from tfmot_ext.errors import IntegerReferenceError
from tfmot_ext.fixedpoint import rounding_divide_by_pot as _rdbpot
from tfmot_ext.fixedpoint import saturating_rounding_doubling_high_mul as _srdhm
from tfmot_ext.gemmlowp import exp_on_negative_values, one_over_one_plus_x_for_x_in_0_1

__all__ = ["softmax_optimized", "softmax_reference"]

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

_SCALED_DIFF_INTEGER_BITS = 5  # Q5.26 input of exp_on_negative_values
_ACCUMULATION_INTEGER_BITS = 12  # Q12.19 sum of exps
_OUTPUT_SCALE = np.float32(1.0 / 256)
_OUTPUT_ZERO_POINT = -128


# --- TFLite's parameters (quantization_util.cc) ---

def _preprocess_softmax_scaling(beta: float, input_scale: float) -> tuple[int, int, int]:
    """``(input_multiplier, input_left_shift, diff_min)`` of ``SoftmaxPrepare<kReference>``.

    ``PreprocessSoftmaxScaling(beta, s_in, 5)``: ``min(beta * s_in * 2**26, 2**31 - 1)``
    in double (``beta`` and ``s_in`` are the model's float32 values), split by
    ``QuantizeMultiplier`` (``frexp``, ``round`` half away, ``2**31`` -> ``2**30`` with
    ``shift + 1``; no saturation of ``shift`` at 30, as TFLite builds by default);
    ``diff_min = -CalculateInputRadius(5, shift) = -floor(31 * 2**26 / 2**shift)``.

    >>> _preprocess_softmax_scaling(1.0, 0.0625)
    (1073741824, 23, -248)
    """
    real = min(float(np.float32(beta)) * float(np.float32(input_scale))
               * 2.0 ** (31 - _SCALED_DIFF_INTEGER_BITS), 2.0**31 - 1.0)
    if not real > 1.0:
        raise IntegerReferenceError(f"beta * input_scale = {real / 2**26!r} is too small for "
                         "TFLite's reference SOFTMAX (needs > 2**-26)")
    q, shift = math.frexp(real)
    multiplier = math.floor(q * 2.0**31 + 0.5)  # q * 2**31 is exact; q > 0
    if multiplier == 2**31:
        multiplier //= 2
        shift += 1
    radius_numerator = ((1 << _SCALED_DIFF_INTEGER_BITS) - 1) << (31 - _SCALED_DIFF_INTEGER_BITS)
    return multiplier, shift, -(radius_numerator >> shift)


def _check_input(q: npt.ArrayLike) -> I64:
    arr = np.asarray(q)
    if not np.issubdtype(arr.dtype, np.integer) or arr.ndim < 1 or arr.shape[-1] == 0:
        raise IntegerReferenceError(
            f"softmax needs integers with a non-empty last axis, got {arr.dtype} {arr.shape}")
    if arr.size and (arr.min() < -128 or arr.max() > 127):
        raise IntegerReferenceError("softmax input must be int8 values in [-128, 127]")
    return arr.astype(np.int64)


def softmax_reference(q: np.ndarray, input_scale: float, input_zero_point: int,
                      beta: float = 1.0) -> np.ndarray:
    """TFLite's reference int8 SOFTMAX (``BUILTIN_REF``) over the last axis.

    With ``M * 2**(ls - 31) = min(beta * s_in * 2**26, 2**31 - 1)``,
    ``diff_min = -floor(31 * 2**26 / 2**ls)`` and ``d = q - max(q)`` per row::

        e_c   = exp_on_negative_values(SRDHM(d_c * 2**ls, M))      # Q5.26 -> Q0.31
        S     = sum of RDBPOT(e_c, 12) over d_c >= diff_min         # Q12.19
        h     = clz(S),  R = one_over_one_plus_x_for_x_in_0_1(S * 2**h - 2**31)
        out_c = clamp(RDBPOT(SRDHM(R, e_c), 35 - h) - 128, -128, 127)

    and ``-128`` where ``d_c < diff_min``.

    Args:
        q: int8 values (any integer dtype), softmax over the last axis.
        input_scale: the input tensor's scale (read as float32, like TFLite).
        input_zero_point: the input zero point; it does not change the result.
        beta: the SOFTMAX operator's ``beta`` (float32).

    Returns:
        The int8 output (scale 1/256, zero point -128), the shape of ``q``.

    Raises:
        IntegerReferenceError: non-int8 input, ``beta * s_in <= 2**-26``, or a row whose
            ``S`` reaches ``2**28`` (``512 * exp(0)``, e.g. 512 equal values), where
            TFLite aborts.

    >>> softmax_reference(np.array([[0, 0], [127, -128]]), 0.1, 0).tolist()
    [[0, 0], [127, -128]]
    """
    del input_zero_point  # only differences of inputs enter
    qi = _check_input(q)
    multiplier, left_shift, diff_min = _preprocess_softmax_scaling(beta, input_scale)
    diff = qi - qi.max(axis=-1, keepdims=True)
    valid = diff >= diff_min
    # MultiplyByQuantizedMultiplierGreaterThanOne; |d * 2**ls| < 2**31 where valid
    scaled = _srdhm(np.where(valid, diff, 0) * (1 << left_shift), multiplier)
    exps = exp_on_negative_values(scaled, _SCALED_DIFF_INTEGER_BITS)
    sum_of_exps = np.where(
        valid, _rdbpot(exps, _ACCUMULATION_INTEGER_BITS), 0).sum(axis=-1, keepdims=True)
    # GetReciprocal: S >= 2**19 (the row's max contributes exp(0)), so 1 <= clz(S) <= 12
    headroom_plus_one = 32 - np.frexp(sum_of_exps.astype(np.float64))[1].astype(np.int64)
    shifted_sum_minus_one = (sum_of_exps << headroom_plus_one) - (1 << 31)
    shifted_scale = one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one)
    exponent = _ACCUMULATION_INTEGER_BITS - headroom_plus_one + 31 - 8
    if exponent.size and exponent.max() > 31:
        raise IntegerReferenceError(
            "TFLite's reference SOFTMAX aborts (TFLITE_CHECK(exponent <= 31)) on a row whose "
            "sum of exps reaches 2**28 (512 * exp(0), e.g. 512 equal values)")
    unsat = _rdbpot(_srdhm(shifted_scale, exps), exponent)
    out = np.clip(unsat + _OUTPUT_ZERO_POINT, -128, 127)
    return np.where(valid, out, -128).astype(np.int8)


# --- glibc's expf, as its x86-64 FMA variant rounds it ---

def _two_sum(a: F64, b: F64) -> tuple[F64, F64]:
    """Knuth's TwoSum: ``s = fl(a + b)`` and the exact error ``a + b - s``."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _two_product(a: F64, b: F64) -> tuple[F64, F64]:
    """Dekker's product: ``p = fl(a * b)`` and the exact error ``a * b - p`` (no FMA)."""
    p = a * b
    ca, cb = 134217729.0 * a, 134217729.0 * b  # Veltkamp split, 2**27 + 1
    ah = ca - (ca - a)
    bh = cb - (cb - b)
    al, bl = a - ah, b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _fma(a: npt.ArrayLike, b: npt.ArrayLike, c: npt.ArrayLike) -> F64:
    """``a * b + c`` rounded once (to nearest even), in double; no overflow, no underflow.

    Boldo and Melquiond's emulation: ``uh + ul = a * b`` and ``th + tl = c + uh``
    exactly, ``v = tl + ul`` rounded to odd, result ``fl(th + v)``.
    """
    a64, b64, c64 = (np.asarray(v, np.float64) for v in (a, b, c))
    uh, ul = _two_product(a64, b64)
    th, tl = _two_sum(c64, uh)
    v, err = _two_sum(tl, ul)
    even = (v.view(np.int64) & 1) == 0
    v = np.where((err != 0) & even, np.nextafter(v, np.where(err > 0, np.inf, -np.inf)), v)
    return np.asarray(th + v, np.float64)


#: ``asuint64(2**(i/32)) - (i << 47)``, glibc's ``__exp2f_data.tab``.
_EXP2F_TAB = np.array([
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
], dtype=np.uint64)
_EXPF_N = 32
_INV_LN2_N = float.fromhex("0x1.71547652b82fep+0") * _EXPF_N
_EXPF_SHIFT = float.fromhex("0x1.8p+52")
_EXPF_C0 = float.fromhex("0x1.c6af84b912394p-5") / _EXPF_N**3
_EXPF_C1 = float.fromhex("0x1.ebfce50fac4f3p-3") / _EXPF_N**2
_EXPF_C2 = float.fromhex("0x1.62e42ff0c52d6p-1") / _EXPF_N
_EXPF_OVERFLOW = float.fromhex("0x1.62e42ep6")  # log(2**128)
_EXPF_UNDERFLOW = float.fromhex("-0x1.9fe368p6")  # log(2**-150)


def _expf(x: npt.ArrayLike) -> F32:
    """glibc's ``expf`` (2.28+, ``e_expf.c``), as built for x86-64 with FMA.

    ``k = round(x * 32/ln2)``, ``r = x * 32/ln2 - k``,
    ``expf(x) = float(2**(k/32) * (1 + C2 r + C1 r**2 + C0 r**3))`` with ``2**(k/32)``
    from a 32-entry table; GCC contracts ``x * 32/ln2 + shift``, ``x * 32/ln2 - kd`` and
    the polynomial's multiply-adds into FMAs (each rounded once here, :func:`_fma`).
    ``0`` below ``log(2**-150)``, ``inf`` above ``log(2**128)``.

    >>> _expf(np.float32([0.0, -1.0, -104.0])).tolist()
    [1.0, 0.3678794503211975, 0.0]
    """
    xf = np.asarray(x, np.float32)
    xd = xf.astype(np.float64)
    safe = np.where(np.isfinite(xd) & (xd >= _EXPF_UNDERFLOW) & (xd <= _EXPF_OVERFLOW), xd, 0.0)
    kd = _fma(_INV_LN2_N, safe, _EXPF_SHIFT)
    ki = kd.view(np.uint64)
    kd = kd - _EXPF_SHIFT
    r = _fma(_INV_LN2_N, safe, -kd)
    bits = _EXP2F_TAB[ki % np.uint64(_EXPF_N)] + (ki << np.uint64(52 - 5))  # wraps mod 2**64
    s = bits.view(np.float64)
    z = _fma(_EXPF_C0, r, _EXPF_C1)
    y = _fma(_EXPF_C2, r, 1.0)
    y = _fma(z, r * r, y)
    out = (y * s).astype(np.float32)
    out = np.where(xd < _EXPF_UNDERFLOW, np.float32(0), out)
    out = np.where(xd > _EXPF_OVERFLOW, np.float32(np.inf), out)
    return np.asarray(np.where(np.isnan(xd), np.float32(np.nan), out), np.float32)


def _softmax_lookup_table(input_scale: float, beta: float) -> F32:
    """``PopulateSoftmaxLookupTable``: ``table[255 - v] = expf(float(-s_in * beta) * v)``.

    Every product in float32; ``table[255 + d] = exp(beta * s_in * d)`` for
    ``d = q - max(q)`` in ``[-255, 0]``.

    >>> t = _softmax_lookup_table(0.5, 1.0)
    >>> float(t[255]), float(t[254])
    (1.0, 0.6065306663513184)
    """
    scale = np.float32(-np.float32(input_scale)) * np.float32(beta)
    values = np.arange(256, dtype=np.float32)
    return _expf(np.float32(scale) * values)[::-1].copy()


def softmax_optimized(q: np.ndarray, input_scale: float, input_zero_point: int,
                      beta: float = 1.0) -> np.ndarray:
    """TFLite's optimized int8 SOFTMAX (builtin kernels on x86) over the last axis.

    Float32 throughout, with ``table[255 + d] = expf(float(-s_in * beta) * (-d))``
    (``PopulateSoftmaxLookupTable``) and ``d = q - max(q)`` per row::

        sum   = table[255 + d_0] + table[255 + d_1] + ...    (in order)
        inv   = 1.0f / (sum * (1/256))
        out_c = clamp(round_half_away(table[255 + d_c] * inv) - 128, -128, 127)

    Args:
        q: int8 values (any integer dtype), softmax over the last axis.
        input_scale: the input tensor's scale (read as float32, like TFLite).
        input_zero_point: the input zero point; it does not change the result.
        beta: the SOFTMAX operator's ``beta`` (float32).

    Returns:
        The int8 output (scale 1/256, zero point -128), the shape of ``q``.

    >>> softmax_optimized(np.array([[0, 0], [127, -128]]), 0.1, 0).tolist()
    [[0, 0], [127, -128]]
    """
    del input_zero_point  # only differences of inputs enter
    qi = _check_input(q)
    table = _softmax_lookup_table(input_scale, beta)
    exps = table[255 + qi - qi.max(axis=-1, keepdims=True)]
    total = np.zeros(exps.shape[:-1], np.float32)
    for c in range(exps.shape[-1]):  # float32 adds in the kernel's order
        total = total + exps[..., c]
    inv = np.float32(1.0) / (total * _OUTPUT_SCALE)
    prob = exps * inv[..., None]
    # std::round on float32: half away from zero; prob >= 0 and exact in double
    rounded = np.floor(prob.astype(np.float64) + 0.5).astype(np.int64)
    return np.clip(rounded + _OUTPUT_ZERO_POINT, -128, 127).astype(np.int8)
