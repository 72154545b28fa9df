"""QuantizeSchemes for tfmot's ``quantize_apply``.

:class:`DefaultScheme` is tfmot's ``Default8BitQuantizeScheme`` (same registry,
same layout transforms) with one correction: tfmot's ``LayerReLUQuantize`` /
``LayerReluActivationQuantize`` replace the QuantizeConfig of any
Add/Conv2D/DepthwiseConv2D/Dense layer feeding a ReLU layer with a NoOp config.
For a layer with a custom config (every tfmot_ext preset) that silently removes
its *weight* quantization. Here those transforms leave layers with a custom
config alone (tfmot_ext's annotation already moved their activation quantizer
after the ReLU), and leave the producer of a ReLU TFLite does not fuse (a cap other
than 6, a slope, a threshold) its own output quantizer.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

from tfmot_ext._compat import QuantizeLayer, keras, tfmot
from tfmot_ext._compat import default_8bit_transforms as _t8
from tfmot_ext.configs import LayerQuantizeConfig
from tfmot_ext.folding import (
    FoldedBatchNormBase,
    FoldedConv2DBatchNorm,
    FoldedDenseBatchNorm,
    FoldedDepthwiseConv2DBatchNorm,
)
from tfmot_ext.quantizers import (
    MinMaxQuantizer,
    QuantizerBase,
    activation_quantizer,
    weight_quantizer,
)
from tfmot_ext.rules import FOLDABLE_KERNEL_ATTR, channel_axis_of_kind, relu_kind

__all__ = [
    "DefaultScheme",
    "FoldBatchNorm",
    "FoldingScheme",
    "LayoutTransform",
    "folding_transforms",
    "is_folded",
    "safe_default_transforms",
]

_qk = tfmot.quantization.keras
_QuantizeLayoutTransform: Any = _qk.QuantizeLayoutTransform
_QuantizeScheme: Any = _qk.QuantizeScheme
_LayerReLUQuantize: Any = _t8.LayerReLUQuantize
_LayerReluActivationQuantize: Any = _t8.LayerReluActivationQuantize
_model_transformer = _qk.graph_transformations.model_transformer


def _has_custom_config(node: Any) -> bool:
    return node.metadata.get("quantize_config") is not None


def _fuses(relu_node: Any) -> bool:
    """Whether TFLite fuses the matched ReLU / Activation layer into its producer: tfmot's
    pattern matches any ReLU, also one with a cap other than 6, a slope or a threshold,
    which deploys as operators of its own after the producer's int8 output."""
    layer = relu_node.layer
    return relu_kind(str(layer.get("class_name")), layer.get("config", {})) is not None


class _SafeLayerReLUQuantize(_LayerReLUQuantize):
    """tfmot's LayerReLUQuantize, skipping producers that carry a custom config and
    ReLUs TFLite does not fuse."""

    def replacement(self, match_layer: Any) -> Any:
        if _has_custom_config(match_layer.input_layers[0]) or not _fuses(match_layer):
            return match_layer
        return super().replacement(match_layer)


class _SafeLayerReluActivationQuantize(_LayerReluActivationQuantize):
    """tfmot's LayerReluActivationQuantize, skipping producers with a custom config and
    activations TFLite does not fuse."""

    def replacement(self, match_layer: Any) -> Any:
        if _has_custom_config(match_layer.input_layers[0]) or not _fuses(match_layer):
            return match_layer
        return super().replacement(match_layer)


class _InputLayerQuantize(_t8.InputLayerQuantize):
    """tfmot's InputLayerQuantize with tfmot_ext's all-values quantizer.

    Same range rule as tfmot's AllValuesQuantizer (running min/max over all batches,
    8-bit asymmetric), but its variables aggregate by MEAN under a distribution
    strategy; tfmot's are unaggregated, and its replicas' input ranges diverge.
    Integer inputs (token ids for an Embedding) are not quantized.
    """

    def replacement(self, match_layer: Any) -> Any:
        dtype = str(match_layer.layer["config"].get("dtype") or "float32")
        if not dtype.startswith(("float", "bfloat")):
            return match_layer  # token ids and other integer inputs stay as they are
        quant_layer = QuantizeLayer(MinMaxQuantizer(
            8, symmetric=False, narrow_range=False, range_tracking="all_values"))
        layer_config = {"class_name": "QuantizeLayer", "config": quant_layer.get_config(),
                        "name": quant_layer.name}
        return _LayerNode(layer_config, input_layers=[match_layer])

    def custom_objects(self) -> dict[str, Any]:
        from tfmot_ext.scope import custom_objects

        return {**super().custom_objects(), **custom_objects()}


