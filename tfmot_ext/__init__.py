"""tfmot-ext: deployable quantization-aware training for Keras (tf_keras + tfmot).

Public API (see docs/): quantizers, QuantizeConfigs, rule-based annotation and
one-call QAT with BatchNorm folding, loading helpers, extraction and export of the
integer parameters, full-integer TFLite conversion, the integer-only reference,
parity reports and per-layer quantization reports. The ``tfmot-ext`` command
(:mod:`tfmot_ext.cli`) wraps them.

Two halves (docs/architecture.md): the *deployment core* (extraction from H5 files,
the result types, export, the fixed-point math and the integer reference) imports
NumPy and h5py only; the *training half* (quantizers, configs, annotation, folding,
conversion, parity) needs TensorFlow, tf_keras and tfmot and loads on first use of
one of its names, so ``import tfmot_ext`` itself stays light. Every name below is
also reachable from its module.
"""

from __future__ import annotations

import importlib as _importlib
import sys as _sys
import types as _types
import warnings as _warnings
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

#: public name -> (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    # training: annotation, configs, quantizers, folding, loading
    "quantize": ("annotate", "quantize"),
    "annotate": ("annotate", "annotate"),
    "plan": ("annotate", "plan"),
    "Rule": ("annotate", "Rule"),
    "summarize": ("summary", "summarize"),
    "format_summary": ("summary", "format_summary"),
    "LayerQuantizeConfig": ("configs", "LayerQuantizeConfig"),
    "conv_config": ("configs", "conv_config"),
    "conv_transpose_config": ("configs", "conv_transpose_config"),
    "default_config_for": ("configs", "default_config_for"),
    "dense_config": ("configs", "dense_config"),
    "depthwise_conv_config": ("configs", "depthwise_conv_config"),
    "no_op_config": ("configs", "no_op_config"),
    "output_only_config": ("configs", "output_only_config"),
    "separable_conv_config": ("configs", "separable_conv_config"),
    "MinMaxQuantizer": ("quantizers", "MinMaxQuantizer"),
    "PowerOfTwoQuantizer": ("quantizers", "PowerOfTwoQuantizer"),
    "FixedRangeQuantizer": ("quantizers", "FixedRangeQuantizer"),
    "LSQQuantizer": ("quantizers", "LSQQuantizer"),
    "weight_quantizer": ("quantizers", "weight_quantizer"),
    "activation_quantizer": ("quantizers", "activation_quantizer"),
    "DefaultScheme": ("scheme", "DefaultScheme"),
    "FoldingScheme": ("scheme", "FoldingScheme"),
    "FreezeBatchNorm": ("folding", "FreezeBatchNorm"),
    "freeze_batch_norm": ("folding", "freeze_batch_norm"),
    "custom_objects": ("scope", "custom_objects"),
    "load_qat_model": ("scope", "load_qat_model"),
    "quantize_scope": ("scope", "quantize_scope"),
    "calibrate": ("calibrate", "calibrate"),
    # conversion and checks against TFLite
    "to_tflite": ("tflite", "to_tflite"),
    "save_tflite": ("tflite", "save_tflite"),
    "run_int8": ("tflite", "run_int8"),
    "float_ops": ("tflite", "float_ops"),
    "verify": ("parity", "verify"),
    "ParityReport": ("parity", "ParityReport"),
    "layer_reports": ("report", "layer_reports"),
    "write_html_report": ("report", "write_html_report"),
    # deployment core (no TensorFlow)
    "extract": ("extract", "extract"),
    "QuantizedModelParams": ("params", "QuantizedModelParams"),
    "LayerQuantParams": ("params", "LayerQuantParams"),
    "as_deployed": ("params", "as_deployed"),
    "export": ("export", "export"),
    "run_reference": ("reference", "run_reference"),
    "TfmotExtError": ("errors", "TfmotExtError"),
}

