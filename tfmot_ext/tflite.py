"""Full-integer TFLite conversion of QAT models, and one interpreter helper.

``to_tflite`` sets up the converter the way a full-integer deployment needs it (the
pitfalls users hit: the representative dataset is still required for a QAT model's
input and for any tensor without a trained range; ``TFLITE_BUILTINS_INT8`` so nothing
silently stays float; int8 inputs and outputs) and checks the result: any operator
that still computes in float raises :class:`tfmot_ext.errors.ConversionError` naming
it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfmot_ext import quantizers as _quantizers
from tfmot_ext._compat import (
    QuantizeLayer,
    QuantizeWrapper,
    called_weight_quantizers,
    check_keras2,
    flatbuffer_bytes,
    flatbuffer_model,
    interpreter_ops,
    keras,
    tf,
)
from tfmot_ext.dilation import native_dilations
from tfmot_ext.errors import ConfigError, ConversionError
from tfmot_ext.rules import EXACT_WEIGHT_BITS, FLOAT_ONLY_OPS, KERNEL_ROUNDING
from tfmot_ext.summary import quantizer_bits, range_variables, weight_quantizers

__all__ = ["KERNELS", "OpTensor", "WeightTensor", "collect_outputs", "fixed_shapes",
           "float_ops", "interpreter", "keras_layout", "op_outputs", "regridded_weights",
           "run_int8", "save_tflite", "to_tflite", "undelegated", "unset_ranges",
           "weight_tensors", "wide_activations"]

logger = logging.getLogger(__name__)

#: Operators allowed to touch float tensors in a full-integer model with float I/O.
_IO_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


#: Warnings TF emits on every conversion or interpreter creation that say nothing about
#: the model at hand (the QAT input range comes from the representative data; the
#: interpreter fallback is deliberate when ai_edge_litert is not installed).
_NOISE = ("Statistics for quantized inputs were expected",
          r"\s*Warning: tf.lite.Interpreter is deprecated")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        for pattern in _NOISE:
            warnings.filterwarnings("ignore", message=pattern, category=UserWarning)
        yield


def _tf_interpreter(**kwargs: Any) -> Any:
    with _quiet():
        return tf.lite.Interpreter(**kwargs)


def interpreter(model_content: bytes, **kwargs: Any) -> Any:
    """A TFLite interpreter: ``ai_edge_litert``'s when installed, else ``tf.lite``'s.

    Tensors are allocated. Extra keyword arguments go to the interpreter
    (``experimental_op_resolver_type``, ``num_threads``, ...).
    """
    interp = _backend()[0](model_content=model_content, **kwargs)
    interp.allocate_tensors()
    return interp


#: Interpreter kernel sets: TFLite's reference kernels, its optimized builtin kernels
#: without delegates, the default (XNNPACK-delegated) configuration, and TFLite Micro's
#: kernels (the ``tflite-micro`` package, :mod:`tfmot_ext.micro`).
KERNELS = tuple(KERNEL_ROUNDING)


def _backend() -> tuple[Any, Any]:
    """``(Interpreter, OpResolverType)``: ``ai_edge_litert``'s when installed, else
    ``tf.lite``'s (the optional "litert" extra)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        return _tf_interpreter, tf.lite.experimental.OpResolverType
    return Interpreter, OpResolverType


def _resolver(kernels: str) -> dict[str, Any]:
    """The TFLite interpreter's arguments for a kernel set (TFLite Micro is not one)."""
    if kernels not in KERNELS or kernels == "micro":
        raise ConfigError(f"kernels must be one of {KERNELS} (micro: tfmot_ext.micro), "
                          f"got {kernels!r}")
    if kernels == "default":
        return {}
    types = _backend()[1]
    return {"experimental_op_resolver_type": types.BUILTIN_REF if kernels == "reference"
            else types.BUILTIN_WITHOUT_DEFAULT_DELEGATES}


@dataclass(frozen=True)
class OpTensor:
    """One operator's int8 output over a batch, as the interpreter computed it.

    Invariant: ``values`` has the batch as its first axis (one invoke per example).
    """

    name: str
    op: str
    values: np.ndarray
    scale: float
    zero_point: int


