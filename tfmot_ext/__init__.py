"""tfmot-ext: deployable quantization-aware training for Keras (tf_keras + tfmot).

Public API (see docs/): quantizers, QuantizeConfigs, rule-based annotation and
one-call QAT, loading helpers.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from tfmot_ext.annotate import UNSUPPORTED_MODES, Rule, annotate, plan, quantize
from tfmot_ext.configs import (
    LayerQuantizeConfig,
    conv_config,
    conv_transpose_config,
    default_config_for,
    dense_config,
    depthwise_conv_config,
    no_op_config,
    output_channel_axis,
    output_only_config,
    separable_conv_config,
)
from tfmot_ext.errors import (
    ConfigError,
    ConversionError,
    ExportError,
    ExtractionError,
    H5FormatError,
    PolicyError,
    TfmotExtError,
    UnsupportedLayerError,
    UnsupportedModelError,
)
from tfmot_ext.export import (
    atomic_write,
    export,
    pack_int4,
    to_c_header,
    to_encodings,
    to_json,
    to_npz,
    unpack_int4,
)
from tfmot_ext.extract import (
    LayerQuantParams,
    QuantizedModelParams,
    TensorQuant,
    extract,
    quantize_multiplier,
)
from tfmot_ext.folding import (
    FoldedConv2DBatchNorm,
    FoldedDenseBatchNorm,
    FoldedDepthwiseConv2DBatchNorm,
    FreezeBatchNorm,
    freeze_batch_norm,
)
from tfmot_ext.quantizers import (
    FixedRangeQuantizer,
    LSQQuantizer,
    MinMaxQuantizer,
    PowerOfTwoQuantizer,
    activation_quantizer,
    weight_quantizer,
)
from tfmot_ext.scheme import DefaultScheme, FoldingScheme
from tfmot_ext.scope import custom_objects, quantize_scope
from tfmot_ext.summary import LayerQuantSummary, format_summary, summarize
from tfmot_ext.tflite import float_ops, interpreter, run_int8, to_tflite

try:
    __version__ = version("tfmot-ext")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "UNSUPPORTED_MODES",
    "ConfigError",
    "ConversionError",
    "DefaultScheme",
    "ExportError",
    "ExtractionError",
    "FixedRangeQuantizer",
    "FoldedConv2DBatchNorm",
    "FoldedDenseBatchNorm",
    "FoldedDepthwiseConv2DBatchNorm",
    "FoldingScheme",
    "FreezeBatchNorm",
    "H5FormatError",
    "LSQQuantizer",
    "LayerQuantParams",
    "LayerQuantSummary",
    "LayerQuantizeConfig",
    "MinMaxQuantizer",
    "PolicyError",
    "PowerOfTwoQuantizer",
    "QuantizedModelParams",
    "Rule",
    "TensorQuant",
    "TfmotExtError",
    "UnsupportedLayerError",
    "UnsupportedModelError",
    "__version__",
    "activation_quantizer",
    "annotate",
    "atomic_write",
    "conv_config",
    "conv_transpose_config",
    "custom_objects",
    "default_config_for",
    "dense_config",
    "depthwise_conv_config",
    "export",
    "extract",
    "float_ops",
    "format_summary",
    "freeze_batch_norm",
    "interpreter",
    "no_op_config",
    "output_channel_axis",
    "output_only_config",
    "pack_int4",
    "plan",
    "quantize",
    "quantize_multiplier",
    "quantize_scope",
    "run_int8",
    "separable_conv_config",
    "summarize",
    "to_c_header",
    "to_encodings",
    "to_json",
    "to_npz",
    "to_tflite",
    "unpack_int4",
    "weight_quantizer",
]
