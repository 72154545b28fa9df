"""The scale-preserving layer tables of :mod:`tfmot_ext.rules`, settled against the converter.

:data:`~tfmot_ext.rules.PASS_THROUGH_LAYERS` and
:data:`~tfmot_ext.rules.AT_INPUT_SCALE_LAYERS` claim that TFLite runs each of these
Keras layers at its input's scale: QAT gives the layer no quantizer of its own, and the
full-integer converter deploys it with output ``(scale, zero_point)`` equal to its
input's, with no QUANTIZE (requantize) op around it. Annotation, extraction and the
integer reference all build on that claim, and none of them can check it: the TFLite
converter is the peer that decides what is deployed, so only a conversion can. Here
each kind of the tables sits between two weighted layers of a small model
(``Input -> Conv/Dense (relu) -> LAYER -> Conv/Dense -> [Flatten] -> Dense``), which is
quantized with the defaults (:func:`tfmot_ext.quantize`), trained one step on seeded
data and converted (:func:`tfmot_ext.to_tflite`); then

* the QAT model gives the layer no quantizer (:func:`tfmot_ext.summary.summarize`);
* every int8 operator between the two weighted ops (the op(s) the layer became, and the
  host's own reshapes) has the first weighted op's output quantization, and none is a
  QUANTIZE;
* the second weighted op reads its input at the first one's output quantization (what
  is left to check where the converter removes the layer: Dropout, noise, Identity);
* the layer became the TFLite operators expected of it (so a layer that vanished or
  changed form cannot pass unnoticed).

Hosts: 2D kinds sit between two Conv2D. 1D and 3D kinds sit between two Dense layers
acting on the last axis of a sequence / volume (tfmot_ext reshapes them to rank 2
around FULLY_CONNECTED; those RESHAPEs are the host's, and are checked too): a
QAT Conv1D does not convert at all, whatever follows it (the converter: "'tfl.reshape'
op requires 'output' type ...:f32:2, ... to be cast compatible with expected type
...:f32:3": the per-channel kernel's quantized axis after EXPAND_DIMS), and Conv3D neither trains
(FakeQuantWithMinMaxVarsPerChannelGradient takes rank <= 4) nor deploys in int8
(CONV_3D stays float). A kind that cannot be exercised is listed in
:data:`NOT_EXERCISED` with its reason, and a test checks that the reason still holds and
that every table entry is either exercised or listed: a new entry cannot go untested.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import tfmot_ext
from tfmot_ext._compat import keras
from tfmot_ext.errors import ConversionError
from tfmot_ext.rules import AT_INPUT_SCALE_LAYERS, MOVED_BEFORE_FAKE_QUANT, PASS_THROUGH_LAYERS
from tfmot_ext.summary import summarize
from tfmot_ext.tflite import op_outputs, weight_tensors

L = keras.layers

#: Every kind the tables claim runs at its input's scale.
TABLE = PASS_THROUGH_LAYERS | AT_INPUT_SCALE_LAYERS

#: The name of the layer under test in every model.
UNDER_TEST = "under_test"

#: TFLite operators that carry weights: the two host ops around the layer under test.
WEIGHTED_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"})


@dataclass(frozen=True)
class Case:
    """One table kind in one small model.

    Attributes:
        id: the test id (the kind, with a variant where one kind has several).
        kind: the Keras class name, an entry of :data:`TABLE`.
        layer: makes a fresh layer under test (named :data:`UNDER_TEST`).
        host: ``"conv2d"`` (8x8x3 input, two Conv2D), ``"seq"`` ((8, 3) input, two
            Dense on the last axis), ``"vol"`` ((4, 4, 4, 3) input, two Dense on the last
            axis), ``"flat"`` (Conv2D -> LAYER -> Dense) or ``"vec"`` ((8,) input,
            Dense -> LAYER -> Dense on the last axis).
        ops: the TFLite operators the layer becomes, besides the host's own RESHAPEs
            (empty: the converter removes it).
        train: train one step with ``fit``; else (one kind, see its case) the ranges
            are calibrated by one eager forward pass in training mode.
    """

    id: str
    kind: str
    layer: Callable[[], keras.layers.Layer]
    host: str
    ops: frozenset[str]
    train: bool = True


def _case(kind: str, make: Callable[..., keras.layers.Layer], host: str, ops: set[str],
          variant: str = "", train: bool = True, **kwargs: object) -> Case:
    def layer() -> keras.layers.Layer:
        return make(name=UNDER_TEST, **kwargs)

    return Case(f"{kind}-{variant}" if variant else kind, kind, layer, host,
                frozenset(ops), train)


CASES = [
    # 2D kinds, between two Conv2D
    _case("MaxPooling2D", L.MaxPooling2D, "conv2d", {"MAX_POOL_2D"}, pool_size=2),
    _case("AveragePooling2D", L.AveragePooling2D, "conv2d", {"AVERAGE_POOL_2D"}, pool_size=2),
    _case("GlobalMaxPooling2D", L.GlobalMaxPooling2D, "conv2d", {"REDUCE_MAX"},
          keepdims=True),
    _case("ZeroPadding2D", L.ZeroPadding2D, "conv2d", {"PAD"}, padding=1),
    _case("Cropping2D", L.Cropping2D, "conv2d", {"STRIDED_SLICE"}, cropping=1),
    _case("UpSampling2D", L.UpSampling2D, "conv2d", {"RESIZE_NEAREST_NEIGHBOR"},
          variant="nearest", size=2, interpolation="nearest"),
    _case("UpSampling2D", L.UpSampling2D, "conv2d", {"RESIZE_BILINEAR"},
          variant="bilinear", size=2, interpolation="bilinear"),
    _case("Resizing", L.Resizing, "conv2d", {"RESIZE_NEAREST_NEIGHBOR"},
          variant="nearest", height=5, width=11, interpolation="nearest"),
    _case("Resizing", L.Resizing, "conv2d", {"RESIZE_BILINEAR"},
          variant="bilinear", height=5, width=11, interpolation="bilinear"),
    _case("Reshape", L.Reshape, "conv2d", {"RESHAPE"}, target_shape=(4, 16, 4)),
    _case("Permute", L.Permute, "conv2d", {"TRANSPOSE"}, dims=(2, 1, 3)),
    _case("Dropout", L.Dropout, "conv2d", set(), rate=0.5),
    _case("SpatialDropout2D", L.SpatialDropout2D, "conv2d", set(), rate=0.5),
    _case("GaussianNoise", L.GaussianNoise, "conv2d", set(), stddev=0.1),
    _case("GaussianDropout", L.GaussianDropout, "conv2d", set(), rate=0.1),
    _case("AlphaDropout", L.AlphaDropout, "conv2d", set(), rate=0.1),
    # quantize()'s rebuilt model cannot be fit with an activity regularizer (its loss
    # tensor was made in tfmot's reconstruction graph: "out of scope"), which is not
    # what this file settles: the ranges come from one forward pass in training mode
    _case("ActivityRegularization", L.ActivityRegularization, "conv2d", set(),
          train=False, l1=0.01),
    _case("Identity", L.Identity, "conv2d", set()),
    _case("Flatten", L.Flatten, "flat", {"RESHAPE"}),
    # 1D kinds, between two Dense on the last axis of a sequence
    _case("RepeatVector", L.RepeatVector, "vec", {"EXPAND_DIMS", "TILE"}, n=3),
    _case("MaxPooling1D", L.MaxPooling1D, "seq", {"EXPAND_DIMS", "MAX_POOL_2D"},
          pool_size=2),
    _case("AveragePooling1D", L.AveragePooling1D, "seq", {"EXPAND_DIMS", "AVERAGE_POOL_2D"},
          pool_size=2),
    _case("GlobalMaxPooling1D", L.GlobalMaxPooling1D, "seq", {"REDUCE_MAX"}, keepdims=True),
    _case("ZeroPadding1D", L.ZeroPadding1D, "seq", {"PAD"}, padding=1),
    _case("Cropping1D", L.Cropping1D, "seq", {"STRIDED_SLICE"}, cropping=1),
    # 2-D in the QAT model (ranks.conv1d_as_conv2d): RESIZE, not repeat_elements' SPLIT/CONCAT
    _case("UpSampling1D", L.UpSampling1D, "seq", {"RESIZE_NEAREST_NEIGHBOR"}, size=2),
    _case("SpatialDropout1D", L.SpatialDropout1D, "seq", set(), rate=0.5),
    # 3D kinds, between two Dense on the last axis of a volume
    _case("GlobalMaxPooling3D", L.GlobalMaxPooling3D, "vol", {"REDUCE_MAX"}, keepdims=True),
    _case("ZeroPadding3D", L.ZeroPadding3D, "vol", {"PAD"}, padding=1),
    _case("Cropping3D", L.Cropping3D, "vol", {"STRIDED_SLICE"}, cropping=1),
    _case("UpSampling3D", L.UpSampling3D, "vol", {"SPLIT", "CONCATENATION"}, size=2),
    _case("SpatialDropout3D", L.SpatialDropout3D, "vol", set(), rate=0.5),
]

#: Table kinds no model here exercises, each with the reason and the TF op in the
#: converter's refusal (checked by :func:`test_not_exercised_kinds_still_do_not_convert`).
NOT_EXERCISED: dict[str, tuple[str, Callable[[], keras.layers.Layer], str]] = {
    "MaxPooling3D": ("TFLite has no builtin int8 3D max pooling: the converter refuses "
                     "tf.MaxPool3D ('neither a custom op nor a flex op')",
                     lambda: L.MaxPooling3D(2, name=UNDER_TEST), "MaxPool3D"),
    "AveragePooling3D": ("TFLite has no builtin int8 3D average pooling: the converter "
                         "refuses tf.AvgPool3D ('neither a custom op nor a flex op')",
                         lambda: L.AveragePooling3D(2, name=UNDER_TEST), "AvgPool3D"),
}

_INPUTS = {"conv2d": (8, 8, 3), "flat": (8, 8, 3), "seq": (8, 3), "vol": (4, 4, 4, 3),
           "vec": (8,)}


def _model(case_id: str, host: str, layer: keras.layers.Layer) -> keras.Model:
    inp = keras.Input(_INPUTS[host])
    first = (L.Conv2D(4, 3, padding="same", activation="relu", name="first")
             if host in ("conv2d", "flat") else L.Dense(4, activation="relu", name="first"))
    second = L.Conv2D(6, 1, name="second") if host == "conv2d" else L.Dense(6, name="second")
    x = second(layer(first(inp)))
    if host != "flat":
        x = L.Flatten(name="flat_out")(x)
    out = L.Dense(2, name="head")(x)
    return keras.Model(inp, out, name=f"rules_{case_id}")


def _trained_and_converted(model: keras.Model, train: bool) -> tuple[keras.Model, bytes,
                                                                     np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, *model.input_shape[1:])).astype(np.float32)
    y = rng.normal(size=(8, 2)).astype(np.float32)
    q = tfmot_ext.quantize(model)
    if train:
        q.compile("sgd", "mse")
        q.fit(x, y, batch_size=8, epochs=1, verbose=0)  # one step
    else:
        q(x, training=True)
    return q, tfmot_ext.to_tflite(q, x), x


def _fmt(s: float, z: int) -> str:
    return f"(scale {s!r}, zero_point {z})"


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_layer_deploys_at_its_input_scale(case: Case) -> None:
    q, content, x = _trained_and_converted(_model(case.id, case.host, case.layer()),
                                           case.train)
    problems = []

    # QAT: no quantizer of the layer's own
    rows = [r for r in summarize(q) if r.name in (UNDER_TEST, f"quant_{UNDER_TEST}")]
    for r in rows:
        if r.quantized:
            problems.append(f"QAT quantizes {case.kind} '{r.name}': weights {r.weights}, "
                            f"activations {r.activations}, output {r.output!r}")

    # the converter: the ops between the two weighted ops keep the first one's output
    # only the quantization is read, which is the same for every kernel set; the
    # reference kernels have no int8 TILE (version 3), which RepeatVector becomes
    ops = op_outputs(content, x[:1], kernels="builtin")
    weighted = [i for i, o in enumerate(ops) if o.op in WEIGHTED_OPS]
    assert len(weighted) >= 2, f"{case.id}: weighted ops {[o.op for o in ops]}"
    first, second = weighted[0], weighted[1]
    ref = (ops[first].scale, ops[first].zero_point)
    between = ops[first + 1:second]
    for o in between:
        if o.op == "QUANTIZE":
            problems.append(f"QUANTIZE '{o.name}' between the weighted ops requantizes "
                            f"{_fmt(*ref)} to {_fmt(o.scale, o.zero_point)}")
        elif (o.scale, o.zero_point) != ref:
            problems.append(f"{o.op} '{o.name}' outputs {_fmt(o.scale, o.zero_point)}, "
                            f"its input (the {ops[first].op} output) is {_fmt(*ref)}")

    # the second weighted op reads the first one's output quantization
    w = weight_tensors(content)
    got = (w[1].input_scale, w[1].input_zero_point)
    if got != (w[0].output_scale, w[0].output_zero_point):
        problems.append(f"{w[1].op} '{w[1].filter_name}' reads its input at {_fmt(*got)}, "
                        f"{w[0].op} '{w[0].filter_name}' outputs "
                        f"{_fmt(w[0].output_scale, w[0].output_zero_point)}")

    # and the layer became what it is expected to become (or was removed)
    host_ops = frozenset() if case.host in ("conv2d", "flat") else frozenset({"RESHAPE"})
    became = {o.op for o in between} - host_ops - {"QUANTIZE"}
    if became != case.ops:
        problems.append(f"{case.kind} became {sorted(became)} between the weighted ops, "
                        f"expected {sorted(case.ops)}: {[o.op for o in between]}")

    assert not problems, f"{case.id}:\n  " + "\n  ".join(problems)


def test_every_table_kind_is_exercised_or_listed_with_a_reason() -> None:
    exercised = {c.kind for c in CASES}
    not_exercised = set(NOT_EXERCISED)
    assert not exercised & not_exercised, exercised & not_exercised
    assert all(reason for reason, _, _ in NOT_EXERCISED.values())
    assert exercised | not_exercised == TABLE, (
        f"untested table kinds {sorted(TABLE - exercised - not_exercised)}; "
        f"not in the table {sorted((exercised | not_exercised) - TABLE)}")


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(NOT_EXERCISED))
def test_not_exercised_kinds_still_do_not_convert(kind: str) -> None:
    """The reason a kind is not exercised still holds: the converter refuses its TF op
    even in a float model (no QAT involved). When this fails, the converter has learnt
    the op: move the kind to :data:`CASES`."""
    _, make, tf_op = NOT_EXERCISED[kind]
    inp = keras.Input((4, 4, 4, 3))
    x = L.Dense(4, activation="relu", name="first")(inp)
    x = make()(x)
    model = keras.Model(inp, L.Dense(2, name="head")(L.Flatten()(x)), name=f"rules_{kind}")
    data = np.random.default_rng(0).normal(size=(4, 4, 4, 4, 3)).astype(np.float32)
    with pytest.raises(ConversionError, match=tf_op):
        tfmot_ext.to_tflite(model, data)


def _shared_minimum(kind: str) -> keras.Model:
    """A Minimum reading a Multiply (an own range, and another consumer) and a conv of it,
    then ``kind`` (Flatten or Permute), then a Dense."""
    inp = keras.Input((6, 2))
    a = L.Conv1D(3, 1, name="a")(inp)
    m = L.Multiply(name="m")([a, a])
    x = L.Minimum(name="min")([m, L.Conv1D(3, 1, name="b")(m)])
    x = L.Flatten(name="after")(x) if kind == "Flatten" else L.Flatten(name="flat")(
        L.Permute((2, 1), name="after")(x))
    return keras.Model(inp, L.Dense(2, name="head")(x), name=f"moved_{kind}")


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(MOVED_BEFORE_FAKE_QUANT))
@pytest.mark.parametrize("held", [False, True])
def test_moved_before_fake_quant_is_what_the_converter_does(kind: str, held: bool,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """:data:`~tfmot_ext.rules.MOVED_BEFORE_FAKE_QUANT`, settled against the converter:
    without :func:`~tfmot_ext.rewrites.hold_same_scale_outputs`, the MINIMUM deploys at
    its first quantized input's scale (the Multiply's) and a QUANTIZE to its trained
    scale follows; with it, the MINIMUM deploys at its trained scale."""
    from tfmot_ext import rewrites

    if not held:
        monkeypatch.setattr(rewrites, "hold_same_scale_outputs", lambda m, keep=None: m)
    q, content, x = _trained_and_converted(_shared_minimum(kind), train=True)
    mn = q.get_layer("quant_min")
    ranges = {w.name.split("/")[-1].split(":")[0]: float(w.numpy()) for w in mn.weights}
    lo, hi = ranges["output_min"], ranges["output_max"]
    ops = {t.op: t for t in op_outputs(content, x)}
    trained = (hi - lo) / 255
    got = ops["MINIMUM"].scale
    if held:
        assert got == pytest.approx(trained, rel=1e-6), (got, trained)
    else:
        assert got == pytest.approx(ops["MUL"].scale, rel=1e-6) and got != pytest.approx(
            trained, rel=1e-3), (got, trained, ops["MUL"].scale)
        assert "QUANTIZE" in ops