def op_outputs(model_content: bytes, x: np.ndarray, kernels: str = "reference",
               intermediates: bool = True) -> list[OpTensor]:
    """Every operator's int8 output tensor (or only the model outputs) on a batch.

    Args:
        model_content: an int8-I/O ``.tflite`` model.
        x: inputs ``(N, ...)``, one example per invoke: int8 as the model takes them
            (integer token ids for an integer-input model), or float, quantized with
            the model's input scale and zero point the way TFLite's QUANTIZE does
            (:func:`tfmot_ext.kernels.quantize_input`).
        kernels: ``"reference"`` (``BUILTIN_REF``), ``"builtin"`` (optimized kernels,
            no delegate), ``"default"`` (XNNPACK delegate; only the outputs can be
            read, the delegate does not materialize intermediate tensors) or
            ``"micro"`` (TFLite Micro's interpreter, :func:`tfmot_ext.micro.op_outputs`).
        intermediates: read every operator's output, not only the model's outputs.
    """
    if kernels == "micro":
        graph = undelegated(model_content)[0]
    else:
        preserve = intermediates and kernels != "default"
        graph = interpreter(model_content, experimental_preserve_all_tensors=preserve,
                            **_resolver(kernels))
        intermediates = preserve
    inp = graph.get_input_details()[0]
    in_type = np.dtype(inp["dtype"])
    if in_type.kind == "f":
        raise ConversionError("op_outputs needs an int8-input model (to_tflite(int8_io=True))")
    if in_type == np.int8 and np.asarray(x).dtype != np.int8:
        from tfmot_ext.kernels import quantize_input

        x = quantize_input(x, *inp["quantization"])
    if kernels == "micro":
        from tfmot_ext import micro

        return micro.op_outputs(model_content, np.asarray(x, in_type), intermediates, graph)

    def run(xi: np.ndarray) -> Callable[[int], np.ndarray]:
        graph.set_tensor(inp["index"], xi)
        graph.invoke()
        return graph.get_tensor

    return collect_outputs(graph, np.asarray(x, in_type), run, intermediates)


def collect_outputs(graph: Any, x: np.ndarray,
                    run: Callable[[np.ndarray], Callable[[int], np.ndarray]],
                    intermediates: bool) -> list[OpTensor]:
    """The int8 outputs of every operator of ``graph`` (a ``tf.lite`` interpreter on
    the model: its operators and tensor details), or of the model only, over ``x``:
    ``run(x[i : i + 1])`` invokes one example on some runtime and returns a reader of
    a tensor by index. A tensor with the batch merged in (a Dense on ``(T, C)`` runs
    on ``(T, C)``) is kept whole: ``(N, T, C)`` when stacked."""
    details = {d["index"]: d for d in graph.get_tensor_details()}
    if intermediates:
        ops = interpreter_ops(graph)
        op_of = {o: op["op_name"] for op in ops for o in op["outputs"]}
    else:
        op_of = {d["index"]: "OUTPUT" for d in graph.get_output_details()}
    wanted = [i for i in op_of if details[i]["dtype"] == np.int8]
    rows: dict[int, list[np.ndarray]] = {i: [] for i in wanted}
    for i in range(len(x)):
        read = run(x[i : i + 1])
        for t in wanted:
            v = np.asarray(read(t))
            rows[t].append((v[0] if v.shape[:1] == (1,) else v).copy())
    out = []
    for t in wanted:
        s, z = details[t]["quantization"]
        out.append(OpTensor(details[t]["name"], op_of[t], np.stack(rows[t]), float(s), int(z)))
    return out


#: Operators with a constant int8 weight: the positions of (input, weight, bias) in its
#: inputs (-1: none). TRANSPOSE_CONV's first input is the output shape; PRELU's weight
#: is its alpha.
_WEIGHT_OPS = {"CONV_2D": (0, 1, 2), "DEPTHWISE_CONV_2D": (0, 1, 2),
               "FULLY_CONNECTED": (0, 1, 2), "TRANSPOSE_CONV": (2, 1, 3), "PRELU": (0, 1, -1)}


