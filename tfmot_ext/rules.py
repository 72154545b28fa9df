"""TFLite's deployment rules, in one place: every other module asks this one.

What the TFLite converter and its int8 kernels do with a Keras layer decides what QAT
must train and what extraction and the integer reference must compute. Each rule is
written here once, as data or a small pure function, with the source it comes from;
annotation (:mod:`tfmot_ext.annotate`), the graph rewrites (:mod:`tfmot_ext.rewrites`),
BatchNorm folding (:mod:`tfmot_ext.scheme`, :mod:`tfmot_ext.folding`), extraction
(:mod:`tfmot_ext.extract`), the integer reference (:mod:`tfmot_ext.reference`) and the
reports read them from here. Imports nothing but the standard library, NumPy,
:mod:`tfmot_ext.qmath` and :mod:`tfmot_ext.errors` (no TensorFlow): the deployment half
of the package runs without it.

The rules, by concern:

* **Fused activations** (:data:`FUSED_ACTIVATIONS`, :func:`relu_kind`,
  :func:`fused_activation_range`): what CONV_2D / DEPTHWISE_CONV_2D /
  FULLY_CONNECTED / ADD fuse, and the int8 clamp that fusing means.
* **Fixed output grids** (:data:`FIXED_ACTIVATION_RANGES`): LOGISTIC, TANH, SOFTMAX.
* **Scale-preserving layers and ops** (:data:`PASS_THROUGH_LAYERS`,
  :data:`PASS_THROUGH_OPS`, :data:`AT_INPUT_SCALE_LAYERS`, :data:`NO_RANGE_OF_THEIR_OWN`):
  layers TFLite runs at their input's scale, so QAT gives them no quantizer.
* **Same-scale operators** (:data:`SAME_SCALE_LAYERS`): one scale for all inputs and
  the output, which the converter propagates to the inputs.
* **Folding** (:data:`FOLDED_KINDS`, :data:`FOLDABLE_KERNEL_ATTR`,
  :func:`deployed_kind`): the op a folded layer deploys as.
* **Kernel layouts** (:data:`KERNEL_RANKS`, :func:`channel_axis_of_kind`,
  :func:`output_channels`): which axis is an output channel.
* **Weight widths the converter keeps** (:data:`EXACT_WEIGHT_BITS`).
* **Kernel sets and their rounding** (:data:`KERNEL_ROUNDING`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tfmot_ext.errors import IntegerReferenceError
from tfmot_ext.qmath import round_half_away

__all__ = [
    "AT_INPUT_SCALE_LAYERS",
    "EXACT_WEIGHT_BITS",
    "FIXED_ACTIVATION_RANGES",
    "FLOAT_ONLY_OPS",
    "FOLDABLE_KERNEL_ATTR",
    "FOLDED_KINDS",
    "FUSED_ACTIVATIONS",
    "KEPT_ACTIVATIONS",
    "KERNEL_RANKS",
    "KERNEL_ROUNDING",
    "MICRO_MISSING_OPS",
    "MOVED_BEFORE_FAKE_QUANT",
    "NO_RANGE_OF_THEIR_OWN",
    "ONE_D_TWINS",
    "PASS_THROUGH_LAYERS",
    "PASS_THROUGH_OPS",
    "REMOVED_AT_INFERENCE",
    "RESHAPE_LAYERS",
    "RESHAPE_OPS",
    "ROUNDINGS",
    "SAME_SCALE_LAYERS",
    "TFLITE_ACTIVATION_OPS",
    "TFLITE_OPS",
    "TFMOT_OUTPUT_QUANTIZED_ACTIVATIONS",
    "TFMOT_WRAPPABLE_ACTIVATIONS",
    "TF_ADD_OPS",
    "TF_MUL_OPS",
    "TRANSPOSED_KINDS",
    "WEIGHTED_1D",
    "WEIGHT_ATTRS",
    "channel_axis_of_kind",
    "deployed_kind",
    "deploys_as_reshape",
    "fused_activation_range",
    "fuses_activations",
    "one_length",
    "output_channels",
    "passes_input_scale",
    "relu_cap",
    "relu_kind",
    "tflite_op",
    "twin_2d_config",
]

# --------------------------------------------------------------------------- activations

#: Activations TFLite fuses into CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and ADD
#: (``TfLiteFusedActivation``: NONE, RELU, RELU6), and so the folded layers fuse.
FUSED_ACTIVATIONS = frozenset({"linear", "relu", "relu6"})

#: Activations a Conv/Dense keeps inside the layer in QAT: the fused ones, and softmax,
#: which tfmot quantizes before (the op's own output, fed to TFLite's SOFTMAX). Any
#: other (swish, gelu, sigmoid, tanh, ...) is split into an Activation layer
#: (:func:`tfmot_ext.rewrites.split_activations`).
KEPT_ACTIVATIONS = FUSED_ACTIVATIONS | {"softmax"}

#: Activations tfmot's ``QuantizeAwareActivation`` can wrap (tfmot's rule, not TFLite's:
#: another activation needs the layer's output quantized instead).
TFMOT_WRAPPABLE_ACTIVATIONS = frozenset({"linear", "relu", "swish", "gelu", "softmax",
                                         "sigmoid", "tanh"})

#: Activations whose ``Activation`` layer tfmot's registry config quantizes at the output
#: (tfmot's ``Default8BitActivationQuantizeConfig``); it leaves linear, softmax, sigmoid
#: and tanh unquantized and raises a ValueError for any other function (elu,
#: hard_sigmoid, selu, ...), which therefore gets an output quantizer of tfmot_ext's.
TFMOT_OUTPUT_QUANTIZED_ACTIVATIONS = frozenset({"relu", "swish", "gelu", "relu6"})

#: The int8 output range TFLite fixes for LOGISTIC and SOFTMAX (scale 1/256, zero point
#: -128) and TANH (scale 1/128, zero point 0), as a FakeQuant ``[min, max]`` on 256 levels
#: (``scale = (max - min) / 255``): QAT trains exactly the deployed grid.
FIXED_ACTIVATION_RANGES: dict[str, tuple[float, float]] = {
    "sigmoid": (0.0, 255.0 / 256.0), "tanh": (-1.0, 127.0 / 128.0),
    "softmax": (0.0, 255.0 / 256.0)}


def fuses_activations(class_name: str, config: Mapping[str, Any]) -> bool:
    """Whether TFLite fuses a ReLU / ReLU6 after this weighted layer into its operator.

    CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED always do; TRANSPOSE_CONV only with a
    bias: the converter fuses through the bias add, and a bias-less transposed
    convolution deploys as TRANSPOSE_CONV then RELU, its int8 output at a scale of its
    own (measured: 2 LSB off on 27 % of the elements while QAT had it fused).

    >>> fuses_activations("Conv2DTranspose", {"use_bias": False})
    False
    """
    return not (class_name in TRANSPOSED_KINDS and not config.get("use_bias", True))


def relu_cap(class_name: str, config: Mapping[str, Any]) -> float | None:
    """The cap ``m`` of a ``ReLU(max_value=m)`` TFLite does not fuse (``m`` not 6, no
    slope, no threshold), else None: the converter lowers it to the producer with the
    ReLU part fused, then ``MINIMUM(m)`` and ``RELU``.

    >>> relu_cap("ReLU", {"max_value": 1.0}), relu_cap("ReLU", {"max_value": 6.0})
    (1.0, None)
    """
    if class_name != "ReLU" or config.get("negative_slope") or config.get("threshold"):
        return None
    cap = config.get("max_value")
    return None if cap is None or float(cap) == 6.0 else float(cap)


def relu_kind(class_name: str, config: Mapping[str, Any]) -> str | None:
    """``"relu"``/``"relu6"`` for a plain ReLU(6) or Activation layer config, else None.

    These are the activation layers TFLite fuses into the preceding op (and the folded
    layers fuse): ``ReLU`` without slope or threshold and with no or a 6 cap, or
    ``Activation("relu"|"relu6")``.

    >>> relu_kind("ReLU", {"max_value": 6.0}), relu_kind("ReLU", {"negative_slope": 0.1})
    ('relu6', None)
    """
    if class_name == "ReLU":
        if config.get("negative_slope") or config.get("threshold"):
            return None
        mv = config.get("max_value")
        return "relu" if mv is None else ("relu6" if float(mv) == 6.0 else None)
    if class_name == "Activation":
        act = config.get("activation")
        return act if act in ("relu", "relu6") else None
    return None


def fused_activation_range(activation: str | None, scale: float, zero_point: int,
                           where: str = "layer") -> tuple[int, int]:
    """The int8 clamp of a fused activation (TFLite ``CalculateActivationRangeQuantized``).

    ``relu``: ``[max(-128, z), 127]``; ``relu6``: also ``min(127, z + round(6 / s))``
    (``6 / s`` in float32, rounded half away from zero); ``linear``: ``[-128, 127]``.

    Raises:
        IntegerReferenceError: an activation TFLite does not fuse.

    >>> fused_activation_range("relu6", 0.05, -128)
    (-128, -8)
    """
    def q(f: float) -> int:
        return zero_point + int(round_half_away(np.float32(f) / np.float32(scale)))

    if activation in ("linear", "None", None):
        return -128, 127
    if activation == "relu":
        return max(-128, q(0.0)), 127
    if activation == "relu6":
        return max(-128, q(0.0)), min(127, q(6.0))
    raise IntegerReferenceError(
        f"{where}: fused activation '{activation}' has no integer form in the reference "
        f"(TFLite fuses {', '.join(sorted(FUSED_ACTIVATIONS))})")


# --------------------------------------------------------------------------- scales

#: Layers TFLite runs at their input's scale: they move, select, copy or drop elements
#: (or compute within the input's range at its scale: int8 RESIZE_BILINEAR /
#: RESIZE_NEAREST_NEIGHBOR require the output scale to equal the input's, so the
#: converter requantizes *before* an UpSampling2D that QAT gave a range of its own;
#: tfmot's registry does, see its note on UpSampling2D). QAT gives them no quantizer;
#: extraction gives their output their input's quantization. Settled against the
#: converter by ``tests/test_rules.py``.
PASS_THROUGH_LAYERS = frozenset({
    "Flatten", "Reshape", "Permute", "RepeatVector",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D", "Resizing",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
    "Identity",
})

#: Pooling TFLite computes at its input's scale (int8 AVERAGE_POOL_2D needs the same
#: input and output scale): no quantizer of its own. tfmot's registry would add an
#: output quantizer, which the converter serves with a requantize, or, where the
#: pooled tensor also feeds a Concatenate (DenseNet's transitions), refuses ("same
#: scale constraint").
AT_INPUT_SCALE_LAYERS = frozenset({"AveragePooling1D", "AveragePooling2D",
                                   "AveragePooling3D"})

#: Layers that, when QAT gives them no range, are part of the op before them (a
#: BatchNormalization folded into its conv, a ReLU fused into it) or are the model's
#: input: their output has their input's quantization.
NO_RANGE_OF_THEIR_OWN = frozenset({"InputLayer", "Activation", "ReLU", "BatchNormalization"})

#: Layers that deploy as a RESHAPE. The converter folds a RESHAPE of a RESHAPE into one
#: before it propagates scales, so a reshape read by a reshape is never a tensor of the
#: deployed model: its second reading takes the first one's input tensor and scale, not
#: a requantized one (measured: a Conv1D's 1-D output also read by a MINIMUM).
RESHAPE_LAYERS = frozenset({"Reshape", "Flatten"})

#: TF ops (``TFOpLambda`` functions) that deploy as a RESHAPE (as :data:`RESHAPE_LAYERS`).
RESHAPE_OPS = frozenset({"reshape", "squeeze", "expand_dims", "compat.v1.squeeze"})


def deploys_as_reshape(kind: str, tensor_op: Any = None) -> bool:
    """Whether a layer of ``kind`` (a TensorOp: of TF function ``tensor_op``) deploys as a
    RESHAPE (:data:`RESHAPE_LAYERS`, :data:`RESHAPE_OPS`).

    >>> deploys_as_reshape("Flatten"), deploys_as_reshape("TensorOp", "reshape")
    (True, True)
    """
    return kind in RESHAPE_LAYERS or (kind.split(">")[-1] == "TensorOp"
                                      and tensor_op in RESHAPE_OPS)

#: Layers the converter moves in front of the FakeQuant before them (a RESHAPE to a static
#: shape, a TRANSPOSE). A same-scale operator (:data:`SAME_SCALE_LAYERS`) read by one of
#: them then has no quantized output of its own: it deploys at the scale of its first
#: input that has one (one with other consumers), and a QUANTIZE to its trained scale
#: follows (measured; a Keras ``Reshape``, whose shape is dynamic, keeps the FakeQuant).
MOVED_BEFORE_FAKE_QUANT = frozenset({"Flatten", "Permute"})

#: Pass-through layers the converter removes (they do nothing at inference): the
#: integer reference passes their input on unchanged.
REMOVED_AT_INFERENCE = frozenset({
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization"})

#: TF ops that only move or select elements: TFLite keeps their input's scale, so
#: they get no quantizer of their own.
PASS_THROUGH_OPS = frozenset({
    "reshape", "transpose", "squeeze", "expand_dims", "identity", "__operators__.getitem",
    "compat.v1.squeeze", "compat.v1.transpose", "image.flip_left_right", "reverse"})

#: TF ops (``TFOpLambda`` functions) that are an addition (TFLite ADD): a two-tensor one of
#: equal shapes becomes a Keras ``Add`` (:func:`tfmot_ext.rewrites.tensor_adds_as_add`),
#: a tensor plus a constant runs as ADD with the constant quantized by the converter.
TF_ADD_OPS = frozenset({"__operators__.add", "math.add", "math.add_v2"})

#: TF ops that are a multiplication (TFLite MUL).
TF_MUL_OPS = frozenset({"math.multiply"})

#: TFLite operators the converter leaves in float in a QAT graph, with the Keras layer
#: that makes them and what deploys in int8 instead (found by benchmarks/parity_fuzz.py).
FLOAT_ONLY_OPS: dict[str, str] = {
    "CAST": "a ReLU with a threshold (Keras computes x * cast(x > threshold)) has no int8 "
            "TFLite form: use threshold=0",
    "ELU": "the converter has no int8 ELU for a QAT graph (ELU layer, Activation('elu')): "
           "use LeakyReLU, ReLU or swish",
}

#: Operators with one scale for every input and the output (TFLite's CONCATENATION,
#: MAXIMUM, MINIMUM): the converter propagates the output's scale back to inputs that
#: only feed it, and requantizes the others (measured for MAXIMUM: with a range of its
#: own on each input it keeps one input's scale for the output and drops the layer's).
SAME_SCALE_LAYERS = frozenset({"Concatenate", "Maximum", "Minimum"})


def passes_input_scale(kind: str) -> bool:
    """Whether a layer kind, given no range of its own, outputs its input's quantization.

    >>> passes_input_scale("MaxPooling2D"), passes_input_scale("Conv2D")
    (True, False)
    """
    return kind in PASS_THROUGH_LAYERS or kind in AT_INPUT_SCALE_LAYERS or (
        kind in NO_RANGE_OF_THEIR_OWN)


# --------------------------------------------------------------------------- folding

#: Folded layer classes -> the op they fold BatchNorm into (and deploy as).
FOLDED_KINDS = {"FoldedConv2DBatchNorm": "Conv2D",
                "FoldedDepthwiseConv2DBatchNorm": "DepthwiseConv2D",
                "FoldedDenseBatchNorm": "Dense"}

#: The kernel attribute of each op BatchNorm folds into.
FOLDABLE_KERNEL_ATTR = {"Conv2D": "kernel", "DepthwiseConv2D": "depthwise_kernel",
                        "Dense": "kernel"}


def deployed_kind(kind: str) -> str:
    """The Keras op a layer kind deploys as: the folded op for a folded layer.

    >>> deployed_kind("FoldedDenseBatchNorm"), deployed_kind("Conv2D")
    ('Dense', 'Conv2D')
    """
    return FOLDED_KINDS.get(kind, kind)


# --------------------------------------------------------------------------- layouts

#: Weight attributes that are a layer's kernel (the first one found is quantized).
WEIGHT_ATTRS = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings",
                "recurrent_kernel")

#: The rank of each layer kind's ``kernel`` / ``depthwise_kernel``.
KERNEL_RANKS = {"Dense": 2, "Conv1D": 3, "Conv2D": 4, "Conv3D": 5, "DepthwiseConv2D": 4,
                "DepthwiseConv1D": 3, "Conv1DTranspose": 3, "Conv2DTranspose": 4,
                "Conv3DTranspose": 5, "SeparableConv1D": 3, "SeparableConv2D": 4}

#: Kinds whose kernel is ``(..., out, in)`` (TFLite TRANSPOSE_CONV's layout).
TRANSPOSED_KINDS = frozenset({"Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"})


def channel_axis_of_kind(kinds: str | frozenset[str] | set[str], attr: str,
                         rank: int) -> int | tuple[int, ...]:
    """The output-channel axis of weight ``attr`` (rank ``rank``) of a layer kind.

    ``kinds`` is a layer class name, or the names of the class and its bases.
    DepthwiseConv ``depthwise_kernel`` ``(..., C, M)``: ``(rank-2, rank-1)`` — the
    ``C x M`` output channels TFLite quantizes. ``Conv*Transpose`` ``kernel``
    ``(..., out, in)``: ``rank-2``. Otherwise the last axis.

    >>> channel_axis_of_kind("DepthwiseConv2D", "depthwise_kernel", 4)
    (2, 3)
    """
    names = {kinds} if isinstance(kinds, str) else kinds
    if attr.endswith("depthwise_kernel"):
        return (rank - 2, rank - 1)
    if attr == "kernel" and names & TRANSPOSED_KINDS:
        return rank - 2
    return rank - 1


def output_channels(kind: str, attr: str, shape: tuple[int, ...]) -> int:
    """How many output channels a kernel of ``shape`` has (what the bias indexes).

    >>> output_channels("DepthwiseConv2D", "depthwise_kernel", (3, 3, 8, 2))
    16
    """
    if attr.endswith("depthwise_kernel"):
        return int(shape[-2] * shape[-1])
    if kind in TRANSPOSED_KINDS:
        return int(shape[-2])
    return int(shape[-1])


# --------------------------------------------------------------------------- operators

#: The TFLite builtin operator each Keras layer kind deploys as (a folded layer as the op
#: it folds into; ``Flatten``/``Reshape`` as RESHAPE, ``GlobalAveragePooling2D`` as MEAN;
#: a ReLU fused into the op before it deploys as nothing, see :func:`tflite_op`).
TFLITE_OPS = {
    "QuantizeLayer": "QUANTIZE", "Conv2D": "CONV_2D", "DepthwiseConv2D": "DEPTHWISE_CONV_2D",
    "Dense": "FULLY_CONNECTED", "MaxPooling2D": "MAX_POOL_2D",
    "AveragePooling2D": "AVERAGE_POOL_2D", "GlobalAveragePooling2D": "MEAN", "Add": "ADD",
    "Multiply": "MUL", "Concatenate": "CONCATENATION", "Flatten": "RESHAPE",
    "Reshape": "RESHAPE", "ZeroPadding2D": "PAD", "Cropping2D": "STRIDED_SLICE",
    "ReLU": "RELU", "Dropout": "(none)", "SpatialDropout2D": "(none)", "Identity": "(none)",
    "InputLayer": "(input)"}

#: Activation layer functions -> their TFLite op.
TFLITE_ACTIVATION_OPS = {"relu": "RELU", "relu6": "RELU6", "sigmoid": "LOGISTIC",
                         "tanh": "TANH", "swish": "LOGISTIC+MUL", "silu": "LOGISTIC+MUL",
                         "gelu": "GELU", "linear": "(none)"}


def tflite_op(kind: str, config: Mapping[str, Any]) -> str:
    """The TFLite operator a layer of ``kind`` (with its Keras ``config``) deploys as.

    >>> tflite_op("FoldedConv2DBatchNorm", {}), tflite_op("Activation", {"activation": "tanh"})
    ('CONV_2D', 'TANH')
    """
    kind = deployed_kind(kind)
    if kind == "Activation":
        return TFLITE_ACTIVATION_OPS.get(str(config.get("activation")), "?")
    return TFLITE_OPS.get(kind, "?")


# --------------------------------------------------------------------------- converter

#: Weight widths the converter stores as trained: 8-bit and 4-bit kernels keep their
#: integers and scales; 2, 3, 5, 6 and 7 bits are re-gridded on the 8-bit scale of the
#: same range unless :func:`tfmot_ext.to_tflite` embeds them (measured,
#: docs/extraction.md).
EXACT_WEIGHT_BITS = frozenset({4, 8})

#: The requantization roundings the integer reference reproduces (docs/integer_inference.md).
ROUNDINGS = ("reference", "optimized", "micro")

#: int8 operators the converter emits that TFLite Micro registers no kernel for (its
#: interpreter refuses the model; tflite-micro ``micro_mutable_op_resolver.h``).
MICRO_MISSING_OPS = frozenset({"GELU"})

#: The rounding of each interpreter kernel set (see :func:`tfmot_ext.tflite.op_outputs`).
KERNEL_ROUNDING = {"reference": "reference", "builtin": "optimized", "default": "optimized",
                   "micro": "micro"}


#: 1-D weighted layers and their 2-D twins on ``(N, 1, L, C)``: TFLite has no 1-D
#: convolution, the converter runs one as EXPAND_DIMS -> the 2-D op -> squeeze
#: (:func:`tfmot_ext.ranks.conv1d_as_conv2d` writes them so in the QAT model).
WEIGHTED_1D = {"Conv1D": "Conv2D", "DepthwiseConv1D": "DepthwiseConv2D",
               "SeparableConv1D": "SeparableConv2D", "Conv1DTranspose": "Conv2DTranspose"}
#: Layers a 1-D segment goes on through, 1-D layer -> 2-D twin (None: any rank,
#: unchanged); the reference runs the 1-D pooling/padding/cropping/up-sampling layers
#: with their twin's kernel on ``(N, 1, L, C)``.
ONE_D_TWINS: dict[str, str | None] = {
    "BatchNormalization": None, "ReLU": None, "Activation": None, "LeakyReLU": None,
    "ELU": None, "Dropout": None, "Rescaling": None,
    "MaxPooling1D": "MaxPooling2D", "AveragePooling1D": "AveragePooling2D",
    "ZeroPadding1D": "ZeroPadding2D", "Cropping1D": "Cropping2D",
    "UpSampling1D": "UpSampling2D", **WEIGHTED_1D,
}
_LENGTH_OPTIONS = {"kernel_size", "strides", "dilation_rate", "pool_size", "size"}


def one_length(v: Any) -> int:
    """A 1-D layer's length option (``k`` or ``(k,)``) as an int."""
    return int(v[0] if isinstance(v, (list, tuple)) else v)


def twin_2d_config(class_name: str, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The 2-D twin of a 1-D layer's config on ``(N, 1, L, C)``: each length option
    ``k`` becomes ``(1, k)``, a padding/cropping ``(a, b)`` becomes ``((0, 0), (a, b))``,
    ``causal`` stays ``causal`` only for Conv1D (handled by the caller), a BN's axis -1.

    >>> twin_2d_config("MaxPooling1D", {"pool_size": 2, "strides": None})
    ('MaxPooling2D', {'pool_size': (1, 2), 'strides': None})
    """
    twin = ONE_D_TWINS.get(class_name)
    cfg = dict(config)
    if class_name == "BatchNormalization":
        cfg["axis"] = -1
    if twin is None:
        return class_name, cfg
    for key in _LENGTH_OPTIONS & set(cfg):
        if cfg[key] is not None:
            cfg[key] = (1, one_length(cfg[key]))
    if "output_padding" in cfg and cfg["output_padding"] is not None:
        cfg["output_padding"] = (0, one_length(cfg["output_padding"]))
    for key in ("padding", "cropping"):
        if key in cfg and not isinstance(cfg[key], str):
            v = cfg[key]
            a, b = (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))
            cfg[key] = ((0, 0), (a, b))
    return twin, cfg
