"""Loading QAT models: the custom objects tfmot_ext registers, and a scope for them.

Every quantizer, config and layer of tfmot_ext is registered with
``tf_keras.saving.register_keras_serializable(package="tfmot_ext")`` when its module is
imported; ``import tfmot_ext`` alone imports none of them (the training half loads on
first use), so load with :func:`load_qat_model`, or inside :func:`quantize_scope`,
which imports them all and adds tfmot's own objects (QuantizeWrapper, QuantizeLayer,
its quantizers): what loading a QAT model needs. A plain ``tf_keras.models.load_model``
works after ``import tfmot_ext.scope``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from tfmot_ext import configs, folding, graph, quantizers
from tfmot_ext._compat import keras, tfmot
from tfmot_ext.errors import H5FormatError, UnsupportedModelError

__all__ = ["custom_objects", "load_qat_model", "quantize_scope"]

_CLASSES: tuple[type, ...] = (
    quantizers.MinMaxQuantizer,
    quantizers.PowerOfTwoQuantizer,
    quantizers.FixedRangeQuantizer,
    quantizers.LSQQuantizer,
    configs.LayerQuantizeConfig,
    folding.FoldedConv2DBatchNorm,
    folding.FoldedDepthwiseConv2DBatchNorm,
    folding.FoldedDenseBatchNorm,
    graph.TensorOp,
    graph.Fixed,
)


def custom_objects() -> dict[str, Any]:
    """Every Keras object tfmot_ext defines, by registered and by bare class name.

    >>> objs = custom_objects()
    >>> objs["tfmot_ext>LSQQuantizer"] is objs["LSQQuantizer"]
    True
    """
    out: dict[str, Any] = {}
    for cls in _CLASSES:
        out[keras.utils.get_registered_name(cls)] = cls
        out[cls.__name__] = cls
    return out


@contextlib.contextmanager
def quantize_scope(*extra: dict[str, Any]) -> Iterator[None]:
    """tfmot's ``quantize_scope`` with tfmot_ext's objects (and any ``extra`` dicts) added.

    Example::

        with tfmot_ext.quantize_scope():
            model = tf_keras.models.load_model("qat.h5")
    """
    objs = custom_objects()
    for d in extra:
        objs.update(d)
    with tfmot.quantization.keras.quantize_scope(objs):
        yield


def _code_bearing_layers(config: Any, found: list[str] | None = None) -> list[str]:
    """Names of layers whose config carries Python code (Lambda: marshalled bytecode)."""
    out = [] if found is None else found
    if isinstance(config, dict):
        if config.get("class_name") == "Lambda" or "function_type" in config:
            inner = config.get("config", config)
            out.append(str(inner.get("name", "?")) if isinstance(inner, dict) else "?")
        for v in config.values():
            _code_bearing_layers(v, out)
    elif isinstance(config, list):
        for v in config:
            _code_bearing_layers(v, out)
    return out


def _stored_config(path: str) -> Any:
    """The model config stored in an H5 file or SavedModel folder, read without Keras."""
    from tfmot_ext.records import read_model_config

    if os.path.isdir(path):
        meta = os.path.join(path, "keras_metadata.pb")
        if not os.path.exists(meta):
            return None
        with open(meta, "rb") as f:
            raw = f.read().decode("utf-8", "replace")
        # the metadata proto holds the layers' JSON configs as strings; a Lambda shows as
        # its class name with its bytecode next to it
        return {"class_name": "Lambda"} if '"class_name": "Lambda"' in raw else None
    try:
        return read_model_config(path)
    except H5FormatError:  # not an H5 model: Keras's own error says what it is
        return None


def load_qat_model(path: str | os.PathLike[str], *extra: dict[str, Any],
                   trust_code: bool = False) -> Any:
    """Load a QAT model (H5 file or SavedModel folder) with tfmot's and tfmot_ext's objects.

    Keras rebuilds a Lambda layer from the Python bytecode stored in the file and runs
    it while loading, even in its default safe mode for H5 files. Unless
    ``trust_code``, such files are refused before Keras sees them.

    Raises:
        UnsupportedModelError: the path is missing, the file stores code and
            ``trust_code`` is False, or Keras cannot load it (with Keras's reason).
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise UnsupportedModelError(f"'{p}': no such file or folder")
    if not trust_code:
        code = _code_bearing_layers(_stored_config(p))
        if code:
            raise UnsupportedModelError(
                f"'{p}' stores Python code (Lambda layer(s) {code}); loading it would run "
                "that code. tfmot-ext does not load such files: inspect and extract read "
                "them with h5py only; if you trust the file, load it yourself with "
                "tfmot_ext.load_qat_model(path, trust_code=True)")
    try:
        with quantize_scope(*extra):
            return keras.models.load_model(p, compile=False)
    except Exception as e:  # Keras raises many types; report them as one
        raise UnsupportedModelError(
            f"'{p}' could not be loaded as a QAT model ({type(e).__name__}: {e})"[:1500]
            + "; commands that only read weights (inspect, extract) work on H5 files "
            "without loading them") from e