@dataclass(frozen=True)
class WeightTensor:
    """A Conv/DepthwiseConv/TransposeConv/FullyConnected/PRELU operator's stored weights
    and quantization.

    ``filter`` is in TFLite's layout (Conv and transposed conv ``OHWI``, depthwise
    ``1HW(C*M)``, FullyConnected ``OI``, PRELU's alpha as broadcast against the input);
    :func:`keras_layout` turns it into Keras's. Scales are
    float32 as stored, one per output channel or one per tensor.
    """

    op: str
    filter_name: str
    filter: np.ndarray
    filter_scales: np.ndarray
    bias: np.ndarray | None
    bias_scales: np.ndarray | None
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int


def undelegated(model_content: bytes) -> tuple[Any, dict[int, dict[str, Any]]]:
    """A ``tf.lite`` interpreter without default delegates (whose delegate nodes would
    hide the model's own operators) and its tensor details by index."""
    interp = _tf_interpreter(
        model_content=model_content,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType
        .BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    return interp, {d["index"]: d for d in interp.get_tensor_details()}


def fixed_shapes(model_content: bytes) -> bytes:
    """The same model with every tensor's stored shape the one it has at batch 1.

    A dynamic-batch conversion stores a shape signature with -1 for the batch (and
    for any dimension merged with it, e.g. the ``(N * T, C)`` input of a Dense on a
    sequence) and a placeholder 1 there in the shape; the TFLite interpreter resizes
    at run time, but TFLite Micro plans its arena from the stored shapes and cannot
    (its RESHAPE then sees 2 elements where there are 10). Here the model is run once
    at batch 1 on zeros and each tensor's shape and signature are set to the shape it
    had: operators, tensors, weights and quantization are unchanged, so everything
    extracted for the dynamic conversion holds for the result.

    Raises:
        ConversionError: the model is not a single-subgraph TFLite model, or a tensor
            with a dynamic dimension has no shape in the interpreter after the run.
    """
    interp, _ = undelegated(model_content)
    for d in interp.get_input_details():
        shape = tuple(int(v) for v in d["shape"])
        interp.set_tensor(d["index"], np.zeros(shape, d["dtype"]))
    interp.invoke()
    shapes = {d["index"]: [int(v) for v in d["shape"]] for d in interp.get_tensor_details()}
    model = flatbuffer_model(model_content)
    if len(model.subgraphs) != 1:
        raise ConversionError(f"fixed_shapes: the model has {len(model.subgraphs)} "
                              "subgraphs (control flow); only single-subgraph models are "
                              "supported: convert with to_tflite(..., static_batch=True)")
    for i, tensor in enumerate(model.subgraphs[0].tensors):
        if tensor.shapeSignature is not None and -1 in list(tensor.shapeSignature):
            if i not in shapes:
                raise ConversionError(
                    f"fixed_shapes: tensor {i} ({tensor.name!r}) has a dynamic shape and "
                    "no shape after a batch-1 run; convert with "
                    "to_tflite(..., static_batch=True)")
            tensor.shape = np.asarray(shapes[i], np.int32)
            tensor.shapeSignature = np.asarray(shapes[i], np.int32)
    return flatbuffer_bytes(model)


def weight_tensors(model_content: bytes) -> list[WeightTensor]:
    """The weighted operators of a ``.tflite`` model with their tensors, in graph order."""
    interp, details = undelegated(model_content)
    out = []
    for op in interpreter_ops(interp):
        if op["op_name"] not in _WEIGHT_OPS:
            continue
        inputs = list(op["inputs"])
        i, f, b = (inputs[k] if 0 <= k < len(inputs) else -1 for k in _WEIGHT_OPS[op["op_name"]])
        o = op["outputs"][0]

        def q(t: int) -> dict[str, Any]:
            return dict(details[t]["quantization_parameters"])

        out.append(WeightTensor(
            op["op_name"], details[f]["name"], interp.get_tensor(f),
            np.asarray(q(f)["scales"], np.float32),
            interp.get_tensor(b) if b >= 0 else None,
            np.asarray(q(b)["scales"], np.float32) if b >= 0 else None,
            float(q(i)["scales"][0]), int(q(i)["zero_points"][0]),
            float(q(o)["scales"][0]), int(q(o)["zero_points"][0])))
    return out


def keras_layout(op: str, tfl_filter: np.ndarray, keras_shape: tuple[int, ...]) -> np.ndarray:
    """TFLite filter -> Keras layout: Conv OHWI->HWIO, transposed conv OHWI->HWOI,
    depthwise 1HW(CM)->HWCM, FC OI->IO, PRELU's alpha as it is."""
    if op == "CONV_2D":
        return np.transpose(tfl_filter, (1, 2, 3, 0))
    if op == "TRANSPOSE_CONV":
        return np.transpose(tfl_filter, (1, 2, 0, 3))
    if op in ("DEPTHWISE_CONV_2D", "PRELU"):
        return tfl_filter.reshape(keras_shape)
    return np.asarray(tfl_filter.T)


def _converter_message(e: Exception) -> str:
    """The converter's own error text: its exception's message, or (the MLIR errors it
    logs, often with an empty message) the ``error_message`` of each of its ``errors``."""
    found = [str(getattr(d, "error_message", "")).strip()
             for d in getattr(e, "errors", None) or ()]
    text = "; ".join(m for m in found if m) or str(e).strip()
    return text or f"{type(e).__name__} without a message (the MLIR error is in its log)"


def _float_only_hint(model: Any) -> str:
    """Where ``model`` has layers the converter keeps float in a QAT graph
    (:data:`tfmot_ext.rules.FLOAT_ONLY_OPS`), which and the fix: such a layer also makes
    the converter fail on a scale constraint it cannot meet around the float op."""
    def elu(layer: Any) -> bool:
        inner = getattr(layer, "layer", layer)
        act = getattr(getattr(inner, "activation", None), "__name__", "")
        return isinstance(inner, keras.layers.ELU) or act == "elu"

    names = [la.name for la in model.layers if elu(la)]
    return (f" (the model has ELU layers {names}: {FLOAT_ONLY_OPS['ELU']})" if names else "")


def float_ops(model_content: bytes, allow_io: bool = False) -> list[str]:
    """Names (``OP_NAME:index``) of operators with a float32 input or output tensor.

    Reads the model's own operators (an interpreter without default delegates, whose
    delegate nodes would hide them).
    """
    interp, details = undelegated(model_content)
    found = []
    for op in interpreter_ops(interp):
        if allow_io and op["op_name"] in _IO_OPS:
            continue
        tensors = [i for i in (*op["inputs"], *op["outputs"]) if i >= 0]
        if any(details[i]["dtype"] == np.float32 for i in tensors if i in details):
            found.append(f"{op['op_name']}:{op['index']}")
    return found


def _validated(data: Any, model: Any) -> np.ndarray:
    """Representative data as ``(N, *input_shape)`` of the model's input type (float32,
    or the integer type of token-id inputs), or :class:`ConversionError`."""
    dtype = np.dtype(getattr(model.inputs[0].dtype, "as_numpy_dtype", np.float32))
    arr = np.asarray(data, dtype if dtype.kind in "iu" else np.float32)
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


def run_int8(model_content: bytes, x: np.ndarray, kernels: str = "builtin") -> np.ndarray:
    """Raw int8 outputs of an int8-I/O model on float inputs ``x``, one input at a time.

    Each input is quantized with the model's input scale and zero point the way
    TFLite's QUANTIZE does (:func:`tfmot_ext.kernels.quantize_input`). ``kernels`` as
    in :func:`op_outputs`: by default ``"builtin"``, TFLite's optimized kernels, the
    ones :func:`tfmot_ext.verify` compares against and
    ``run_reference(..., rounding="optimized")`` reproduces bit for bit; ``"default"``
    is the XNNPACK delegate (what ``tf.lite.Interpreter`` runs unless told otherwise),
    which requantizes some ops in float and so can differ by an LSB
    (docs/integer_inference.md).
    """
    return op_outputs(model_content, x, kernels, intermediates=False)[0].values


def _has_rnn(model: Any) -> bool:
    return any(isinstance(getattr(la, "layer", la), keras.layers.RNN) for la in model.layers)


def _converter(model: Any, static_batch: bool) -> Any:
    """A TFLite converter of ``model``'s inference call, signature ``serving_default``.

    ``from_keras_model`` (and ``from_concrete_functions`` given the model) first saves
    the model as a Keras SavedModel, which traces every layer's call functions in both
    training modes: measured 83 s of an 89 s conversion of MobileNetV3Small. Here one
    ``tf.function`` is converted, saved through a ``tf.Module`` that tracks only the
    model's variables: 9 s, the same operators, quantization and signature
    (``serving_default``, the Keras input name, the output layer names).
    """
    batch = 1 if static_batch else None
    spec = tf.TensorSpec((batch, *model.input_shape[1:]), model.inputs[0].dtype,
                         name=model.input_names[0])
    names = list(model.output_names)

    @tf.function(input_signature=[spec])
    def serving_default(x: tf.Tensor) -> dict[str, tf.Tensor]:
        out = model(x, training=False)
        return dict(zip(names, out if len(names) > 1 else [out], strict=True))

    holder = tf.Module()
    holder.model_variables = list(model.variables)
    return tf.lite.TFLiteConverter.from_concrete_functions(
        [serving_default.get_concrete_function()], holder)


def to_tflite(model: Any, representative_data: Iterable[Any] | np.ndarray, *,
              int8_io: bool = True, static_batch: bool | None = None,
              fixed_batch: bool = False) -> bytes:
    """Convert a QAT (or float) tf_keras model to a full-integer TFLite flatbuffer.

    Args:
        model: a single-input tf_keras model (typically from :func:`tfmot_ext.quantize`).
        representative_data: an array of real inputs, shape ``(N, *input_shape)``; one
            at a time is fed to the converter (used for ranges QAT did not train).
        int8_io: int8 input and output tensors (else float, with QUANTIZE/DEQUANTIZE
            at the edges); integer inputs (token ids) keep their type.
        static_batch: convert a batch-1 signature instead of Keras's dynamic batch.
            TFLite fuses a Keras LSTM/GRU into its sequence op only with a static
            batch, so None (the default) means "when the model has an RNN layer".
        fixed_batch: store every tensor's shape at batch 1 (:func:`fixed_shapes`), as
            TFLite Micro needs; unlike ``static_batch`` the operators and quantization
            stay those of the dynamic-batch conversion, which extraction predicts.

    Returns:
        The ``.tflite`` bytes.

    Raises:
        ConversionError: bad representative data, a converter failure (with its
            message), or an operator left computing in float.
    """
    check_keras2(model, "model")
    data = _validated(representative_data, model)
    wide = wide_activations(model)
    if wide:
        raise ConversionError(
            f"model '{model.name}': {', '.join(wide)} quantize activations at more than 8 "
            "bits; a full-integer TFLite model has int8 activations (16-bit activations are "
            "TFLite's 16x8 mode, which tfmot_ext does not convert yet): use "
            "activation_bits=8 (or at most 8) for these layers")
    unset = unset_ranges(model)
    n_ranges = sum(len(range_variables(la)) for la in model.layers)
    if unset and len(unset) < n_ranges:  # trained, but some range is exactly [0, 0]
        logger.warning(
            "model '%s': the ranges of %s are [0, 0] (a dead ReLU, or a layer that never "
            "saw data); they deploy as an empty range", model.name, ", ".join(unset))
    elif unset:
        raise ConversionError(
            f"model '{model.name}': the ranges of {', '.join(unset)} were never set (the "
            "quantizers saw no data), so the converter would deploy empty ranges; train the "
            "QAT model (model.fit), or run it once in training mode on representative data "
            "(model(x, training=True)), before converting")
    if static_batch is None:
        static_batch = _has_rnn(model)
    weights = [q for layer in model.layers if isinstance(layer, QuantizeWrapper)
               for q in (*called_weight_quantizers(layer),
                         getattr(layer.layer, "weight_quantizer", None))]
    try:
        # sub-8-bit weights other than 4-bit deploy on their trained grid, embedded in
        # int8 (quantizers.embed_in_int8), instead of being re-gridded by the converter
        with _quiet(), _quantizers.embed_in_int8(weights), native_dilations(model):
            conv = _converter(model, static_batch)
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: _one_at_a_time(data)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if int8_io:
                conv.inference_input_type = tf.int8
                conv.inference_output_type = tf.int8
            content = conv.convert()
    except Exception as e:  # the converter raises its own ConverterError types
        raise ConversionError(f"TFLite conversion of model '{model.name}' failed: "
                              f"{_converter_message(e)}{_float_only_hint(model)}"[:2000]) from e
    left = float_ops(content, allow_io=not int8_io)
    if left:
        known = sorted({op.split(":")[0] for op in left} & set(FLOAT_ONLY_OPS))
        raise ConversionError(
            f"model '{model.name}': full-integer conversion left float operators {left}; "
            + ("; ".join(f"{op}: {FLOAT_ONLY_OPS[op]}" for op in known) if known else
               "quantize the layers they come from (or check unsupported='skip' layers)"))
    regridded = regridded_weights(model)
    if regridded:
        logger.warning(
            "model '%s': %s have weights trained at widths other than 8 or 4 bits by "
            "quantizers that are not tfmot_ext's; the converter re-grids them on its own "
            "int8 scale (s * qmax / 127), so the deployed integers are not the trained ones "
            "(docs/extraction.md); use tfmot_ext quantizers (their grid is embedded in "
            "int8) or train at 8 or 4 bits", model.name, ", ".join(regridded))
    return fixed_shapes(bytes(content)) if fixed_batch else bytes(content)


def unset_ranges(model: Any) -> list[str]:
    """``layer: quantizer`` for each activation or output range of a QAT model that is
    ``[0, 0]``: the initial value, so the quantizer saw no data (or its layer's output is
    always 0, a dead ReLU), and the converter would deploy an empty range.
    :func:`to_tflite` refuses a model whose ranges are all unset and warns about some."""
    check_keras2(model, "model")
    out = []
    for layer in model.layers:
        for prefix, (lo, hi) in range_variables(layer).items():
            if not np.any(lo.numpy()) and not np.any(hi.numpy()):
                out.append(f"{layer.name}: {prefix}")
    return out


def wide_activations(model: Any) -> list[str]:
    """``layer: what (bits)`` for each activation or output quantizer of more than 8 bits
    (a full-integer TFLite model's activations are int8)."""
    check_keras2(model, "model")
    out = []
    for layer in model.layers:
        qs: list[tuple[str, Any]] = []
        if isinstance(layer, QuantizeLayer):
            qs = [("input", layer.quantizer)]
        elif isinstance(layer, QuantizeWrapper):
            cfg, inner = layer.quantize_config, layer.layer
            qs = [("activation", q) for _, q in cfg.get_activations_and_quantizers(inner)]
            qs += [("output", q) for q in cfg.get_output_quantizers(inner)]
        for what, q in qs:
            bits = quantizer_bits(q) if q is not None else None
            if bits is not None and bits > 8:
                out.append(f"{layer.name}: {what} ({bits} bits)")
    return out


def regridded_weights(model: Any) -> list[str]:
    """``layer: attribute (bits)`` for each weight the TFLite converter re-grids: trained
    below 8 bits at a width not in :data:`tfmot_ext.rules.EXACT_WEIGHT_BITS` by a quantizer
    that is not a tfmot_ext one (those embed their grid in int8 at conversion)."""
    check_keras2(model, "model")
    out = []
    for layer in model.layers:
        if not isinstance(layer, QuantizeWrapper):
            continue
        for attr, q in weight_quantizers(layer):
            bits = quantizer_bits(q)
            if (bits is not None and bits < 8 and bits not in EXACT_WEIGHT_BITS
                    and not isinstance(q, _quantizers.QuantizerBase)):
                out.append(f"{layer.name}: {attr} ({bits} bits)")
    return out


def save_tflite(model_content: bytes, path: str | os.PathLike[str]) -> None:
    """Write a ``.tflite`` file atomically (a crash leaves the previous file intact)."""
    from tfmot_ext.export import atomic_write

    with atomic_write(path) as f:
        f.write(model_content)
