"""The single import point for Keras, TensorFlow and tfmot.

tfmot 0.8 works with Keras 2 only, which TensorFlow >= 2.16 ships as the separate
``tf_keras`` package. Every module of tfmot_ext imports ``keras`` from here, so
the rest of the code never touches ``tf.keras`` (which is Keras 3 on TF >= 2.16).

This module sets no environment variable. Note that importing
``tensorflow_model_optimization`` itself sets ``TF_USE_LEGACY_KERAS=1`` (tfmot's
own ``keras/compat.py``); tfmot_ext adds nothing to that.

Private tfmot names needed by tfmot_ext are imported here and only here, each
with the reason.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from tfmot_ext.errors import UnsupportedModelError

__all__ = [
    "QuantizeAnnotate",
    "QuantizeLayer",
    "QuantizeWrapper",
    "called_weight_quantizers",
    "check_keras2",
    "default_8bit_transforms",
    "flatbuffer_bytes",
    "flatbuffer_model",
    "interpreter_ops",
    "is_graph_network",
    "keras",
    "live_code_deserialization",
    "own_trainable_weights",
    "set_grouped_convolution_op",
    "tf",
    "tfmot",
    "unset_grouped_convolution_op",
    "weight_quantizer_entries",
]

_qk = tfmot.quantization.keras

# Private import: tfmot does not export the annotation wrapper nor QuantizeLayer
# (the input quantizer quantize_apply inserts), and tfmot_ext must recognise both
# when walking a model. The other private reads of tfmot, tf_keras and TFLite are the
# functions below, each with its reason; no other module touches a private name of
# theirs (tests/test_api.py checks).
from tensorflow_model_optimization.python.core.quantization.keras import (  # noqa: E402
    quantize_annotate as _quantize_annotate,
)
from tensorflow_model_optimization.python.core.quantization.keras import (  # noqa: E402
    quantize_layer as _quantize_layer,
)

# Private import: tfmot's public ``default_8bit.default_8bit_transforms`` omits the
# Dense+BatchNorm transforms that its own default scheme applies; tfmot_ext's
# scheme reuses the complete list.
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_transforms,
)

QuantizeWrapper = _qk.QuantizeWrapper


def called_weight_quantizers(wrapper: Any) -> list[Any]:
    """The weight quantizer objects a built QuantizeWrapper calls.

    Private attribute: tfmot keeps them only in ``QuantizeWrapper._weight_vars``
    (``(weight, quantizer, variables)``, filled at build); a config's
    ``get_weights_and_quantizers`` may return copies (tfmot_ext's per-channel
    quantizers get their axis resolved there). A folded layer's own kernel quantizer
    is not among them.
    """
    return [entry[1] for entry in weight_quantizer_entries(wrapper)]


def weight_quantizer_entries(wrapper: Any) -> list[tuple[Any, Any, dict[str, Any]]]:
    """``(weight, quantizer, variables)`` of each weight a built QuantizeWrapper quantizes
    (private attribute ``_weight_vars``, see :func:`called_weight_quantizers`)."""
    return [tuple(entry) for entry in getattr(wrapper, "_weight_vars", ())]


def interpreter_ops(interp: Any) -> list[dict[str, Any]]:
    """Every operator of a TFLite interpreter (``op_name``, ``inputs``, ``outputs``, ...).

    Private method: ``tf.lite.Interpreter`` lists tensors publicly but its operators only
    through ``_get_ops_details``, the one way to know which op wrote which tensor.
    """
    return list(interp._get_ops_details())


def flatbuffer_model(content: bytes) -> Any:
    """A ``.tflite`` flatbuffer as TFLite's mutable object API (``schema_fb.ModelT``).

    Not in ``tf.*``: ``tensorflow.lite.tools.flatbuffer_utils`` ships in the TensorFlow
    wheel and is the one reader and writer of the schema there.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(bytearray(content))