def safe_default_transforms() -> list[Any]:
    """tfmot's default 8-bit layout transforms, in tfmot's order, ReLU fusion made safe,
    the input quantized by tfmot_ext's all-values quantizer."""
    return [
        _InputLayerQuantize(),
        _t8.SeparableConv1DQuantize(),
        _t8.SeparableConvQuantize(),
        _t8.Conv2DReshapeBatchNormReLUQuantize(),
        _t8.Conv2DReshapeBatchNormActivationQuantize(),
        _t8.Conv2DBatchNormReLUQuantize(),
        _t8.Conv2DBatchNormActivationQuantize(),
        _t8.Conv2DReshapeBatchNormQuantize(),
        _t8.Conv2DBatchNormQuantize(),
        _t8.ConcatTransform6Inputs(),
        _t8.ConcatTransform5Inputs(),
        _t8.ConcatTransform4Inputs(),
        _t8.ConcatTransform3Inputs(),
        _t8.ConcatTransform(),
        _t8.DenseBatchNormQuantize(),
        _t8.DenseBatchNormReLUQuantize(),
        _t8.DenseBatchNormActivationQuantize(),
        _SafeLayerReLUQuantize(),
        _SafeLayerReluActivationQuantize(),
    ]


class LayoutTransform(_QuantizeLayoutTransform):
    """Apply a list of tfmot ``Transform``s (default: :func:`safe_default_transforms`)."""

    def __init__(self, transforms: list[Any] | None = None) -> None:
        self.transforms = transforms

    def apply(self, model: Any, layer_quantize_map: dict[str, Any]) -> Any:
        transforms = self.transforms if self.transforms is not None else (
            safe_default_transforms())
        return _model_transformer.ModelTransformer(
            model, transforms, set(layer_quantize_map.keys()), layer_quantize_map
        ).transform()


class DefaultScheme(_QuantizeScheme):
    """tfmot's default 8-bit scheme with custom configs respected (see module docstring).

    Usable directly: ``quantize_apply(annotated, scheme=tfmot_ext.DefaultScheme())``.
    """

    def get_layout_transformer(self) -> Any:
        return LayoutTransform()

    def get_quantize_registry(self) -> Any:
        return _qk.default_8bit.Default8BitQuantizeRegistry()


# --------------------------------------------------------------------------- folding

_transforms = _qk.graph_transformations.transforms
_LayerPattern: Any = _transforms.LayerPattern
_LayerNode: Any = _transforms.LayerNode
_Transform: Any = _transforms.Transform

_FOLDED = {"Conv2D": FoldedConv2DBatchNorm, "DepthwiseConv2D": FoldedDepthwiseConv2DBatchNorm,
           "Dense": FoldedDenseBatchNorm}


def _class(node: Any) -> str:
    return str(node.layer["class_name"]).split(">")[-1]


