"""QuantizeSchemes for tfmot's ``quantize_apply``.

:class:`DefaultScheme` is tfmot's ``Default8BitQuantizeScheme`` (same registry,
same layout transforms) with one correction: tfmot's ``LayerReLUQuantize`` /
``LayerReluActivationQuantize`` replace the QuantizeConfig of any
Add/Conv2D/DepthwiseConv2D/Dense layer feeding a ReLU layer with a NoOp config.
For a layer with a custom config (every tfmot_ext preset) that silently removes
its *weight* quantization. Here those transforms leave layers with a custom
config alone (tfmot_ext's annotation already moved their activation quantizer
after the ReLU).
"""

from __future__ import annotations

from typing import Any

from tfmot_ext._compat import default_8bit_transforms as _t8
from tfmot_ext._compat import tfmot

__all__ = ["DefaultScheme", "LayoutTransform", "safe_default_transforms"]

_qk = tfmot.quantization.keras
_QuantizeLayoutTransform: Any = _qk.QuantizeLayoutTransform
_QuantizeScheme: Any = _qk.QuantizeScheme
_LayerReLUQuantize: Any = _t8.LayerReLUQuantize
_LayerReluActivationQuantize: Any = _t8.LayerReluActivationQuantize
_model_transformer = _qk.graph_transformations.model_transformer


def _has_custom_config(node: Any) -> bool:
    return node.metadata.get("quantize_config") is not None


class _SafeLayerReLUQuantize(_LayerReLUQuantize):
    """tfmot's LayerReLUQuantize, skipping producers that carry a custom config."""

    def replacement(self, match_layer: Any) -> Any:
        if _has_custom_config(match_layer.input_layers[0]):
            return match_layer
        return super().replacement(match_layer)


class _SafeLayerReluActivationQuantize(_LayerReluActivationQuantize):
    """tfmot's LayerReluActivationQuantize, skipping producers with a custom config."""

    def replacement(self, match_layer: Any) -> Any:
        if _has_custom_config(match_layer.input_layers[0]):
            return match_layer
        return super().replacement(match_layer)


def safe_default_transforms() -> list[Any]:
    """tfmot's default 8-bit layout transforms, in tfmot's order, ReLU fusion made safe."""
    return [
        _t8.InputLayerQuantize(),
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
