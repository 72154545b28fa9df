"""The result types of extraction: what a deployed layer is, as integers and scales.

:class:`QuantizedModelParams` maps layer names to :class:`LayerQuantParams`, each
holding the integer kernel, int32 bias, tensor quantizations (:class:`TensorQuant`) and
requantization multipliers of one layer; :func:`as_deployed` gives a layer in the form
TFLite deploys it. NumPy only (no TensorFlow): these types are read by export, the
integer reference and the parity checks alike.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfmot_ext import qmath
from tfmot_ext.errors import ExtractionError
from tfmot_ext.fixedpoint import quantize_multiplier, requant_multiplier, round_to_int32
from tfmot_ext.rules import EXACT_WEIGHT_BITS, deployed_kind

__all__ = [
    "LayerQuantParams",
    "QuantizedModelParams",
    "TensorQuant",
    "as_deployed",
    "bias_and_requant",
    "channels_last",
    "from_channels_last",
    "per_output_channel",
]


@dataclass(frozen=True)
class TensorQuant:
    """Scale and zero point of a tensor between layers (per tensor).

    ``scale`` and ``zero_point`` are the deployed ones: the TFLite converter's
    float64 derivation from the trained range (:func:`tfmot_ext.qmath.converter_params`),
    stored as float32, exactly what the ``.tflite`` file holds. ``min``/``max`` are the
    range TF's FakeQuant used in training after nudging; ``range_min``/``range_max``
    the range handed to it (trained, before nudging).

    Invariants: ``qmin <= zero_point <= qmax`` of ``bits``; ``scale > 0``;
    ``range_min <= min <= 0 <= max`` up to one step; ``scale`` is within one float32
    ulp of TF's training scale ``(max - min) / (2**bits - 1)``, except for a range not
    wider than :data:`tfmot_ext.qmath.CONVERTER_MIN_RANGE` (a dead ReLU), which the
    converter widens first (up to 1.5 times that scale).
    """

    scale: float
    zero_point: int
    bits: int
    min: float
    max: float
    range_min: float
    range_max: float

    @property
    def exact_scale(self) -> float:
        """The converter's float64 scale (``scale`` is its float32 rounding)."""
        return float(qmath.converter_params(self.range_min, self.range_max, self.bits)[0])


