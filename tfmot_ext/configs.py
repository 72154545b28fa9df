"""QuantizeConfigs: which tensors of a layer are quantized, and how.

One generic, serializable :class:`LayerQuantizeConfig` covers every case: a
mapping from weight attributes (``kernel``, ``depthwise_kernel``,
``pointwise_kernel``, ``recurrent_kernel``, ``embeddings``, ``cell.kernel``, ...) to
quantizers, a mapping from activation attributes (usually ``activation``) to
quantizers, and an optional output quantizer. Presets build it for each layer
kind; :func:`output_only_config` and :func:`no_op_config` cover the rest.

Per-channel weight quantizers whose ``axis`` is None are given the layer kind's
output-channel axis when the config pairs them with a weight
(:func:`output_channel_axis`): the last axis for Dense/Conv kernels, ``(2, 3)``
(``in_channels x depth_multiplier``, TFLite's channel order) for DepthwiseConv2D,
the second-to-last for Conv*Transpose kernels ``(..., out, in)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tfmot_ext._compat import check_keras2, keras, tfmot
from tfmot_ext.errors import ConfigError
from tfmot_ext.quantizers import (
    FixedRangeQuantizer,
    QuantizerBase,
    activation_quantizer,
    weight_quantizer,
)
from tfmot_ext.rules import (
    FIXED_ACTIVATION_RANGES,
    TFMOT_WRAPPABLE_ACTIVATIONS,
    channel_axis_of_kind,
)

__all__ = [
    "WEIGHT_ATTRIBUTES",
    "LayerQuantizeConfig",
    "conv_config",
    "conv_transpose_config",
    "default_config_for",
    "dense_config",
    "depthwise_conv_config",
    "fixed_activation_range",
    "no_op_config",
    "output_channel_axis",
    "output_only_config",
    "separable_conv_config",
]

QuantizeConfig: Any = tfmot.quantization.keras.QuantizeConfig
Quantizer: Any = tfmot.quantization.keras.quantizers.Quantizer
register = keras.utils.register_keras_serializable(package="tfmot_ext")
L = keras.layers

#: Weight attributes quantized by the presets, per layer class (most specific first).
WEIGHT_ATTRIBUTES: tuple[tuple[type, tuple[str, ...]], ...] = (
    (L.DepthwiseConv2D, ("depthwise_kernel",)),
    (L.SeparableConv1D, ("depthwise_kernel", "pointwise_kernel")),
    (L.SeparableConv2D, ("depthwise_kernel", "pointwise_kernel")),
    (L.Conv1D, ("kernel",)),  # Conv1D/2D/3D and the transposed convs subclass Conv
    (L.Conv2D, ("kernel",)),
    (L.Conv3D, ("kernel",)),
    (L.Dense, ("kernel",)),
    (L.Embedding, ("embeddings",)),
)


def _get_attr(layer: Any, path: str) -> Any:
    obj = layer
    for part in path.split("."):
        if not hasattr(obj, part):
            raise ConfigError(
                f"layer '{layer.name}' ({type(layer).__name__}) has no attribute '{path}'; "
                f"the config names a weight or activation this layer lacks. Use the "
                f"attributes of {type(layer).__name__} (see layer.weights) or a preset "
                f"from tfmot_ext.configs"
            )
        obj = getattr(obj, part)
    return obj


def _set_attr(layer: Any, path: str, value: Any) -> None:
    parts = path.split(".")
    obj = layer
    for part in parts[:-1]:
        obj = getattr(obj, part)
    setattr(obj, parts[-1], value)


def output_channel_axis(layer: Any, attr: str, rank: int) -> int | tuple[int, ...]:
    """:func:`tfmot_ext.rules.channel_axis_of_kind` for a layer object (its class or any
    base decides)."""
    return channel_axis_of_kind({c.__name__ for c in type(layer).__mro__}, attr, rank)


def _serialize(q: Any) -> Any:
    return None if q is None else keras.utils.serialize_keras_object(q)


def _deserialize(q: Any) -> Any:
    if q is None or isinstance(q, Quantizer):
        return q
    return keras.utils.deserialize_keras_object(q)


@register
class LayerQuantizeConfig(QuantizeConfig):
    """A QuantizeConfig given by attribute-name -> quantizer mappings.

    Args:
        weights: weight attribute (dotted paths allowed, e.g. ``cell.kernel``) ->
            quantizer. The layer's attribute is replaced by the fake-quantized tensor.
        activations: activation attribute (usually ``"activation"``) -> quantizer
            (per tensor). tfmot wraps the activation: post-activation quantization
            for linear/relu/swish, pre- and post- for softmax/sigmoid/tanh.
        output: quantizer applied to the layer's output tensor, or None.

    ``get_config`` returns exactly these three (quantizers serialized); equality
    compares configs.
    """

    def __init__(
        self,
        weights: Mapping[str, Any] | None = None,
        activations: Mapping[str, Any] | None = None,
        output: Any = None,
    ) -> None:
        self.weights = {str(k): _deserialize(v) for k, v in (weights or {}).items()}
        self.activations = {str(k): _deserialize(v) for k, v in (activations or {}).items()}
        self.output = _deserialize(output)
        named = [*self.weights.items(), *self.activations.items(), ("output", self.output)]
        for where, q in named:
            if q is not None and not isinstance(q, Quantizer):
                raise ConfigError(
                    f"LayerQuantizeConfig: '{where}' maps to {q!r}, which is not a tfmot "
                    "Quantizer; use one from tfmot_ext.quantizers"
                )
        for attr, q in self.activations.items():
            if getattr(q, "is_per_channel", False):
                raise ConfigError(
                    f"LayerQuantizeConfig: activation '{attr}' quantizer is per channel; "
                    "tfmot activation quantizers are per tensor (use per_channel=False)"
                )

    # -- tfmot QuantizeConfig API ------------------------------------------
    def _weight_quantizer_for(self, layer: Any, attr: str, weight: Any) -> Any:
        q = self.weights[attr]
        if isinstance(q, QuantizerBase) and q.is_per_channel and getattr(q, "axis", 0) is None:
            q = q.with_axis(output_channel_axis(layer, attr, len(weight.shape)))
        return q

    def get_weights_and_quantizers(self, layer: Any) -> list[tuple[Any, Any]]:
        out = []
        for attr in self.weights:
            w = _get_attr(layer, attr)
            out.append((w, self._weight_quantizer_for(layer, attr, w)))
        return out

    def get_activations_and_quantizers(self, layer: Any) -> list[tuple[Any, Any]]:
        return [(_get_attr(layer, attr), q) for attr, q in self.activations.items()]

    def set_quantize_weights(self, layer: Any, quantize_weights: Sequence[Any]) -> None:
        if len(quantize_weights) != len(self.weights):
            raise ConfigError(
                f"layer '{layer.name}': got {len(quantize_weights)} quantized weights for "
                f"{len(self.weights)} attributes {list(self.weights)}"
            )
        for attr, w in zip(self.weights, quantize_weights):
            _set_attr(layer, attr, w)

    def set_quantize_activations(self, layer: Any, quantize_activations: Sequence[Any]) -> None:
        for attr, a in zip(self.activations, quantize_activations):
            _set_attr(layer, attr, a)

    def get_output_quantizers(self, layer: Any) -> list[Any]:
        return [] if self.output is None else [self.output]

    def get_config(self) -> dict[str, Any]:
        return {
            "weights": {k: _serialize(v) for k, v in self.weights.items()},
            "activations": {k: _serialize(v) for k, v in self.activations.items()},
            "output": _serialize(self.output),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LayerQuantizeConfig:
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(repr(self.get_config()))

    def __repr__(self) -> str:
        return (f"LayerQuantizeConfig(weights={self.weights!r}, "
                f"activations={self.activations!r}, output={self.output!r})")

    # -- helpers -------------------------------------------------------------
    def copy(self) -> LayerQuantizeConfig:
        """An independent copy (tfmot needs one config object per layer)."""
        return type(self).from_config(self.get_config())

    def validate_for(self, layer: Any) -> None:
        """Raise :class:`ConfigError` naming the layer if an attribute is missing."""
        for attr in [*self.weights, *self.activations]:
            _get_attr(layer, attr)


def _weights_for(attrs: Sequence[str], q: Any) -> dict[str, Any]:
    return {a: q for a in attrs}


def dense_config(weight_bits: int = 8, activation_bits: int | None = 8,
                 per_channel: bool = False, weight_q: Any = None,
                 activation_q: Any = None) -> LayerQuantizeConfig:
    """Dense: ``kernel`` + post-``activation`` quantization.

    Per tensor by default: TFLite's converter (TF 2.21) rejects per-channel
    FakeQuant on a Dense kernel ("tfl.transpose op has mismatched quantized axes").

    Args:
        weight_bits: kernel bits (ignored when ``weight_q`` is given).
        activation_bits: activation bits; None leaves activations float.
        per_channel: per-output-channel kernel scales.
        weight_q: explicit kernel quantizer.
        activation_q: explicit activation quantizer.
    """
    return _preset(("kernel",), weight_bits, activation_bits, per_channel, weight_q,
                   activation_q)


def conv_config(weight_bits: int = 8, activation_bits: int | None = 8,
                per_channel: bool = True, weight_q: Any = None,
                activation_q: Any = None) -> LayerQuantizeConfig:
    """Conv1D/Conv2D/Conv3D: ``kernel`` (last axis = output channels) + ``activation``."""
    return _preset(("kernel",), weight_bits, activation_bits, per_channel, weight_q,
                   activation_q)


def depthwise_conv_config(weight_bits: int = 8, activation_bits: int | None = 8,
                          per_channel: bool = True, weight_q: Any = None,
                          activation_q: Any = None) -> LayerQuantizeConfig:
    """DepthwiseConv2D: ``depthwise_kernel`` per ``C x M`` channel + ``activation``."""
    return _preset(("depthwise_kernel",), weight_bits, activation_bits, per_channel, weight_q,
                   activation_q)


def separable_conv_config(weight_bits: int = 8, activation_bits: int | None = 8,
                          per_channel: bool = True, weight_q: Any = None,
                          activation_q: Any = None) -> LayerQuantizeConfig:
    """SeparableConv1D/2D: ``depthwise_kernel`` and ``pointwise_kernel`` + ``activation``."""
    return _preset(("depthwise_kernel", "pointwise_kernel"), weight_bits, activation_bits,
                   per_channel, weight_q, activation_q)


def conv_transpose_config(weight_bits: int = 8, activation_bits: int | None = 8,
                          per_channel: bool = False, weight_q: Any = None,
                          activation_q: Any = None) -> LayerQuantizeConfig:
    """Conv2DTranspose/Conv3DTranspose: ``kernel`` ``(..., out, in)``.

    Per tensor by default (as tfmot); with ``per_channel=True`` the axis is ``out``.
    """
    return _preset(("kernel",), weight_bits, activation_bits, per_channel, weight_q,
                   activation_q)


def _preset(attrs: Sequence[str], weight_bits: int, activation_bits: int | None,
            per_channel: bool, weight_q: Any, activation_q: Any) -> LayerQuantizeConfig:
    wq = weight_q if weight_q is not None else weight_quantizer(weight_bits, per_channel)
    if activation_q is None and activation_bits is not None:
        activation_q = activation_quantizer(activation_bits)
    acts = {} if activation_q is None else {"activation": activation_q}
    return LayerQuantizeConfig(weights=_weights_for(attrs, wq), activations=acts)


def output_only_config(bits: int = 8, quantizer: Any = None) -> LayerQuantizeConfig:
    """Quantize only the layer's output tensor (weights stay float inside the layer)."""
    return LayerQuantizeConfig(output=quantizer if quantizer is not None else
                               activation_quantizer(bits))