#: names the package exported before 0.2 (the architecture change): still resolved, with a
#: DeprecationWarning naming the module to import them from
_MOVED: dict[str, tuple[str, str]] = {
    "ConfigError": ("errors", "ConfigError"),
    "ConversionError": ("errors", "ConversionError"),
    "ExportError": ("errors", "ExportError"),
    "ExtractionError": ("errors", "ExtractionError"),
    "FoldedConv2DBatchNorm": ("folding", "FoldedConv2DBatchNorm"),
    "FoldedDenseBatchNorm": ("folding", "FoldedDenseBatchNorm"),
    "FoldedDepthwiseConv2DBatchNorm": ("folding", "FoldedDepthwiseConv2DBatchNorm"),
    "H5FormatError": ("errors", "H5FormatError"),
    "IntTensor": ("kernels", "IntTensor"),
    "IntegerReferenceError": ("errors", "IntegerReferenceError"),
    "LayerDrift": ("parity", "LayerDrift"),
    "LayerQuantSummary": ("summary", "LayerQuantSummary"),
    "LayerReport": ("report", "LayerReport"),
    "OutputParity": ("parity", "OutputParity"),
    "ParityError": ("errors", "ParityError"),
    "PolicyError": ("errors", "PolicyError"),
    "ReferenceRun": ("reference", "ReferenceRun"),
    "TensorMatch": ("matching", "TensorMatch"),
    "TensorOp": ("graph", "TensorOp"),
    "TensorQuant": ("params", "TensorQuant"),
    "UNSUPPORTED_MODES": ("annotate", "UNSUPPORTED_MODES"),
    "UnsupportedLayerError": ("errors", "UnsupportedLayerError"),
    "UnsupportedModelError": ("errors", "UnsupportedModelError"),
    "WeightParity": ("parity", "WeightParity"),
    "atomic_path": ("export", "atomic_path"),
    "atomic_write": ("export", "atomic_write"),
    "builtin_choice": ("annotate", "builtin_choice"),
    "compare_with_tflite": ("matching", "compare_with_tflite"),
    "flatten": ("graph", "flatten"),
    "int8_embedded": ("params", "as_deployed"),
    "interpreter": ("tflite", "interpreter"),
    "layer_drift": ("parity", "layer_drift"),
    "op_outputs": ("tflite", "op_outputs"),
    "output_channel_axis": ("configs", "output_channel_axis"),
    "pack_int4": ("export", "pack_int4"),
    "prepare": ("rewrites", "prepare"),
    "quantize_multiplier": ("fixedpoint", "quantize_multiplier"),
    "replace_tf_ops": ("graph", "replace_tf_ops"),
    "requant_multiplier": ("fixedpoint", "requant_multiplier"),
    "to_c_header": ("export", "to_c_header"),
    "to_encodings": ("export", "to_encodings"),
    "to_json": ("export", "to_json"),
    "to_npz": ("export", "to_npz"),
    "unpack_int4": ("export", "unpack_int4"),
    "weight_tensors": ("tflite", "weight_tensors"),
}

try:
    __version__ = _version("tfmot-ext")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__", *sorted(_EXPORTS)]


if not TYPE_CHECKING:  # type checkers see the imports below, not a catch-all

    def __getattr__(name: str) -> Any:
        """Import a public name's module on first use (PEP 562)."""
        if name in _MOVED:
            module, attr = _MOVED[name]
            _warnings.warn(f"tfmot_ext.{name} moved: import it from tfmot_ext.{module}"
                           + (f" (as {attr})" if attr != name else ""), DeprecationWarning,
                           stacklevel=2)
            return getattr(_importlib.import_module(f"tfmot_ext.{module}"), attr)
        if name not in _EXPORTS:
            raise AttributeError(f"module 'tfmot_ext' has no attribute {name!r}")
        module, attr = _EXPORTS[name]
        value = getattr(_importlib.import_module(f"tfmot_ext.{module}"), attr)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*__all__, "__doc__", "__file__", "__name__", "__path__", "__version__"})


class _Package(_types.ModuleType):
    """The package's module type: keeps ``tfmot_ext.annotate``/``extract``/``export`` the
    functions of those names when their submodules are imported (the import system sets
    a submodule as an attribute of its package, which would hide the function)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, _types.ModuleType) and _EXPORTS.get(name, ("", ""))[0] == name:
            value = getattr(value, _EXPORTS[name][1])
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from tfmot_ext.annotate import Rule, annotate, plan, quantize
    from tfmot_ext.calibrate import calibrate
    from tfmot_ext.configs import (
        LayerQuantizeConfig,
        conv_config,
        conv_transpose_config,
        default_config_for,
        dense_config,
        depthwise_conv_config,
        no_op_config,
        output_only_config,
        separable_conv_config,
    )
    from tfmot_ext.errors import TfmotExtError
    from tfmot_ext.export import export
    from tfmot_ext.extract import extract
    from tfmot_ext.folding import FreezeBatchNorm, freeze_batch_norm
    from tfmot_ext.params import LayerQuantParams, QuantizedModelParams, as_deployed
    from tfmot_ext.parity import ParityReport, verify
    from tfmot_ext.quantizers import (
        FixedRangeQuantizer,
        LSQQuantizer,
        MinMaxQuantizer,
        PowerOfTwoQuantizer,
        activation_quantizer,
        weight_quantizer,
    )
    from tfmot_ext.reference import run_reference
    from tfmot_ext.report import layer_reports, write_html_report
    from tfmot_ext.scheme import DefaultScheme, FoldingScheme
    from tfmot_ext.scope import custom_objects, load_qat_model, quantize_scope
    from tfmot_ext.summary import format_summary, summarize
    from tfmot_ext.tflite import float_ops, run_int8, save_tflite, to_tflite
