"""Exception hierarchy of tfmot_ext.

Every error raised on bad input derives from :class:`TfmotExtError`, and its
message names the offending layer or file and says how to fix it. The classes
also derive from the builtin exception a caller would expect (``ValueError``,
``TypeError``), so generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConversionError",
    "ExportError",
    "ExtractionError",
    "H5FormatError",
    "IntegerReferenceError",
    "ParityError",
    "PolicyError",
    "TfmotExtError",
    "UnsupportedLayerError",
    "UnsupportedModelError",
]


class TfmotExtError(Exception):
    """Base class of every error raised by tfmot_ext."""


class ConfigError(TfmotExtError, ValueError):
    """A quantizer or QuantizeConfig was given invalid arguments.

    Examples: bits outside 2..16, a per-channel axis the tensor lacks, a config
    naming a weight attribute the layer does not have.
    """


class PolicyError(TfmotExtError, ValueError):
    """An annotation policy is malformed, or (with ``strict=True``) a rule matched no layer."""


class UnsupportedModelError(TfmotExtError, TypeError):
    """The model cannot be handled: a Keras 3 object, a subclassed model, not a model at all."""


class UnsupportedLayerError(TfmotExtError, ValueError):
    """A layer has no quantization config and ``unsupported="error"`` was requested."""


class ExtractionError(TfmotExtError, ValueError):
    """Quantized parameters cannot be recovered: a missing min/max variable, a NaN/Inf or
    inverted range, an unreadable config, a model that is not quantization-aware."""


class H5FormatError(ExtractionError):
    """The file is missing, not HDF5, truncated, or not a Keras H5 model."""


class ExportError(TfmotExtError, ValueError):
    """An export cannot be written (unknown format, missing folder, values out of range)."""


class ConversionError(TfmotExtError, RuntimeError):
    """TFLite conversion failed, or a full-integer request left float operators."""


class IntegerReferenceError(TfmotExtError, ValueError):
    """The integer reference cannot run a layer (an op or setting it has no kernel for)."""


class ParityError(TfmotExtError, RuntimeError):
    """A converted model does not meet the parity threshold asked for."""