def no_op_config() -> LayerQuantizeConfig:
    """Nothing quantized: the layer stays float inside a QAT model."""
    return LayerQuantizeConfig()


def default_config_for(layer: Any, weight_bits: int = 8, activation_bits: int | None = 8,
                       per_channel: bool | None = None) -> LayerQuantizeConfig | None:
    """The preset for ``layer``'s kind, or None if tfmot_ext has no preset for it.

    Covers Dense, Conv1D/2D/3D, DepthwiseConv2D, SeparableConv1D/2D,
    Conv1D/2D/3DTranspose. ``per_channel=None`` means per channel for convolutions
    and per tensor for Dense and transposed convolutions (what TFLite converts).
    Layers whose activation tfmot cannot wrap get their output quantized instead. An
    ``Activation("sigmoid"|"tanh")`` layer gets its output fake-quantized on the fixed
    grid TFLite's LOGISTIC/TANH output has (:func:`fixed_activation_range`).
    """
    check_keras2(layer, "layer")
    fixed = fixed_activation_range(layer)
    if fixed is not None and activation_bits is not None:
        return LayerQuantizeConfig(output=FixedRangeQuantizer(*fixed, bits=8))
    if per_channel is None:
        per_channel = not isinstance(layer, (L.Dense, L.Conv1DTranspose, L.Conv2DTranspose,
                                             L.Conv3DTranspose))
    for cls, attrs in WEIGHT_ATTRIBUTES:
        if cls is L.Embedding or not isinstance(layer, cls):
            continue
        act = getattr(layer, "activation", None)
        name = getattr(act, "__name__", type(act).__name__)
        if activation_bits is None:
            return _preset(attrs, weight_bits, None, per_channel, None, None)
        if name in TFMOT_WRAPPABLE_ACTIVATIONS:
            return _preset(attrs, weight_bits, activation_bits, per_channel, None, None)
        # tfmot cannot wrap this activation: quantize the layer's output instead.
        cfg = _preset(attrs, weight_bits, None, per_channel, None, None)
        return LayerQuantizeConfig(weights=cfg.weights,
                                   output=activation_quantizer(activation_bits))
    return None


def fixed_activation_range(layer: Any) -> tuple[float, float] | None:
    """The fixed output range of an ``Activation("sigmoid"|"tanh"|"softmax")`` layer or a
    ``Softmax`` over the last axis, else None.

    TFLite's int8 LOGISTIC and SOFTMAX require the output scale ``1/256`` (zero point
    -128), TANH ``1/128`` (zero point 0). A FakeQuant on ``[0, 255/256]`` or
    ``[-1, 127/128]`` with 256 levels has exactly that grid (``scale = (max - min) / 255``),
    so the QAT model trains on the deployed values.

    >>> fixed_activation_range(keras.layers.Activation("sigmoid"))
    (0.0, 0.99609375)
    """
    if isinstance(layer, L.Softmax):
        axis = layer.get_config().get("axis", -1)
        rank = len(layer.input_shape) if isinstance(layer.input_shape, tuple) else 0
        return FIXED_ACTIVATION_RANGES["softmax"] if axis in (-1, [-1], rank - 1) else None
    if not isinstance(layer, L.Activation):
        return None
    act = layer.get_config().get("activation")
    return FIXED_ACTIVATION_RANGES.get(act) if isinstance(act, str) else None
