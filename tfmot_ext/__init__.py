"""tfmot-ext: deployable quantization-aware training for Keras (tf_keras + tfmot).

Public API (see docs/): quantizers, QuantizeConfigs, rule-based annotation and
one-call QAT with BatchNorm folding, loading helpers, extraction and export of the
integer parameters, full-integer TFLite conversion, the integer-only reference,
parity reports and per-layer quantization reports. The ``tfmot-ext`` command
(:mod:`tfmot_ext.cli`) wraps them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from tfmot_ext.annotate import UNSUPPORTED_MODES, Rule, annotate, builtin_choice, plan, quantize
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
    IntegerReferenceError,
    ParityError,
    PolicyError,
    TfmotExtError,
    UnsupportedLayerError,
    UnsupportedModelError,
)
from tfmot_ext.export import (
    atomic_path,
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
    int8_embedded,
    quantize_multiplier,
    requant_multiplier,
)
from tfmot_ext.folding import (
    FoldedConv2DBatchNorm,
    FoldedDenseBatchNorm,
    FoldedDepthwiseConv2DBatchNorm,
    FreezeBatchNorm,
    freeze_batch_norm,
)
from tfmot_ext.graph import TensorOp, flatten, prepare, replace_tf_ops
from tfmot_ext.parity import (
    LayerDrift,
    OutputParity,
    ParityReport,
    WeightParity,
    layer_drift,
    verify,
)
from tfmot_ext.quantizers import (
    FixedRangeQuantizer,
    LSQQuantizer,
    MinMaxQuantizer,
    PowerOfTwoQuantizer,
    activation_quantizer,
    weight_quantizer,
)
from tfmot_ext.reference import IntTensor, ReferenceRun, TensorMatch, compare_with_tflite
from tfmot_ext.reference import run as run_reference
from tfmot_ext.report import LayerReport, layer_reports, write_html_report
from tfmot_ext.scheme import DefaultScheme, FoldingScheme
from tfmot_ext.scope import custom_objects, load_qat_model, quantize_scope
from tfmot_ext.summary import LayerQuantSummary, format_summary, summarize
from tfmot_ext.tflite import (
    float_ops,
    interpreter,
    op_outputs,
    run_int8,
    save_tflite,
    to_tflite,
    weight_tensors,
)

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
    "IntTensor",
    "IntegerReferenceError",
    "LSQQuantizer",
    "LayerDrift",
    "LayerQuantParams",
    "LayerQuantSummary",
    "LayerQuantizeConfig",
    "LayerReport",
    "MinMaxQuantizer",
    "OutputParity",
    "ParityError",
    "ParityReport",
    "PolicyError",
    "PowerOfTwoQuantizer",
    "QuantizedModelParams",
    "ReferenceRun",
    "Rule",
    "TensorMatch",
    "TensorOp",
    "TensorQuant",
    "TfmotExtError",
    "UnsupportedLayerError",
    "UnsupportedModelError",
    "WeightParity",
    "__version__",
    "activation_quantizer",
    "annotate",
    "atomic_path",
    "atomic_write",
    "builtin_choice",
    "compare_with_tflite",
    "conv_config",
    "conv_transpose_config",
    "custom_objects",
    "default_config_for",
    "dense_config",
    "depthwise_conv_config",
    "export",
    "extract",
    "flatten",
    "float_ops",
    "format_summary",
    "freeze_batch_norm",
    "int8_embedded",
    "interpreter",
    "layer_drift",
    "layer_reports",
    "load_qat_model",
    "no_op_config",
    "op_outputs",
    "output_channel_axis",
    "output_only_config",
    "pack_int4",
    "plan",
    "prepare",
    "quantize",
    "quantize_multiplier",
    "quantize_scope",
    "replace_tf_ops",
    "requant_multiplier",
    "run_int8",
    "run_reference",
    "save_tflite",
    "separable_conv_config",
    "summarize",
    "to_c_header",
    "to_encodings",
    "to_json",
    "to_npz",
    "to_tflite",
    "unpack_int4",
    "verify",
    "weight_quantizer",
    "weight_tensors",
    "write_html_report",
]
