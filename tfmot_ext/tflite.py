"""Full-integer TFLite conversion of QAT models, and one interpreter helper.

``to_tflite`` sets up the converter the way a full-integer deployment needs it (the
pitfalls users hit: the representative dataset is still required for a QAT model's
input and for any tensor without a trained range; ``TFLITE_BUILTINS_INT8`` so nothing
silently stays float; int8 inputs and outputs) and checks the result: any operator
that still computes in float raises :class:`tfmot_ext.errors.ConversionError` naming
it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from tfmot_ext._compat import check_keras2, tf
from tfmot_ext.errors import ConversionError

__all__ = ["float_ops", "interpreter", "run_int8", "to_tflite"]

logger = logging.getLogger(__name__)

#: Operators allowed to touch float tensors in a full-integer model with float I/O.
_IO_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


def interpreter(model_content: bytes, **kwargs: Any) -> Any:
    """A TFLite interpreter: ``ai_edge_litert``'s when installed, else ``tf.lite``'s.

    Tensors are allocated. Extra keyword arguments go to the interpreter
    (``experimental_op_resolver_type``, ``num_threads``, ...).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the optional "litert" extra is not installed
        Interpreter = tf.lite.Interpreter  # noqa: N806
    interp = Interpreter(model_content=model_content, **kwargs)
    interp.allocate_tensors()
    return interp


def float_ops(model_content: bytes, allow_io: bool = False) -> list[str]:
    """Names (``OP_NAME:index``) of operators with a float32 input or output tensor.

    Reads the model's own operators (an interpreter without default delegates, whose
    delegate nodes would hide them).
    """
    interp = tf.lite.Interpreter(
        model_content=model_content,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType
        .BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    found = []
    for op in interp._get_ops_details():
        if allow_io and op["op_name"] in _IO_OPS:
            continue
        tensors = [i for i in (*op["inputs"], *op["outputs"]) if i >= 0]
        if any(details[i]["dtype"] == np.float32 for i in tensors if i in details):
            found.append(f"{op['op_name']}:{op['index']}")
    return found


def _validated(data: Any, model: Any) -> np.ndarray:
    """Representative data as float32 ``(N, *input_shape)``, or :class:`ConversionError`."""
    arr = np.asarray(data, np.float32)
    expected = tuple(model.input_shape[1:])
    if arr.ndim != len(expected) + 1 or any(
            e is not None and e != a for e, a in zip(expected, arr.shape[1:])):
        raise ConversionError(
            f"representative data has shape {arr.shape}; model '{model.name}' takes "
            f"(N, {', '.join(str(e) for e in expected)}). Pass a NumPy array of inputs")
    if len(arr) == 0:
        raise ConversionError("representative data is empty; pass ~100-500 real inputs")
    if not np.all(np.isfinite(arr)):
        raise ConversionError("representative data contains NaN or Inf")
    return arr


def _one_at_a_time(arr: np.ndarray) -> Iterator[list[np.ndarray]]:
    for i in range(len(arr)):
        yield [arr[i : i + 1]]


def run_int8(model_content: bytes, x: np.ndarray) -> np.ndarray:
    """Raw int8 outputs of an int8-I/O model on float inputs ``x``, one input at a time.

    Each input is quantized with the model's input scale and zero point
    (``clamp(round(x / s + z), -128, 127)``).
    """
    interp = interpreter(model_content)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    s, zp = inp["quantization"]
    outs = []
    for i in range(len(x)):
        interp.set_tensor(inp["index"],
                          np.clip(np.round(x[i : i + 1] / s + zp), -128, 127).astype(np.int8))
        interp.invoke()
        outs.append(interp.get_tensor(out["index"])[0])
    return np.asarray(outs)


def to_tflite(model: Any, representative_data: Iterable[Any] | np.ndarray, *,
              int8_io: bool = True) -> bytes:
    """Convert a QAT (or float) tf_keras model to a full-integer TFLite flatbuffer.

    Args:
        model: a single-input tf_keras model (typically from :func:`tfmot_ext.quantize`).
        representative_data: an array of real inputs, shape ``(N, *input_shape)``; one
            at a time is fed to the converter (used for ranges QAT did not train).
        int8_io: int8 input and output tensors (else float, with QUANTIZE/DEQUANTIZE
            at the edges).

    Returns:
        The ``.tflite`` bytes.

    Raises:
        ConversionError: bad representative data, a converter failure (with its
            message), or an operator left computing in float.
    """
    check_keras2(model, "model")
    data = _validated(representative_data, model)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: _one_at_a_time(data)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    try:
        content = conv.convert()
    except Exception as e:  # the converter raises its own ConverterError types
        raise ConversionError(f"TFLite conversion of model '{model.name}' failed: {e}"[:2000]
                              ) from e
    left = float_ops(content, allow_io=not int8_io)
    if left:
        raise ConversionError(
            f"model '{model.name}': full-integer conversion left float operators {left}; "
            "quantize the layers they come from (or check unsupported='skip' layers)")
    return bytes(content)