class FoldBatchNorm(_Transform):
    """Replace ``Conv2D|DepthwiseConv2D|Dense -> BatchNormalization [-> ReLU|ReLU6]``
    by one folded layer (:mod:`tfmot_ext.folding`).

    The folded layer quantizes its folded kernel with the weight quantizer of the
    matched layer's QuantizeConfig (tfmot_ext's 8-bit per-channel default when it had
    none) and its output with the quantizer found at the end of the chain.

    Args:
        with_activation: match the trailing ReLU/ReLU6 (or Activation) layer too.
        freeze_bn_delay: passed to the folded layers.
        synchronized: BatchNormalization layer names whose folded layer takes global-batch
            statistics under a distribution strategy (tf_keras does not serialize
            ``BatchNormalization(synchronized=True)``, so it is passed by name).
    """

    def __init__(self, with_activation: bool, freeze_bn_delay: int | None = None,
                 synchronized: frozenset[str] = frozenset()) -> None:
        self.with_activation = with_activation
        self.freeze_bn_delay = freeze_bn_delay
        self.synchronized = frozenset(synchronized)

    def pattern(self) -> Any:
        linear = _LayerPattern("(Conv2D|DepthwiseConv2D|Dense)$", config={"activation": "linear"})
        bn = _LayerPattern("BatchNormalization", inputs=[linear])
        if not self.with_activation:
            return bn
        return _LayerPattern("ReLU|Activation", inputs=[bn])

    def replacement(self, match_layer: Any) -> Any:
        last = match_layer
        if self.with_activation:
            act = relu_kind(_class(last), last.layer["config"])
            if act is None:
                return match_layer
            bn = last.input_layers[0]
        else:
            act, bn = "linear", last
        op = bn.input_layers[0]
        kind = _class(op)
        op_cfg = dict(op.layer["config"])
        if kind == "Conv2D" and op_cfg.get("data_format", "channels_last") not in (
                None, "channels_last"):
            return match_layer
        bn_cfg = bn.layer["config"]
        axis = bn_cfg.get("axis", -1)
        if axis not in (-1, [-1], 3, [3], 1, [1]) and kind != "Dense":
            return match_layer
        wq, out_q = self._quantizers(op, last, kind)
        folded = _FOLDED[kind](
            layer_config=op_cfg, epsilon=bn_cfg.get("epsilon", 1e-3),
            momentum=bn_cfg.get("momentum", 0.99), activation=act, weight_quantizer=wq,
            freeze_bn_delay=self.freeze_bn_delay,
            synchronized=bn_cfg.get("name") in self.synchronized, name=op_cfg["name"])
        layer_config = {"class_name": keras.utils.get_registered_name(type(folded)),
                        "config": folded.get_config(), "name": folded.name}
        weights = collections.OrderedDict()
        attr = FOLDABLE_KERNEL_ATTR[kind]
        for name in (attr, "bias", "gamma", "beta", "moving_mean", "moving_variance"):
            src = op.weights if name in (attr, "bias") else bn.weights
            for key in (f"{name}:0", name):
                if key in src:
                    weights[f"{name}:0"] = src[key]
        return _LayerNode(layer_config, weights=weights, input_layers=op.input_layers,
                          metadata={"quantize_config": LayerQuantizeConfig(output=out_q)})

    @staticmethod
    def _quantizers(op: Any, last: Any, kind: str) -> tuple[Any, Any]:
        """Kernel and output quantizers for the folded layer.

        A tfmot_ext config decides (no weight quantizer there: float kernel); a layer
        left to tfmot's registry gets 8-bit per-channel weights (per tensor for Dense)
        and an 8-bit activation quantizer.
        """
        cfg = op.metadata.get("quantize_config")
        out_cfg = last.metadata.get("quantize_config")
        if isinstance(cfg, LayerQuantizeConfig):
            wq = next(iter(cfg.weights.values()), None)
        else:
            wq = weight_quantizer(8, per_channel=kind != "Dense")
        if isinstance(wq, QuantizerBase) and wq.is_per_channel and getattr(wq, "axis", 0) is None:
            wq = wq.with_axis(channel_axis_of_kind(kind, FOLDABLE_KERNEL_ATTR[kind],
                                                   2 if kind == "Dense" else 4))
        if isinstance(out_cfg, LayerQuantizeConfig):
            out_q = out_cfg.output or next(iter(out_cfg.activations.values()), None)
        elif isinstance(cfg, LayerQuantizeConfig):
            out_q = next(iter(cfg.activations.values()), None)
        else:
            out_q = activation_quantizer(8)
        return wq, out_q

    def custom_objects(self) -> dict[str, Any]:
        from tfmot_ext.scope import custom_objects

        return custom_objects()


def folding_transforms(freeze_bn_delay: int | None = None,
                       synchronized: frozenset[str] = frozenset()) -> list[Any]:
    """The folding transforms (with-activation first), then :func:`safe_default_transforms`."""
    return [FoldBatchNorm(True, freeze_bn_delay, synchronized),
            FoldBatchNorm(False, freeze_bn_delay, synchronized), *safe_default_transforms()]


class FoldingScheme(_QuantizeScheme):
    """A tfmot ``QuantizeScheme`` that folds BatchNorm into Conv2D/DepthwiseConv2D/Dense.

    ``quantize_apply(annotated, scheme=tfmot_ext.FoldingScheme())`` replaces every
    ``Conv2D|DepthwiseConv2D|Dense (linear) -> BatchNormalization [-> ReLU|ReLU6]`` by a
    folded layer whose *folded* kernel is fake-quantized (the one TFLite deploys);
    the rest is :class:`DefaultScheme`. The default scheme of :func:`tfmot_ext.quantize`.

    Args:
        freeze_bn_delay: training steps after which folded layers freeze their BN
            statistics (None: only :class:`tfmot_ext.FreezeBatchNorm` freezes them).
        synchronized: names of the BatchNormalization layers to fold with global-batch
            statistics under a distribution strategy (``tfmot_ext.quantize`` passes
            those built with ``synchronized=True``).
    """

    def __init__(self, freeze_bn_delay: int | None = None,
                 synchronized: Iterable[str] = ()) -> None:
        self.freeze_bn_delay = freeze_bn_delay
        self.synchronized = frozenset(synchronized)

    def get_layout_transformer(self) -> Any:
        return LayoutTransform(folding_transforms(self.freeze_bn_delay, self.synchronized))

    def get_quantize_registry(self) -> Any:
        return _qk.default_8bit.Default8BitQuantizeRegistry()


def is_folded(layer: Any) -> bool:
    """Whether ``layer`` (or the layer a QuantizeWrapper wraps) is a folded layer."""
    return isinstance(getattr(layer, "layer", layer), FoldedBatchNormBase)
