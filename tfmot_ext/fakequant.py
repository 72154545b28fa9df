"""The TensorFlow math of the quantizers: FakeQuant and the range functions, in TF ops.

Every function here is the TF twin of a NumPy function of :mod:`tfmot_ext.qmath`
(bit-exact, tests/test_quantizers.py), written with the operations TF's graph
optimizers and the TFLite converter's constant folding leave alone: a constant
reciprocal is multiplied (``x / c`` would be rewritten into ``x * (1 / c)``), a true
division is ``DivNoNan``. :func:`fake_quant_tf` ends in TensorFlow's
``FakeQuantWithMinMaxVars[PerChannel]``, the op the converter reads its quantization
from. All pure functions of their arguments.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfmot_ext import qmath
from tfmot_ext._compat import tf

__all__ = [
    "batch_range",
    "fake_quant_tf",
    "int8_embedding_range_tf",
    "pow2_ceil_tf",
    "power_of_two_range_tf",
    "round_half_away_tf",
    "symmetric_range_tf",
    "to_channels_last",
    "widen_range_tf",
]


def to_channels_last(x: tf.Tensor, axes: tuple[int, ...]) -> tuple[tf.Tensor, Any]:
    """Move ``axes`` to the end and flatten them into one: returns ``(x2, undo)``."""
    rank = x.shape.rank
    perm = [i for i in range(rank) if i not in axes] + list(axes)
    moved = x if perm == list(range(rank)) else tf.transpose(x, perm)
    shape = tf.shape(moved)
    lead = rank - len(axes)
    flat = moved if len(axes) == 1 else tf.reshape(
        moved, tf.concat([shape[:lead], [-1]], axis=0)
    )

    def undo(y: tf.Tensor) -> tf.Tensor:
        y = y if len(axes) == 1 else tf.reshape(y, shape)
        if perm == list(range(rank)):
            return y
        return tf.transpose(y, np.argsort(perm).tolist())

    return flat, undo


def fake_quant_tf(
    x: tf.Tensor,
    x_min: tf.Tensor,
    x_max: tf.Tensor,
    bits: int,
    narrow_range: bool,
    axis: tuple[int, ...] | None,
    embed: bool = False,
) -> tf.Tensor:
    """TensorFlow's FakeQuant, per tensor (``axis=None``) or per channel along ``axis``.

    ``x_min``/``x_max`` are scalars, or vectors of length ``prod(x.shape[a] for a in axis)``.
    With ``embed`` and ``bits < 8``, followed by an 8-bit FakeQuant on the range of
    :func:`tfmot_ext.qmath.int8_embedding_range` (the values stay; the converter then
    stores the ``bits``-bit grid as int8, see :func:`embed_in_int8`).
    NumPy twin: :func:`tfmot_ext.qmath.fake_quant`.
    """
    if axis is None:
        op, flat, undo = tf.quantization.fake_quant_with_min_max_vars, x, None
    else:
        op = tf.quantization.fake_quant_with_min_max_vars_per_channel
        flat, undo = to_channels_last(x, axis)
    y = op(flat, x_min, x_max, num_bits=bits, narrow_range=narrow_range)
    if embed and bits < 8:
        lo8, hi8 = int8_embedding_range_tf(x_min, x_max, bits, narrow_range)
        y = op(y, lo8, hi8, num_bits=8, narrow_range=narrow_range)
    return y if undo is None else undo(y)


def round_half_away_tf(x: tf.Tensor) -> tf.Tensor:
    """:func:`tfmot_ext.qmath.round_half_away` in TF (exact ties corrected)."""
    t = tf.where(x >= 0, tf.floor(x), tf.math.ceil(x))
    tie = tf.abs(x - t) == 0.5
    return tf.where(tie, t + tf.math.sign(x), tf.round(x))


def int8_embedding_range_tf(lo: tf.Tensor, hi: tf.Tensor, bits: int, narrow: bool) -> tuple[
        tf.Tensor, tf.Tensor]:
    """TF twin of ``qmath.int8_embedding_range(*nudge(lo, hi, bits, narrow))`` (float32).

    The b-bit scale is FakeQuant's own, ``(hi - lo) / (quant_max - quant_min)``, as a
    true division: ``DivNoNan``, which TF's constant folding leaves alone (it rewrites a
    ``RealDiv`` by a constant into a reciprocal multiply, one ulp away).
    """
    quant_min, quant_max = np.float32(int(narrow)), np.float32((1 << bits) - 1)
    scale = tf.math.divide_no_nan(hi - lo, quant_max - quant_min)
    zp_from_min = quant_min - tf.math.divide_no_nan(lo, scale)
    zp_u = tf.clip_by_value(round_half_away_tf(zp_from_min), quant_min, quant_max)
    f = np.float32(1 << (8 - bits))
    s8 = scale / f
    z8 = (zp_u - np.float32(1 << (bits - 1))) * f
    qmin8 = np.float32(-127.0 if narrow else -128.0)
    return (qmin8 - z8) * s8, (np.float32(127.0) - z8) * s8


def batch_range(x: tf.Tensor, axis: tuple[int, ...] | None) -> tuple[tf.Tensor, tf.Tensor]:
    """Min and max of ``x``, over everything (per tensor) or per flattened channel."""
    if axis is None:
        return tf.reduce_min(x), tf.reduce_max(x)
    flat, _ = to_channels_last(x, axis)
    reduce = list(range(flat.shape.rank - 1))
    return tf.reduce_min(flat, axis=reduce), tf.reduce_max(flat, axis=reduce)


def symmetric_range_tf(lo: tf.Tensor, hi: tf.Tensor, bits: int, narrow: bool) -> tuple[
    tf.Tensor, tf.Tensor
]:
    qmin, qmax = qmath.integer_range(bits, narrow)
    a = tf.maximum(tf.abs(lo), tf.abs(hi))
    a = tf.maximum(a, np.float32(qmath.MIN_RANGE / 2))
    scale = a * qmath.reciprocal(qmax)
    return scale * np.float32(qmin), scale * np.float32(qmax)


def widen_range_tf(lo: tf.Tensor, hi: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    lo = tf.minimum(lo, 0.0)
    hi = tf.maximum(hi, 0.0)
    return lo, tf.maximum(hi, lo + np.float32(qmath.MIN_RANGE))


def pow2_ceil_tf(s: tf.Tensor) -> tf.Tensor:
    bits_ = tf.bitcast(tf.cast(s, tf.float32), tf.int32)
    exponent = tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits_, 23), 0xFF)
    k = exponent + tf.cast(tf.bitwise.bitwise_and(bits_, 0x7FFFFF) != 0, tf.int32)
    return tf.bitcast(tf.bitwise.left_shift(k, 23), tf.float32)


def power_of_two_range_tf(lo: tf.Tensor, hi: tf.Tensor, bits: int, narrow: bool,
                           symmetric: bool) -> tuple[tf.Tensor, tf.Tensor]:
    qmin, qmax = qmath.integer_range(bits, narrow)
    if symmetric:
        a = tf.maximum(tf.maximum(tf.abs(lo), tf.abs(hi)), np.float32(qmath.MIN_RANGE / 2))
        scale = pow2_ceil_tf(a * qmath.reciprocal(qmax))
        return scale * np.float32(qmin), scale * np.float32(qmax)
    lo, hi = widen_range_tf(lo, hi)
    quant_min, quant_max = np.float32(int(narrow)), np.float32((1 << bits) - 1)
    scale = pow2_ceil_tf((hi - lo) * qmath.reciprocal(quant_max - quant_min))
    zp = tf.clip_by_value(tf.round(quant_min - lo / scale), quant_min, quant_max)
    # as qmath.power_of_two_range: double the scale where the rounded grid falls short
    short = tf.logical_or((quant_min - zp) * scale > lo, (quant_max - zp) * scale < hi)
    scale = tf.where(short, scale * np.float32(2), scale)
    zp = tf.clip_by_value(tf.round(quant_min - lo / scale), quant_min, quant_max)
    return (quant_min - zp) * scale, (quant_max - zp) * scale