def flatbuffer_bytes(model: Any) -> bytes:
    """The ``.tflite`` bytes of a ``schema_fb.ModelT`` (see :func:`flatbuffer_model`)."""
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def own_trainable_weights(layer: Any) -> list[Any] | None:
    """The list a Keras layer keeps its own trainable weights in, or None.

    Private attribute (``_trainable_weights``): the only way to put the inner layer's
    weights first in a QuantizeWrapper's order (quantizers.py ``_keep_weight_order``).
    """
    return getattr(layer, "_trainable_weights", None)


@contextlib.contextmanager
def live_code_deserialization() -> Iterator[None]:
    """Let tf_keras rebuild ``Lambda`` layers from the config of a model in memory.

    Private class (``serialization_lib.SafeModeScope``): tfmot's ``quantize_apply``
    rebuilds the model from its config, and tf_keras's safe mode refuses the
    marshalled bytecode of a Lambda's Python function there. That bytecode is the
    user's own live code, taken from the model in this process by ``get_config``, not
    read from a file; files are never loaded under this scope.
    """
    from tf_keras.src.saving import serialization_lib

    with serialization_lib.SafeModeScope(safe_mode=False):
        yield


def set_grouped_convolution_op(layer: Any, op: Any) -> None:
    """Make a grouped Keras conv layer compute with ``op(inputs, kernel)``.

    Private attribute (``_jit_compiled_convolution_op``): tf_keras's ``Conv.call`` runs a
    grouped convolution through that cached XLA function, not the public
    ``convolution_op``; :func:`tfmot_ext.dilation.native_dilations` replaces it on the
    instance while the converter traces, and :func:`unset_grouped_convolution_op`
    restores the class's.
    """
    layer._jit_compiled_convolution_op = op


def unset_grouped_convolution_op(layer: Any) -> None:
    """Undo :func:`set_grouped_convolution_op` (private attribute, same reason)."""
    del layer._jit_compiled_convolution_op


def is_graph_network(model: Any) -> bool:
    """Whether a tf_keras Model is functional (a graph of layers), not subclassed.

    Private attribute (``_is_graph_network``): tf_keras has no public test, and tfmot
    accepts only such models.
    """
    return bool(getattr(model, "_is_graph_network", False))


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


if _minor(tf.__version__) != _minor(keras.__version__):  # pragma: no cover - install-time
    warnings.warn(
        f"tensorflow {tf.__version__} and tf-keras {keras.__version__} differ in minor "
        "version; install matching releases (pip install 'tf-keras==<tensorflow major.minor>.*')",
        RuntimeWarning, stacklevel=2)  # public; QuantizeWrapperV2 subclasses it
QuantizeAnnotate = _quantize_annotate.QuantizeAnnotate
QuantizeLayer = _quantize_layer.QuantizeLayer


def _is_keras3_object(obj: Any) -> bool:
    module = type(obj).__module__ or ""
    return module == "keras" or module.startswith("keras.")


def check_keras2(obj: Any, what: str = "model") -> None:
    """Raise :class:`UnsupportedModelError` unless ``obj`` is a tf_keras (Keras 2) object.

    Args:
        obj: a model or layer handed to a public function.
        what: how to call it in the message ("model", "layer").

    Raises:
        UnsupportedModelError: for Keras 3 objects (``keras`` / ``tf.keras`` on
            TF >= 2.16) and for anything that is not a Keras layer.
    """
    if isinstance(obj, keras.layers.Layer):
        return
    if _is_keras3_object(obj):
        name = getattr(obj, "name", type(obj).__name__)
        raise UnsupportedModelError(
            f"{what} '{name}' is a Keras 3 object ({type(obj).__module__}.{type(obj).__name__}); "
            "tfmot and tfmot_ext need Keras 2. Rebuild it with tf_keras: "
            "`import tf_keras as keras` and construct the same layers, or save the Keras 3 "
            "model's weights (model.save_weights('w.weights.h5')) and load them into the "
            "tf_keras twin by layer order."
        )
    raise UnsupportedModelError(
        f"expected a tf_keras {what}, got {type(obj).__module__}.{type(obj).__name__}"
    )
