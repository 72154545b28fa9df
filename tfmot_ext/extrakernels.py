"""More of TFLite's int8 kernels in NumPy: transposed convolution, element-wise,
reductions and data movement.

The same contract as :mod:`tfmot_ext.kernels` (a layer's
:class:`~tfmot_ext.params.LayerQuantParams`, its int8 inputs, a
:class:`~tfmot_ext.kernels.Call`; an int8 :class:`~tfmot_ext.kernels.IntTensor` out):

* ``TRANSPOSE_CONV``: every input pixel scatters ``(q_x - z_x) * w`` into the output
  window it reaches (int32), the output cropped by TFLite's padding
  ``floor(max(0, (H - 1) s + k - H_out) / 2)``, then bias and per-channel
  requantization as a convolution's (the optimized kernel rounds channels in SIMD
  groups of 8 as the optimized depthwise does);
* ``SUB``: ``ADD``'s arithmetic with the second input negated;
* ``MAXIMUM``/``MINIMUM``: the converter gives inputs and output one scale (a QUANTIZE
  in front of an input at another scale), then the integers' max/min;
* ``ReLU(max_value=m)``, ``m != 6``: ``MINIMUM`` with ``m`` at the input's scale, then
  ``RELU`` (:func:`_relu`);
* ``hard_sigmoid`` arrives as ``x * 1.2``, ``+ 3``, ReLU6, ``* (1/6)``
  (:func:`tfmot_ext.rewrites.hard_sigmoid_as_ops`): MUL, ADD and RELU6 kernels;
* ``LEAKY_RELU``: ``q - z_x`` requantized to the output with ``M = s_x / s_y`` where it
  is >= 0, with ``M = s_x * alpha / s_y`` where it is < 0 (float32 products, as
  TFLite's ``Prepare``), plus ``z_y``;
* ``PRELU``: the same with a per-element int8 alpha (:func:`prelu`);
* ``GELU``: a 256-entry table like LOGISTIC's (:func:`tfmot_ext.kernels.activation_lut`);
* ``MEAN`` (global average pooling, 1-D and 2-D): the sum of ``q - z_x`` requantized
  with the division folded into the multiplier (:func:`mean_multiplier`), and the
  optimized kernel's keep-dims form;
* ``REDUCE_MAX`` (global max pooling): the integers' max, at the input's scale;
* the 1-D pooling, padding, cropping and up-sampling layers: their 2-D twin's kernel on
  ``(N, 1, L, C)`` (:data:`tfmot_ext.rules.ONE_D_TWINS`), what TFLite runs;
* ``RESIZE_BILINEAR`` for bilinear ``UpSampling2D``/``Resizing`` (:func:`resize_bilinear`:
  10-bit fixed-point taps, both kernel sets);
* ``RESIZE_NEAREST_NEIGHBOR`` for ``UpSampling2D(interpolation="nearest")`` (each
  integer repeated) and ``Resizing(interpolation="nearest")``
  (:func:`nearest_indices`); ``TRANSPOSE`` (``Permute``); a reshape ``TensorOp``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from tfmot_ext.errors import IntegerReferenceError
from tfmot_ext.fixedpoint import (
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_up,
    quantize_multiplier,
)
from tfmot_ext.kernels import (
    NARY,
    UNARY,
    Call,
    IntTensor,
    _check_weighted,
    _finish,
    add_sub,
    lookup_table,
    pair,
    requantize,
)
from tfmot_ext.params import LayerQuantParams, TensorQuant
from tfmot_ext.qmath import round_half_away
from tfmot_ext.rules import ONE_D_TWINS, relu_cap, twin_2d_config

__all__ = [
    "MORE_NARY",
    "MORE_UNARY",
    "deconv_output_length",
    "gelu_lut",
    "leaky_relu",
    "mean_multiplier",
    "nearest_indices",
    "prelu",
    "resize_bilinear",
    "transpose_conv_accumulator",
]


def deconv_output_length(size: int, k: int, padding: str, stride: int,
                         output_padding: int | None = None) -> int:
    """Keras's output length of a transposed convolution (``conv_utils``).

    >>> deconv_output_length(4, 3, "same", 2), deconv_output_length(4, 2, "valid", 3)
    (8, 12)
    """
    if output_padding is None:
        return size * stride + (max(k - stride, 0) if padding == "valid" else 0)
    pad = k // 2 if padding == "same" else 0
    return (size - 1) * stride + k - 2 * pad + output_padding


def transpose_conv_accumulator(xs: np.ndarray, kernel: np.ndarray, strides: tuple[int, int],
                               padding: str, output_padding: Any = None) -> np.ndarray:
    """TFLite's int8 ``TRANSPOSE_CONV`` accumulator (``reference_integer_ops``).

    ``xs``: the input minus its zero point ``(N, H, W, I)``; ``kernel``: Keras's
    ``(kh, kw, O, I)`` integers. Every input pixel ``(y, x)`` adds ``xs[y, x] @ w[i, j].T``
    at output ``(y s_h - p_h + i, x s_w - p_w + j)``; the output is Keras's size
    (:func:`deconv_output_length`) and ``p = floor(max(0, (H - 1) s + k - H_out) / 2)``.
    """
    k = kernel.astype(np.int64)
    kh, kw = k.shape[:2]
    sh, sw = strides
    oph, opw = (None, None) if output_padding is None else pair(output_padding)
    n, h, w, _ = xs.shape
    out_h = deconv_output_length(h, kh, padding, sh, oph)
    out_w = deconv_output_length(w, kw, padding, sw, opw)
    pad_h = max(0, (h - 1) * sh + kh - out_h) // 2
    pad_w = max(0, (w - 1) * sw + kw - out_w) // 2
    buf = np.zeros((n, max((h - 1) * sh + kh, pad_h + out_h),
                    max((w - 1) * sw + kw, pad_w + out_w), k.shape[2]), np.int64)
    for i in range(kh):
        for j in range(kw):
            buf[:, i:i + (h - 1) * sh + 1:sh, j:j + (w - 1) * sw + 1:sw] += np.einsum(
                "nhwc,oc->nhwo", xs.astype(np.int64), k[i, j])
    return buf[:, pad_h:pad_h + out_h, pad_w:pad_w + out_w]


def _transpose_conv(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    _check_weighted(p, x, call.where)
    assert p.kernel_int is not None
    c = p.config
    if pair(c.get("dilation_rate")) != (1, 1):
        raise IntegerReferenceError(f"{call.where}: dilated transposed convolutions have no "
                                    "kernel in the reference")
    acc = transpose_conv_accumulator(x.values.astype(np.int64) - x.zero_point, p.kernel_int,
                                     pair(c.get("strides")),
                                     str(c.get("padding", "valid")).lower(),
                                     c.get("output_padding"))
    # the optimized kernel requantizes channels in SIMD groups of 8 (ties up) and the
    # rest with the scalar MultiplyByQuantizedMultiplier (ties away from zero), as the
    # optimized depthwise does (measured: 3 channels all scalar, 8 channels all grouped)
    return _finish(p, acc, call, depthwise=True)


def _output_scale(p: LayerQuantParams, xs: list[IntTensor], call: Call) -> tuple[float, int]:
    if p.output is not None:
        return p.output.scale, p.output.zero_point
    return xs[0].scale, xs[0].zero_point


def _max_min(p: LayerQuantParams, xs: list[IntTensor], call: Call, fn: Any) -> IntTensor:
    """MAXIMUM / MINIMUM of two (or, chained, more) tensors at one scale."""
    s, z = _output_scale(p, xs, call)
    vals = [requantize(t, s, z, call.rounding).values for t in xs]
    out = vals[0]
    for v in vals[1:]:
        out = fn(out, v)
    return IntTensor(np.asarray(out, np.int8), s, z)


def leaky_relu(x: IntTensor, alpha: float, scale: float, zero_point: int) -> IntTensor:
    """TFLite's int8 ``LEAKY_RELU`` (``reference_ops::QuantizeLeakyRelu``; both kernel
    sets run it).

    ``d = q - z_x``; ``q_y = clamp(z_y + MBQM(d, M_id), -128, 127)`` where ``d >= 0``,
    ``z_y + MBQM(d, M_alpha)`` where ``d < 0``, with ``M_id = f32(s_x / s_y)`` and
    ``M_alpha = f32(f32(s_x * alpha) / s_y)``.

    >>> t = leaky_relu(IntTensor(np.array([-10, 0, 10], np.int8), 0.1, 0), 0.5, 0.1, 0)
    >>> t.values.tolist()
    [-5, 0, 10]
    """
    f32 = np.float32
    m_id = quantize_multiplier(np.float64(f32(f32(x.scale) / f32(scale))))
    m_alpha = quantize_multiplier(np.float64(f32(f32(f32(x.scale) * f32(alpha)) / f32(scale))))
    d = x.values.astype(np.int64) - x.zero_point
    pos = multiply_by_quantized_multiplier(d, *m_id)
    neg = multiply_by_quantized_multiplier(d, *m_alpha)
    y = np.where(d >= 0, pos, neg) + zero_point
    return IntTensor(np.clip(y, -128, 127).astype(np.int8), scale, zero_point)


def _leaky(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    c = p.config
    if p.kind == "LeakyReLU":
        alpha = float(c.get("alpha", 0.3))
    else:  # ReLU(negative_slope=a): tf.nn.leaky_relu without a cap or threshold
        if c.get("max_value") is not None or c.get("threshold"):
            raise IntegerReferenceError(
                f"{call.where}: ReLU with a negative slope and a cap or threshold has no "
                "TFLite int8 kernel in the reference")
        alpha = float(c.get("negative_slope", 0.0))
    s, z = _output_scale(p, [x], call)
    return leaky_relu(x, alpha, s, z)


def prelu(x: IntTensor, alpha: IntTensor, scale: float, zero_point: int,
          rounding: str = "reference") -> IntTensor:
    """TFLite's int8 ``PRELU`` (``reference_ops::Prelu`` / ``BroadcastPrelu4DSlow``, both
    kernel sets): ``d = q - z_x``; ``q_y = clamp(z_y + MBQM(d, M_1), -128, 127)`` where
    ``d >= 0``, ``z_y + MBQM(d (q_a - z_a), M_2)`` where ``d < 0``, with
    ``M_1 = f32(s_x / s_y)`` and ``M_2 = f32(f32(s_x s_a) / s_y)`` (float32 products, as
    ``PreluPrepare``; TFLite Micro, ``rounding="micro"``, divides in double:
    ``M_1 = s_x / s_y``, ``M_2 = s_x s_a / s_y``); ``alpha`` broadcasts over the batch
    and its shared axes.

    >>> a = IntTensor(np.array([64], np.int8), 0.5 / 64, 0)
    >>> prelu(IntTensor(np.array([-10, 0, 10], np.int8), 0.1, 0), a, 0.1, 0).values.tolist()
    [-5, 0, 10]
    """
    f32, f64 = np.float32, np.float64
    if rounding == "micro":
        m_1 = quantize_multiplier(f64(f32(x.scale)) / f64(f32(scale)))
        m_2 = quantize_multiplier(f64(f32(x.scale)) * f64(f32(alpha.scale)) / f64(f32(scale)))
    else:
        m_1 = quantize_multiplier(f64(f32(f32(x.scale) / f32(scale))))
        m_2 = quantize_multiplier(f64(f32(f32(f32(x.scale) * f32(alpha.scale)) / f32(scale))))
    d = x.values.astype(np.int64) - x.zero_point
    a = alpha.values.astype(np.int64) - alpha.zero_point
    pos = multiply_by_quantized_multiplier(d, *m_1)
    neg = multiply_by_quantized_multiplier(d * a, *m_2)
    y = np.where(d >= 0, pos, neg) + zero_point
    return IntTensor(np.clip(y, -128, 127).astype(np.int8), scale, zero_point)


def _prelu(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    if p.kernel_int is None or p.kernel_scale is None:
        raise IntegerReferenceError(
            f"{call.where}: PReLU without a quantized alpha (TFLite's PRELU reads an int8 "
            "alpha); quantize the model with tfmot_ext.quantize")
    zp = int(np.ravel(p.kernel_zero_point)[0]) if p.kernel_zero_point is not None else 0
    alpha = IntTensor(p.kernel_int, float(np.ravel(p.kernel_scale)[0]), zp)
    s, z = _output_scale(p, [x], call)
    return prelu(x, alpha, s, z, call.rounding)


def gelu_lut(in_scale: float, in_zero_point: int, out_scale: float, out_zero_point: int,
             approximate: bool = False) -> np.ndarray:
    """TFLite's int8 ``GELU`` table (:func:`tfmot_ext.kernels.lookup_table`) of
    ``f(v) = 0.5 v (1 + erf(v / sqrt 2))``
    (``approximate``: ``0.5 v (1 + tanh(sqrt(2 / pi) (v + 0.044715 v^3)))``) in float32.

    >>> int(gelu_lut(0.1, 0, 0.1, 0)[0 + 128]), int(gelu_lut(0.1, 0, 0.1, 0)[100 + 128])
    (0, 100)
    """
    f32 = np.float32

    def gelu(d: np.ndarray) -> np.ndarray:
        if approximate:
            inner = f32(math.sqrt(2 / math.pi)) * (d + f32(0.044715) * d * d * d)
            return (f32(0.5) * d * (f32(1) + np.tanh(inner.astype(f32)))).astype(f32)
        erf = np.array([math.erf(float(v) * math.sqrt(0.5)) for v in d], np.float32)
        return (f32(0.5) * d * (f32(1) + erf)).astype(f32)

    return lookup_table(gelu, in_scale, in_zero_point, out_scale, out_zero_point)


def _activation(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    """An Activation layer: gelu as TFLite's GELU table, others as
    :mod:`tfmot_ext.kernels` runs them."""
    if p.config.get("activation") != "gelu":
        return UNARY["Activation"](p, x, call)
    s, z = _output_scale(p, [x], call)
    table = gelu_lut(x.scale, x.zero_point, s, z)
    return IntTensor(table[x.values.astype(np.int64) + 128], s, z)


def _relu(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    """``ReLU``: with a negative slope TFLite's LEAKY_RELU; with a cap ``m`` other than 6
    what the converter lowers it to, ``MINIMUM(x, m)`` at the input's quantization (the
    constant ``q_m = clamp(z_x + round_half_away(f32(m) / f32(s_x)), -128, 127)``), then
    RELU (:mod:`tfmot_ext.kernels`: a clamp, or a requantizing RELU where the layer has
    its own output scale). The input is on ``[0, m]`` (the converter's range for it,
    which annotate has QAT train), so the MINIMUM is a step TFLite materializes."""
    c = p.config
    if c.get("negative_slope"):
        return _leaky(p, x, call)
    cap = relu_cap("ReLU", c)
    if cap is None:
        return UNARY["ReLU"](p, x, call)
    q_m = x.zero_point + int(round_half_away(np.float32(cap) / np.float32(x.scale)))
    capped = IntTensor(np.minimum(x.values, np.clip(q_m, -128, 127)).astype(np.int8),
                       x.scale, x.zero_point)
    y = UNARY["ReLU"](dataclasses.replace(p, config={**c, "max_value": None}), capped, call)
    return dataclasses.replace(y, steps=(capped,))


def mean_multiplier(in_scale: float, out_scale: float, n: int) -> tuple[int, int]:
    """TFLite's integer ``MEAN`` multiplier (``reference_integer_ops::Mean``): ``(M0, e)``
    of ``s_in / s_out`` (double), then ``k = min(63 - clz64(n), 32, 31 + e)``,
    ``M0' = floor(M0 * 2**k / n)``, ``e' = e - k``: the division by ``n`` folded into the
    multiplier in integers (measured against the interpreter on a GlobalAveragePooling1D:
    ``quantize_multiplier(s_in / (n s_out))`` was 1 LSB off on 3 % of the outputs).

    >>> mean_multiplier(0.5, 0.5, 4)   # M0 = 2**30, e = 1; k = 2: 2**32 / 4, e' = -1
    (1073741824, -1)
    """
    m0, e = (int(v) for v in quantize_multiplier(np.float64(np.float32(in_scale))
                                                  / np.float64(np.float32(out_scale))))
    k = min(int(n).bit_length() - 1, 32, 31 + e)
    return (m0 << k) // int(n), e - k


def _global_avg_pool(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    """TFLite int8 ``MEAN`` over H and W (L): what GlobalAveragePooling2D (1D) converts to.

    ``acc = sum(q_in - z_in)`` over the ``n = H * W`` (``L``) elements (int32), then one
    requantization that folds the division in (:func:`mean_multiplier`),
    ``q_out = clamp(MBQM(acc, M0', e') + z_out, -128, 127)``.
    """
    if p.output is None:
        raise IntegerReferenceError(f"{call.where}: output is not quantized")
    if p.config.get("keepdims", False) and call.rounding == "optimized":
        return _mean_keepdims(x, p.output, call)
    v = x.values.astype(np.int64) - x.zero_point
    axes = tuple(range(1, v.ndim - 1))  # H, W (L for GlobalAveragePooling1D)
    n = int(np.prod([v.shape[a] for a in axes]))
    acc = v.sum(axis=axes, keepdims=bool(p.config.get("keepdims", False)))
    m0, shift = mean_multiplier(x.scale, p.output.scale, n)
    out = multiply_by_quantized_multiplier(acc, m0, shift) + p.output.zero_point
    return IntTensor(np.clip(out, -128, 127).astype(np.int8), p.output.scale,
                     p.output.zero_point)


def _mean_keepdims(x: IntTensor, out: TensorQuant, call: Call) -> IntTensor:
    """TFLite's optimized int8 ``MEAN`` over H, W of a 4-D tensor with keep-dims
    (``optimized_integer_ops::Mean``; the reference kernels take the integer path of
    :func:`_global_avg_pool`, measured).

    ``acc = sum(q_in)`` (raw values), rounded once to ``M = f32(s_in / (n * s_out))``
    (:func:`multiply_by_quantized_multiplier_up`), plus
    ``z_out - round(f32(z_in * s_in) / s_out)``: the input zero point's share rounded on
    its own, so the result can sit one LSB off the rounded mean (measured: 1 LSB on half
    the elements against the QAT model's fake-quantized mean), which is why
    :func:`tfmot_ext.rewrites.mean_without_keepdims` avoids this op.
    """
    f32 = np.float32
    if x.values.ndim != 4:
        raise IntegerReferenceError(f"{call.where}: keep-dims mean of a rank-{x.values.ndim} "
                                    "tensor")
    n = x.values.shape[1] * x.values.shape[2]
    acc = x.values.astype(np.int64).sum(axis=(1, 2), keepdims=True)
    m0, shift = quantize_multiplier(np.float64(f32(f32(x.scale) / (f32(n) * f32(out.scale)))))
    share = f32(f32(x.zero_point * f32(x.scale)) / f32(out.scale))
    share = np.trunc(share + (f32(0.5) if share > 0 else f32(-0.5)))
    q = multiply_by_quantized_multiplier_up(acc, m0, shift) + out.zero_point - int(share)
    return IntTensor(np.clip(q, -128, 127).astype(np.int8), out.scale, out.zero_point)


def _global_max(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    """``REDUCE_MAX`` over the spatial axes (keep-dims as configured), at the input's
    scale (a QUANTIZE to an output of its own is
    :func:`tfmot_ext.reference.layer_output`'s, as for every pass-through layer)."""
    axes = tuple(range(1, x.values.ndim - 1))
    return IntTensor(x.values.max(axis=axes, keepdims=bool(p.config.get("keepdims", False))),
                     x.scale, x.zero_point)


def _as_2d(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    """A 1-D layer by its 2-D twin's kernel on ``(N, 1, L, C)``."""
    twin, cfg = twin_2d_config(p.kind, dict(p.config))
    kernel = MORE_UNARY.get(str(twin)) or UNARY.get(str(twin))
    if kernel is None:
        raise IntegerReferenceError(f"{call.where}: no kernel for {p.kind}'s 2-D twin {twin}")
    v = x.values
    y = kernel(dataclasses.replace(p, kind=str(twin), config=cfg),
               dataclasses.replace(x, values=v[:, None]), call)
    # the steps TFLite materializes: the input expanded to 4-D, the 2-D op's own
    return dataclasses.replace(y, values=y.values[:, 0], steps=(x, *(
        dataclasses.replace(s, values=s.values[:, 0]) for s in y.steps)))


def _upsampling(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    """UpSampling2D to ``(f_h H, f_w W)``: nearest as RESIZE_NEAREST_NEIGHBOR
    (:func:`nearest_indices` of an integer factor: row ``i // f_h``, each integer
    repeated), bilinear as RESIZE_BILINEAR with half-pixel centres
    (:func:`resize_bilinear`)."""
    interpolation = str(p.config.get("interpolation", "nearest"))
    fh, fw = pair(p.config.get("size"), 2)
    h, w = x.values.shape[1:3]
    if interpolation == "bilinear":
        return IntTensor(resize_bilinear(x.values, h * fh, w * fw), x.scale, x.zero_point)
    if interpolation != "nearest":
        raise IntegerReferenceError(f"{call.where}: the reference has no kernel for "
                                    f"UpSampling2D(interpolation='{interpolation}')")
    return _resize_nearest(x, h * fh, w * fw)


def _bilinear_taps(size_in: int, size_out: int, align_corners: bool,
                   half_pixel_centers: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lower, upper, w)`` of each output index for :func:`resize_bilinear`: the source
    position ``s`` in 1/1024 units, ``lower = max(s / 1024, 0)``, ``upper = min(ceil,
    size_in - 1)`` (C division, towards zero), ``w = s - 1024 lower`` the upper tap's
    weight."""
    if align_corners and size_out > 1:
        scale = ((1 << 10) * (size_in - 1) + (size_out - 1) // 2) // (size_out - 1)
    else:
        scale = ((1 << 10) * size_in + size_out // 2) // size_out
    v = np.arange(size_out, dtype=np.int64)
    pos = v * scale + (scale // 2 - (1 << 9) if half_pixel_centers else 0)
    lower = np.maximum(np.fix(pos / (1 << 10)).astype(np.int64), 0)
    upper = np.minimum(np.fix((pos + (1 << 10) - 1) / (1 << 10)).astype(np.int64), size_in - 1)
    return lower, upper, pos - (1 << 10) * lower


def resize_bilinear(q: np.ndarray, height: int, width: int, align_corners: bool = False,
                    half_pixel_centers: bool = True) -> np.ndarray:
    """TFLite's int8 ``RESIZE_BILINEAR`` (``reference_ops::ResizeBilinearInteger``, which
    the optimized kernels call for int8): input and output at one scale, the raw
    integers interpolated in 10-bit fixed point.

    Per axis (:func:`_bilinear_taps`) ``scale = (1024 in + out // 2) // out`` (with
    ``align_corners``: ``(1024 (in - 1) + (out - 1) // 2) // (out - 1)``), source
    ``s = i scale (+ scale // 2 - 512`` with half-pixel centres), taps ``y0, y1`` and
    weights ``1024 - w, w``; ``acc = sum q[y, x] w_y w_x`` (int64) and
    ``q_out = trunc((acc + sign(acc) 2**19) / 2**20)``: rounded half away from zero.
    What Keras's bilinear ``UpSampling2D`` and ``Resizing`` convert to: half-pixel
    centres, no corner alignment.

    >>> tuple(resize_bilinear(np.array([[[[127], [-128]], [[64], [0]]]], np.int8), 4, 6,
    ...                       half_pixel_centers=False)[0, 1, :, 0].tolist())
    (96, 42, -11, -64, -64, -64)
    """
    y0, y1, wy = _bilinear_taps(q.shape[1], height, align_corners, half_pixel_centers)
    x0, x1, wx = _bilinear_taps(q.shape[2], width, align_corners, half_pixel_centers)
    v = q.astype(np.int64)
    one = 1 << 10
    wy0, wy1 = (one - wy)[None, :, None, None], wy[None, :, None, None]
    wx0, wx1 = (one - wx)[None, None, :, None], wx[None, None, :, None]
    acc = (v[:, y0][:, :, x0] * wy0 * wx0 + v[:, y1][:, :, x0] * wy1 * wx0
           + v[:, y0][:, :, x1] * wy0 * wx1 + v[:, y1][:, :, x1] * wy1 * wx1)
    half = np.where(acc > 0, 1 << 19, -(1 << 19))
    return np.fix((acc + half) / (1 << 20)).astype(np.int64).astype(np.int8)


def nearest_indices(size_in: int, size_out: int, half_pixel_centers: bool = True
                    ) -> np.ndarray:
    """TFLite's ``RESIZE_NEAREST_NEIGHBOR`` source index of each output index (float32,
    ``align_corners=False``): ``min(floor((i + 0.5) * in / out), in - 1)`` with half-pixel
    centres (what Keras's ``Resizing`` converts to), ``floor(i * in / out)`` without.

    >>> nearest_indices(4, 8).tolist(), nearest_indices(5, 3).tolist()
    ([0, 0, 1, 1, 2, 2, 3, 3], [0, 2, 4])
    """
    f32 = np.float32
    scale = f32(f32(size_in) / f32(size_out))
    offset = f32(0.5) if half_pixel_centers else f32(0.0)
    i = (np.arange(size_out, dtype=np.float32) + offset) * scale
    return np.clip(np.floor(i.astype(np.float32)).astype(np.int64), 0, size_in - 1)


def _resizing(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    """Resizing: nearest as RESIZE_NEAREST_NEIGHBOR (integers moved), bilinear as
    RESIZE_BILINEAR (:func:`resize_bilinear`), both with half-pixel centres."""
    c = p.config
    interpolation = str(c.get("interpolation", "bilinear"))
    if interpolation not in ("nearest", "bilinear") or c.get("crop_to_aspect_ratio"):
        raise IntegerReferenceError(
            f"{call.where}: the reference has kernels for Resizing(interpolation='nearest'"
            f"|'bilinear') without crop_to_aspect_ratio, not '{interpolation}'")
    if interpolation == "bilinear":
        return IntTensor(resize_bilinear(x.values, int(c["height"]), int(c["width"])),
                         x.scale, x.zero_point)
    return _resize_nearest(x, int(c["height"]), int(c["width"]))


def _resize_nearest(x: IntTensor, height: int, width: int) -> IntTensor:
    """RESIZE_NEAREST_NEIGHBOR with half-pixel centres: the integers moved, same scale."""
    hi = nearest_indices(x.values.shape[1], height)
    wi = nearest_indices(x.values.shape[2], width)
    return IntTensor(x.values[:, hi][:, :, wi], x.scale, x.zero_point)


def _permute(p: LayerQuantParams, x: IntTensor, call: Call) -> IntTensor:
    dims = [int(d) for d in p.config.get("dims", ())]
    return IntTensor(np.transpose(x.values, (0, *dims)), x.scale, x.zero_point)


def _tensor_op(p: LayerQuantParams, xs: list[IntTensor], call: Call) -> IntTensor:
    """A TensorOp: ``reshape`` moves the integers; the others as
    :mod:`tfmot_ext.kernels` runs them."""
    op = p.config.get("op", {})
    fn = op.get("config", {}).get("function") if isinstance(op, dict) else None
    shape = p.config.get("op_kwargs", {}).get("shape")
    if fn == "reshape" and len(xs) == 1 and isinstance(shape, (list, tuple)):
        x = xs[0]
        return IntTensor(x.values.reshape([int(d) for d in shape]), x.scale, x.zero_point)
    return NARY["TensorOp"](p, xs, call)


#: one-input layer kinds this module runs (on top of :data:`tfmot_ext.kernels.UNARY`)
MORE_UNARY = {
    "Conv2DTranspose": _transpose_conv,
    "LeakyReLU": _leaky, "ReLU": _relu, "PReLU": _prelu, "Activation": _activation,
    "GlobalMaxPooling1D": _global_max, "GlobalMaxPooling2D": _global_max,
    "GlobalAveragePooling1D": _global_avg_pool, "GlobalAveragePooling2D": _global_avg_pool,
    "UpSampling2D": _upsampling, "Permute": _permute, "Resizing": _resizing,
    **{k: _as_2d for k, twin in ONE_D_TWINS.items() if twin is not None and twin in
       {"MaxPooling2D", "AveragePooling2D", "ZeroPadding2D", "Cropping2D", "UpSampling2D"}},
}
#: several-input layer kinds this module runs
MORE_NARY = {
    "Subtract": lambda p, xs, c: add_sub(p, xs, c, subtract=True),
    "Maximum": lambda p, xs, c: _max_min(p, xs, c, np.maximum),
    "Minimum": lambda p, xs, c: _max_min(p, xs, c, np.minimum),
    "TensorOp": _tensor_op,
}