@dataclass(frozen=True)
class LayerQuantParams:
    """The quantized parameters of one layer.

    Invariants (asserted by ``tests/test_extract.py``):

    * ``kernel_int`` has the Keras layout of the kernel, dtype int8 for ``bits <= 8``
      and int16 up to 16, every value in ``[qmin, qmax]`` of ``bits``/``narrow_range``;
    * ``(kernel_int - kernel_zero_point) * fake_quant_scale`` (float32, broadcast along
      ``axis``) equals the layer's weight quantizer's fake-quant output bit for bit;
    * ``kernel_scale`` is the deployed scale (the TFLite converter's float64 derivation
      from the trained range, as float32: what the ``.tflite`` stores) and is within one
      float32 ulp of ``fake_quant_scale`` (TF's float32 arithmetic in training), except
      on a channel whose range is not wider than
      :data:`tfmot_ext.qmath.CONVERTER_MIN_RANGE` (the converter widens it first);
    * ``bias_scale == float32(input.exact_scale * exact kernel scale)`` (within one ulp
      of ``input_scale * output_channel_scale``) and
      ``|bias_int * bias_scale - bias| <= bias_scale / 2`` unless int32 saturates;
    * ``multiplier == requant_multiplier(input_scale, output_channel_scale,
      output_scale)`` (float64, TFLite's formula) and ``multiplier_q31 * 2**(shift - 31)``
      equals it within ``2**-31`` relative.

    Fields that do not apply are None (a float layer has only ``weights``).

    Attributes:
        name: layer name in the QAT model.
        kind: class name of the (inner) layer.
        inputs: names of the layers feeding it.
        quantized: whether any tensor of the layer is quantized.
        folded: whether BatchNormalization is folded into the kernel.
        activation: the fused activation ("linear", "relu", "relu6", ...).
        bits, symmetric, narrow_range, axis: the kernel quantizer's settings; ``axis``
            is the channel axis tuple in the Keras layout, None per tensor.
        kernel_attr: which weight attribute is the kernel.
        kernel_int, kernel_scale, kernel_zero_point: the integer kernel (deployed scale).
        fake_quant_scale: the scale TF's FakeQuant used in training (float32).
        bias, bias_int, bias_scale: float bias and its int32 form.
        input, output: quantization of the input and output tensors.
        multiplier, multiplier_q31, shift: requantization, per output channel.
        weights: every float weight of the layer, by short name.
        note: why a wrapped layer is reported as float (e.g. an unreadable config).
        config: the Keras config of the op (strides, padding, pool size, ...); for a
            folded layer, that of the Conv/Depthwise/Dense it folds into plus
            ``batchnorm_epsilon``.
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    quantized: bool
    folded: bool = False
    activation: str = "linear"
    bits: int | None = None
    symmetric: bool | None = None
    narrow_range: bool | None = None
    axis: tuple[int, ...] | None = None
    kernel_attr: str | None = None
    kernel_int: np.ndarray | None = None
    kernel_scale: np.ndarray | None = None
    kernel_zero_point: np.ndarray | None = None
    fake_quant_scale: np.ndarray | None = None
    bias: np.ndarray | None = None
    bias_int: np.ndarray | None = None
    bias_scale: np.ndarray | None = None
    input: TensorQuant | None = None
    output: TensorQuant | None = None
    multiplier: np.ndarray | None = None
    multiplier_q31: np.ndarray | None = None
    shift: np.ndarray | None = None
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    note: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def input_scale(self) -> float | None:
        return None if self.input is None else self.input.scale

    @property
    def input_zero_point(self) -> int | None:
        return None if self.input is None else self.input.zero_point

    @property
    def output_scale(self) -> float | None:
        return None if self.output is None else self.output.scale

    @property
    def output_zero_point(self) -> int | None:
        return None if self.output is None else self.output.zero_point

    @property
    def output_channel_scale(self) -> np.ndarray | None:
        """``kernel_scale`` indexed by output channel (bias and multiplier use this).

        Equal to ``kernel_scale`` except for a depthwise kernel quantized per
        multiplier index only (tfmot's per-axis quantizer), whose ``M`` scales repeat
        over the ``C`` input channels.
        """
        if self.kernel_scale is None or self.kernel_int is None or self.kernel_attr is None:
            return None
        return per_output_channel(self.kernel_scale, self.kernel_int.shape, self.kernel_attr,
                                   self.axis)

    def dequantized_kernel(self) -> np.ndarray:
        """``(kernel_int - zero_point) * fake_quant_scale`` in float32, along ``axis``.

        Bit for bit the weight quantizer's fake-quant output (what training used).
        """
        if (self.kernel_int is None or self.fake_quant_scale is None
                or self.kernel_zero_point is None):
            raise ExtractionError(f"layer '{self.name}' has no quantized kernel")
        k = self.kernel_int.astype(np.int64)
        s = self.fake_quant_scale
        if self.axis is None:
            return ((k - self.kernel_zero_point).astype(np.float32) * s).astype(np.float32)
        flat = channels_last(k, self.axis)
        deq = ((flat - self.kernel_zero_point).astype(np.float32) * s).astype(np.float32)
        return from_channels_last(deq, k.shape, self.axis)


def bias_and_requant(scale64: np.ndarray, kernel_shape: tuple[int, ...], attr: str,
                      axes: tuple[int, ...] | None, op_kind: str, bias: Any,
                      inp: TensorQuant | None, out: TensorQuant | None) -> tuple[Any, ...]:
    """``(bias_int, bias_scale, multiplier, multiplier_q31, shift)`` on the deployed
    kernel scale ``scale64`` (float64): ``bias_scale = float32(s_in_f64 * s_w_f64)``,
    ``bias_int = round(b / (s_in_f64 * s_w_f64))``, the multipliers from the float32
    scales (:func:`requant_multiplier`); None where the input or output is unknown."""
    bias_int = bias_scale = mult = m0 = shift = None
    if inp is not None:
        bias64 = inp.exact_scale * per_output_channel(scale64, kernel_shape, attr, axes)
        bias_scale = bias64.astype(np.float32)
        if bias is not None:
            bias_int = round_to_int32(np.asarray(bias, np.float64) / bias64)
        if out is not None:
            scale = per_output_channel(scale64.astype(np.float32), kernel_shape, attr, axes)
            mult = requant_multiplier(inp.scale, scale, out.scale,
                                      per_tensor_fc=op_kind == "Dense" and axes is None)
            m0, shift = quantize_multiplier(mult)
    return bias_int, bias_scale, mult, m0, shift


def as_deployed(p: LayerQuantParams) -> LayerQuantParams:
    """The layer as TFLite deploys it: ``p`` itself, except for a kernel trained at a
    width ``b < 8`` other than 4, whose grid :func:`tfmot_ext.to_tflite` embeds in int8
    (:func:`tfmot_ext.quantizers.embed_in_int8`).

    There, with ``f = 2**(8 - b)``: ``kernel_int * f`` and ``kernel_zero_point * f`` at
    ``bits = 8``; ``kernel_scale`` the converter's float64 derivation from the embedded
    range (:func:`tfmot_ext.qmath.int8_embedding_range` of ``fake_quant_scale`` and the zero
    point), as float32, about ``kernel_scale / f``; ``fake_quant_scale`` TF's float32
    scale of that range; the int32 bias and the multipliers recomputed on that scale
    as :func:`extract` computes them.

    Invariants (asserted by ``tests/test_extract.py::test_parity_with_tflite``, with the
    TFLite tensors): ``kernel_int`` is in the 8-bit range; ``dequantized_kernel()``
    equals ``p``'s within 2 float32 ulp (the same real values, ``s / f`` and ``s``
    rendered in float32); ``|bias_int * bias_scale - bias| <= bias_scale / 2``; the
    multipliers are :func:`requant_multiplier` of the new scale.
    """
    if (p.kernel_int is None or p.bits is None or p.bits >= 8 or p.bits in EXACT_WEIGHT_BITS
            or p.fake_quant_scale is None or p.kernel_zero_point is None
            or p.kernel_attr is None or p.narrow_range is None):
        return p
    f = 1 << (8 - p.bits)
    lo8, hi8 = qmath.int8_embedding_range(p.fake_quant_scale, p.kernel_zero_point, p.bits,
                                    p.narrow_range)
    scale64 = qmath.converter_params(lo8, hi8, 8, p.narrow_range)[0]
    scale = scale64.astype(np.float32)
    kernel = (p.kernel_int.astype(np.int64) * f).astype(np.int8)
    bias_int, bias_scale, mult, m0, shift = bias_and_requant(
        scale64, kernel.shape, p.kernel_attr, p.axis, deployed_kind(p.kind),
        p.bias, p.input, p.output)
    return dataclasses.replace(
        p, bits=8, kernel_int=kernel, kernel_scale=scale,
        kernel_zero_point=(np.asarray(p.kernel_zero_point, np.int64) * f).astype(np.int32),
        fake_quant_scale=qmath.nudge(lo8, hi8, 8, p.narrow_range).scale, bias_int=bias_int,
        bias_scale=bias_scale, multiplier=mult, multiplier_q31=m0, shift=shift)


@dataclass(frozen=True)
class QuantizedModelParams(Mapping[str, LayerQuantParams]):
    """Ordered mapping layer name -> :class:`LayerQuantParams`, plus the graph.

    Invariant: ``edges`` only name layers of the mapping; the order is the model's.
    """

    layers: OrderedDict[str, LayerQuantParams]
    edges: tuple[tuple[str, str], ...]
    source: str

    def __getitem__(self, key: str) -> LayerQuantParams:
        return self.layers[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def quantized_layers(self) -> list[LayerQuantParams]:
        """Layers that carry an integer kernel."""
        return [p for p in self.layers.values() if p.kernel_int is not None]


def per_output_channel(scale: np.ndarray, shape: tuple[int, ...], attr: str,
                        axes: tuple[int, ...] | None) -> np.ndarray:
    """Kernel scales indexed by output channel (what bias and multiplier need).

    A depthwise kernel ``(..., C, M)`` quantized per multiplier index only (tfmot's
    per-axis quantizer) has ``M`` scales; output channel ``c*M + m`` uses ``scale[m]``.
    """
    if scale.ndim == 0 or not attr.endswith("depthwise_kernel"):
        return scale
    c, m = shape[-2], shape[-1]
    if scale.size == c * m:
        return scale
    if axes == (len(shape) - 1,) and scale.size == m:
        return np.tile(scale, c)
    return scale


def channels_last(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    rank = x.ndim
    perm = [i for i in range(rank) if i not in axes] + list(axes)
    moved = np.transpose(x, perm)
    return moved.reshape(*moved.shape[: rank - len(axes)], -1)


def from_channels_last(y: np.ndarray, shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    rank = len(shape)
    perm = [i for i in range(rank) if i not in axes] + list(axes)
    moved_shape = tuple(shape[p] for p in perm)
    return np.transpose(y.reshape(moved_shape), np.argsort(perm))
