"""Loading QAT models: the custom objects tfmot_ext registers, and a scope for them.

Every quantizer and config of tfmot_ext is registered with
``tf_keras.saving.register_keras_serializable(package="tfmot_ext")``, so importing
tfmot_ext is enough for ``load_model`` to find them. :func:`quantize_scope` adds
tfmot's own objects (QuantizeWrapper, QuantizeLayer, its quantizers), which is what
loading a QAT model needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from tfmot_ext import configs, folding, quantizers
from tfmot_ext._compat import keras, tfmot

__all__ = ["custom_objects", "quantize_scope"]

_CLASSES: tuple[type, ...] = (
    quantizers.MinMaxQuantizer,
    quantizers.PowerOfTwoQuantizer,
    quantizers.FixedRangeQuantizer,
    quantizers.LSQQuantizer,
    configs.LayerQuantizeConfig,
    folding.FoldedConv2DBatchNorm,
    folding.FoldedDepthwiseConv2DBatchNorm,
    folding.FoldedDenseBatchNorm,
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
