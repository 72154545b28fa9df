"""Flattening nested models (tfmot_ext.graph)."""

from __future__ import annotations

import numpy as np
import pytest

import tfmot_ext as te
from tfmot_ext._compat import keras, tf
from tfmot_ext.annotate import builtin_choice
from tfmot_ext.errors import UnsupportedModelError
from tfmot_ext.graph import (
    TensorOp,
    flatten,
    has_nested_models,
    has_tf_ops,
    is_tensor_ref,
    map_tensor_refs,
    replace_tf_ops,
)

L = keras.layers


def _nested_model():
    keras.utils.set_random_seed(0)
    stem = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, padding="same", name="conv"),
                             L.BatchNormalization(name="bn"), L.ReLU(name="relu")], name="stem")
    a, b = keras.Input((8, 8, 4)), keras.Input((8, 8, 4))
    s = L.Add(name="add")([L.Conv2D(4, 1, name="pw")(a), b])
    pair = keras.Model([a, b], s, name="pair")
    inp = keras.Input((8, 8, 3))
    h = stem(inp)
    h2 = L.Conv2D(4, 1, name="conv")(h)          # clashes with the stem's "conv"
    h = pair([h, h2])
    h = h + 1.0                                  # a TF-op layer on a nested output
    h = tf.multiply(h, h2)                       # kwargs referencing another tensor
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, L.Dense(3, name="fc")(h), name="outer")


def test_tensor_refs():
    node = [["a", 0, 0, {"y": ["b", 1, 0], "name": None}]]
    assert is_tensor_ref(node[0]) and not is_tensor_ref(node) and not is_tensor_ref(["a", 0])
    seen = []
    out = map_tensor_refs(node, lambda r: seen.append(r[0]) or [r[0].upper(), r[1], r[2]])
    assert out == [["A", 0, 0, {"y": ["B", 1, 0], "name": None}]] and seen == ["a", "b"]


def test_flatten_computes_the_same_function():
    model = _nested_model()
    assert has_nested_models(model)
    flat = flatten(model)
    assert not has_nested_models(flat)
    names = [la.name for la in flat.layers]
    assert len(names) == len(set(names))
    assert {"stem_conv", "conv", "bn", "relu", "pw", "add", "gap", "fc"} <= set(names)
    x = np.random.default_rng(0).normal(size=(5, 8, 8, 3)).astype(np.float32)
    # same layers, same weights, same order of operations: identical outputs
    np.testing.assert_array_equal(flat.predict(x, verbose=0), model.predict(x, verbose=0))
    assert flatten(flat) is flat


def test_flatten_refuses_a_model_called_twice():
    inner = keras.Sequential([keras.Input((4,)), L.Dense(4, name="d")], name="inner")
    inp = keras.Input((4,))
    model = keras.Model(inp, inner(inner(inp)))
    with pytest.raises(UnsupportedModelError, match="'inner' is called 2 times"):
        flatten(model)


def _tf_op_model():
    a, b = keras.Input((6, 6, 4)), keras.Input((6, 6, 4))
    h = tf.concat([a, b], axis=-1)               # first argument a list of tensors
    h = h[:, 1:, :, :6]                          # SlicingOpLambda
    h = h * 0.5 + 3.0                            # constants
    h = tf.multiply(h, tf.reduce_mean(h, axis=[1, 2], keepdims=True))  # tensor kwarg
    return keras.Model([a, b], L.Dense(2, name="fc")(L.Flatten(name="flat")(h)))


def test_replace_tf_ops_computes_the_same_function():
    keras.utils.set_random_seed(0)
    model = _tf_op_model()
    assert has_tf_ops(model)
    new = replace_tf_ops(model)
    assert not has_tf_ops(new)
    ops = [la for la in new.layers if isinstance(la, TensorOp)]
    assert sorted(op.function for op in ops) == sorted(
        ["concat", "__operators__.getitem", "math.multiply", "__operators__.add",
         "math.reduce_mean", "math.multiply"])
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(3, 6, 6, 4)).astype(np.float32) for _ in range(2)]
    np.testing.assert_array_equal(new.predict(x, verbose=0), model.predict(x, verbose=0))
    again = TensorOp.from_config(ops[0].get_config())
    assert again.get_config() == ops[0].get_config()
    assert replace_tf_ops(new) is new


def test_tensor_adds_of_equal_shapes_become_add_layers():
    """RegNet's ``relu(x + skip)``: an Add layer (tfmot then quantizes the sum once, at
    the ReLU, as TFLite's fused ADD does); a broadcasting or constant add stays a
    TensorOp. Same function."""
    from tfmot_ext.rewrites import tensor_adds_as_add

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 4))
    a = L.Conv2D(4, 1, name="a")(inp)
    h = L.ReLU(name="exit")(a + L.Conv2D(4, 3, padding="same", name="b")(inp))
    h = h + tf.reduce_mean(h, axis=[1, 2], keepdims=True)     # broadcast: stays
    model = keras.Model(inp, L.Dense(2, name="fc")(L.Flatten()(h + 1.0)))
    new = tensor_adds_as_add(replace_tf_ops(model))
    adds = [la for la in new.layers if isinstance(la, L.Add)]
    assert len(adds) == 1 and adds[0].name.startswith("tf.__operators__.add")
    assert [la.function for la in new.layers if isinstance(la, TensorOp)].count(
        "__operators__.add") == 2
    x = np.random.default_rng(0).normal(size=(3, 6, 6, 4)).astype(np.float32)
    np.testing.assert_array_equal(new.predict(x, verbose=0), model.predict(x, verbose=0))
    assert te.plan(model)[adds[0].name] is None  # tfmot's registry: the Add transforms
    assert tensor_adds_as_add(new) is new


def test_builtin_choices_for_tf_ops_and_layers():
    new = replace_tf_ops(_tf_op_model())
    by_fn = {la.function: builtin_choice(la) for la in new.layers if isinstance(la, TensorOp)}
    assert by_fn["__operators__.getitem"] == "skip"
    assert isinstance(by_fn["concat"], te.LayerQuantizeConfig) and by_fn["concat"].output
    assert builtin_choice(L.Cropping2D(1)) == "skip"
    assert builtin_choice(L.Multiply()).output is not None

    class Mine(L.Layer):
        pass

    assert builtin_choice(Mine()) is None


@pytest.mark.slow
def test_quantize_nested_model_with_tf_ops_end_to_end():
    """Nested Sequential + nested functional + TF ops: quantize, train, convert; every
    weighted layer's integers equal the .tflite's."""
    model = _nested_model()
    qat = te.quantize(model)
    assert not has_nested_models(qat)
    x = np.random.default_rng(1).normal(size=(16, 8, 8, 3)).astype(np.float32)
    qat.compile("sgd", "mse")
    qat.train_on_batch(x, np.zeros((16, 3), np.float32))
    report = te.verify(qat, te.to_tflite(qat, x), x)
    assert {w.layer for w in report.weights} == {"quant_stem_conv", "quant_conv", "quant_pw",
                                                 "quant_fc"}
    assert report.weights_exact


def test_normalization_becomes_the_same_per_channel_rescaling():
    from tfmot_ext.rewrites import normalization_affine, replace_normalization

    keras.utils.set_random_seed(0)
    mean, var = [123.7, 116.3, 103.5], [3409.0, 3262.0, 0.0]   # a zero variance: eps
    inp = keras.Input((4, 4, 3))
    h = L.Normalization(mean=mean, variance=var, name="norm")(inp)
    model = keras.Model(inp, L.Conv2D(2, 1, name="c")(h))
    new = replace_normalization(model)
    r = new.get_layer("norm")
    assert isinstance(r, L.Rescaling)
    s, _ = normalization_affine(mean, var, keras.backend.epsilon())
    np.testing.assert_array_equal(np.asarray(r.scale, np.float32), s)
    x = np.random.default_rng(0).uniform(0, 255, size=(4, 4, 4, 3)).astype(np.float32)
    x[..., 2] = 103.5  # the zero-variance channel at its mean: 0 either way
    # x * (1/sd) - mean/sd vs (x - mean)/sd: float32 rounding of O(1) values
    np.testing.assert_allclose(new.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(new.get_layer("c").kernel.numpy(),
                                  model.get_layer("c").kernel.numpy())


@pytest.mark.slow
def test_dense_on_rank4_deploys_the_trained_integers():
    """Dense on (N, H, W, C) is reshaped to rank 2 around it (same function, bit for bit):
    the converter then keeps its per-tensor trained kernel instead of re-quantizing a
    MatMul per channel; extraction walks through the reshapes to the input scale."""
    from tfmot_ext.ranks import dense_to_rank2

    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 4, 8))
    model = keras.Model(inp, L.Dense(6, name="d")(L.Conv2D(8, 1, name="c")(inp)))
    x = np.random.default_rng(0).normal(size=(8, 4, 4, 8)).astype(np.float32)
    flat = dense_to_rank2(model)
    assert [la.name for la in flat.layers][-3:] == ["d_rank2", "d", "d_rank_restore"]
    np.testing.assert_array_equal(flat.predict(x, verbose=0), model.predict(x, verbose=0))
    qat = te.quantize(model)
    qat.compile("sgd", "mse")
    qat.train_on_batch(x, np.zeros((8, 4, 4, 6), np.float32))
    report = te.verify(qat, te.to_tflite(qat, x), x)
    assert {w.layer for w in report.weights} == {"quant_c", "quant_d"}
    assert report.weights_exact


def _squeeze_excite(keepdims: bool, act: str = "swish"):
    """EfficientNet's (Conv2D(swish) after GAP + Reshape) or MobileNetV3's
    (GAP(keepdims=True)) squeeze-excite, with a Dense(gelu) head."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, padding="same", name="c")(inp)
    if keepdims:
        s = L.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    else:
        s = L.Reshape((1, 1, 16), name="r")(L.GlobalAveragePooling2D(name="gap")(x))
    s = L.Conv2D(4, 1, activation=act, name="se_reduce",
                 bias_initializer=keras.initializers.Constant(0.3))(s)
    s = L.Conv2D(16, 1, activation="sigmoid", name="se_expand")(s)
    x = L.GlobalAveragePooling2D(name="gap2")(L.Multiply(name="mul")([x, s]))
    return keras.Model(inp, L.Dense(4, activation="gelu", name="d")(x))


def test_split_activations_and_mean_without_keepdims_compute_the_same_function():
    from tfmot_ext.rewrites import mean_without_keepdims, split_activations

    model = _squeeze_excite(keepdims=True)
    new = mean_without_keepdims(split_activations(model))
    names = [la.name for la in new.layers]
    assert "se_reduce_swish" in names and "d_gelu" in names and "gap_keepdims" in names
    # sigmoid too: as an Activation layer its output gets LOGISTIC's fixed int8 grid
    assert "se_expand_sigmoid" in names
    assert new.get_layer("se_reduce").get_config()["activation"] == "linear"
    assert not new.get_layer("gap").keepdims
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(new.predict(x, verbose=0), model.predict(x, verbose=0))
    seq = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="swish", name="s")])
    split = split_activations(seq)
    assert isinstance(split, keras.Sequential)
    assert [la.name for la in split.layers] == ["s", "s_swish"]
    v = x.reshape(-1, 4)
    np.testing.assert_array_equal(split.predict(v, verbose=0), seq.predict(v, verbose=0))


def test_hard_sigmoid_as_ops_is_mobilenet_v3s_form_of_the_same_function():
    """``clip(0.2 x + 0.5, 0, 1) = relu6(1.2 x + 3) / 6``: equal up to float32 rounding
    (a few ulps of 1); the layers the rest of the model reads keep their names."""
    from tfmot_ext.rewrites import hard_sigmoid_as_ops

    inp = keras.Input((5,))
    h = L.Activation("hard_sigmoid", name="hs")(inp)
    model = keras.Model(inp, L.Multiply(name="swish")([inp, h]))
    new = hard_sigmoid_as_ops(model)
    assert [la.name for la in new.layers][1:] == ["hs_scaled", "hs_shifted", "hs_relu6", "hs",
                                                  "swish"]
    assert new.get_layer("hs_relu6").get_config()["max_value"] == 6.0
    x = np.linspace(-4, 4, 2000, dtype=np.float32).reshape(-1, 5)
    ours = new.predict(x, verbose=0) / np.where(x == 0, 1, x)
    theirs = model.predict(x, verbose=0) / np.where(x == 0, 1, x)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=4 * np.finfo(np.float32).eps)
    assert hard_sigmoid_as_ops(new) is new  # nothing left to rewrite


def test_hold_same_scale_outputs_keeps_the_function_and_the_names():
    """A Flatten after a Minimum becomes a ``Reshape`` of the same name; a Permute after
    a Concatenate gets an identity ``Reshape`` ending in -1 in front; the outputs are
    bit-identical; a Flatten after anything else is left alone."""
    from tfmot_ext.rewrites import hold_same_scale_outputs

    inp = keras.Input((6, 2))
    a = L.Conv1D(3, 1, name="a")(inp)
    b = L.Conv1D(3, 1, name="b")(a)
    flat = L.Flatten(name="flat")(L.Minimum(name="min")([a, b]))
    perm = L.Flatten(name="perm_flat")(L.Permute((2, 1), name="perm")(
        L.Concatenate(name="cat")([a, b])))
    other = L.Flatten(name="other")(b)
    model = keras.Model(inp, L.Concatenate(name="out")([flat, perm, other]))
    new = hold_same_scale_outputs(model)
    assert type(new.get_layer("flat")).__name__ == "Reshape"
    assert new.get_layer("flat").target_shape == (18,)
    assert new.get_layer("perm_hold").target_shape == (6, -1)
    assert new.get_layer("perm").input.name.startswith("perm_hold")
    assert type(new.get_layer("other")).__name__ == "Flatten"
    x = np.random.default_rng(0).normal(size=(4, 6, 2)).astype(np.float32)
    np.testing.assert_array_equal(new.predict(x, verbose=0), model.predict(x, verbose=0))
    assert hold_same_scale_outputs(new) is new  # nothing left to rewrite


@pytest.mark.parametrize(("k", "d", "padding"), [(3, 2, "same"), (2, 3, "same"),
                                                 (2, 2, "valid"), (2, 2, "same")])
def test_dilated_transpose_as_conv_computes_the_same_function(k, d, padding):
    from tfmot_ext.rewrites import dilated_transpose_as_conv

    inp = keras.Input((7, 6, 3))
    model = keras.Model(inp, L.Conv2DTranspose(4, k, dilation_rate=d, padding=padding,
                                               bias_initializer="glorot_uniform",
                                               name="t")(inp))
    new = dilated_transpose_as_conv(model)
    assert type(new.get_layer("t")) is L.Conv2D
    x = np.random.default_rng(0).normal(size=(2, 7, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(new.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("keepdims", [False, True])
def test_squeeze_excite_deploys_as_trained(keepdims):
    """Before the rewrites: Conv2D(swish) deployed with its bias at a calibrated scale the
    kernel does not use (measured 92 output LSB, 0 % argmax agreement), and
    GAP(keepdims=True) deployed through TFLite's float MEAN, which adds half an LSB
    (1 LSB on half the pooled elements; measured 68 output LSB after one conv)."""
    model = _squeeze_excite(keepdims)
    if keepdims:  # the pooled tensor through one conv to the output: the half LSB shows
        gap = model.get_layer("gap").output
        model = keras.Model(model.input, L.Flatten()(L.Conv2D(
            4, 1, bias_initializer=keras.initializers.Constant(0.3))(gap)))
    x = np.random.default_rng(0).uniform(-1, 1, size=(8, 8, 8, 3)).astype(np.float32)
    qat = te.quantize(model)
    qat.compile("sgd", "mse")
    qat.fit(x, np.zeros((8, 4), np.float32), epochs=1, verbose=0)
    report = te.verify(qat, te.to_tflite(qat, x), x)
    assert report.weights_exact
    # one LSB: the float QAT forward pass and the integer kernels may round a tie apart
    # (the LSB count is a float32 difference over the scale: 1e-4 of slack)
    assert all(o.max_lsb <= 1 + 1e-4 for o in report.outputs), report


def test_batchnorm_as_depthwise_computes_the_same_function():
    """A BatchNormalization after no Conv/Dense gets a 1x1 depthwise of ones in front
    (bit-identical output); one after a linear Conv2D (folded anyway) does not."""
    from tfmot_ext.rewrites import batchnorm_as_depthwise

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 4))
    h = L.BatchNormalization(name="pre_bn")(inp)
    h = L.ReLU()(h)
    h = L.BatchNormalization(name="conv_bn")(L.Conv2D(4, 3, name="c")(h))
    model = keras.Model(inp, L.GlobalAveragePooling2D()(h))
    for bn in ("pre_bn", "conv_bn"):
        layer = model.get_layer(bn)
        layer.set_weights([np.random.default_rng(1).uniform(0.5, 2, 4).astype(np.float32)
                           for _ in layer.get_weights()])
    new = batchnorm_as_depthwise(model)
    names = [la.name for la in new.layers]
    assert names.index("pre_bn_affine") == names.index("pre_bn") - 1
    assert "conv_bn_affine" not in names
    np.testing.assert_array_equal(new.get_layer("pre_bn_affine").depthwise_kernel.numpy(), 1.0)
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 4)).astype(np.float32)
    np.testing.assert_array_equal(new.predict(x, verbose=0), model.predict(x, verbose=0))
    assert batchnorm_as_depthwise(new) is new
    qat = te.quantize(model)
    assert type(qat.get_layer("quant_pre_bn_affine").layer).__name__ == (
        "FoldedDepthwiseConv2DBatchNorm")


@pytest.mark.slow
def test_rescaling_and_normalization_deploy_as_depthwise_with_reference_parity():
    """Rescaling (and Normalization, via Rescaling) become non-trainable 1x1 depthwise
    convolutions: the same function (one float32 multiply-add either way: within a few
    ulp), quantized in QAT as deployed, and the integer reference covers the model."""
    from tfmot_ext.rewrites import prepare

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = L.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inp)  # one offset: a splat bias
    h = L.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.052, 0.05, 0.051],
                        name="norm")(h)
    h = L.ReLU()(L.BatchNormalization(momentum=0.9)(L.Conv2D(8, 3, padding="same")(h)))
    model = keras.Model(inp, L.Dense(4, name="d")(L.GlobalAveragePooling2D()(h)))
    x = np.random.default_rng(0).uniform(0, 255, (8, 8, 8, 3)).astype(np.float32)
    new = prepare(model)
    for name in ("rescale", "norm"):
        dw = new.get_layer(name)
        assert isinstance(dw, L.DepthwiseConv2D) and not dw.trainable
    np.testing.assert_allclose(new.get_layer("rescale").depthwise_kernel.numpy().ravel(),
                               np.float32(1 / 127.5))
    odd = keras.Model(inp, L.Rescaling([1.0, 2.0, 3.0], offset=-1.0, name="odd")(inp))
    assert isinstance(prepare(odd).get_layer("odd"), L.Rescaling)  # splat bias, 3 scales
    np.testing.assert_allclose(new.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    qat = te.quantize(model)
    qat.compile("sgd", "mse")
    qat.fit(x, np.zeros((8, 4), np.float32), epochs=2, verbose=0)
    # tfmot's wrapper lists quantized weights as trainable: the Fixed constraints hold them
    kernel = [w for w in qat.get_layer("quant_rescale").weights if "depthwise_kernel" in w.name]
    np.testing.assert_array_equal(kernel[0].numpy().ravel(), np.float32(1 / 127.5))
    content = te.to_tflite(qat, x)
    report = te.verify(qat, content, x, kernels="reference")
    assert report.weights_exact and {"quant_rescale", "quant_norm"} <= {
        w.layer for w in report.weights}
    assert report.reference is not None and report.reference_exact_fraction == 1.0
    # the optimized kernels round the 3-channel depthwise's ties away from zero (its
    # channels are all past the last SIMD group of 8): modelled, so bit-exact too
    builtin = te.verify(qat, content, x, kernels="builtin")
    assert builtin.reference is not None and builtin.reference_exact_fraction == 1.0


@pytest.mark.slow
def test_separable_conv_is_split_and_its_batchnorm_folds():
    """SeparableConv2D -> depthwise + 1x1 conv (same weights, same function): the tensor
    between them gets a trained range, the BN after it folds into the pointwise conv,
    and extraction and the integer reference are exact (Xception's DIFF rows)."""
    from tfmot_ext.rewrites import split_separable

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    r = L.ReLU()(L.BatchNormalization(momentum=0.9)(L.Conv2D(8, 3, padding="same")(inp)))
    h = L.SeparableConv2D(16, 3, padding="same", use_bias=False, name="sep1")(r)
    h = L.ReLU()(L.BatchNormalization(momentum=0.9, name="sep1_bn")(h))
    h = L.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, name="sep2")(h)
    model = keras.Model(inp, L.Dense(4)(L.GlobalAveragePooling2D()(L.Add()([h, r]))))
    x = np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 3)).astype(np.float32)
    new = split_separable(model)
    assert [type(new.get_layer(n)).__name__ for n in ("sep2_depthwise", "sep2")] == [
        "DepthwiseConv2D", "Conv2D"]
    np.testing.assert_allclose(new.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    kept = te.plan(model, [te.Rule(name="sep2", config=te.separable_conv_config())])
    assert "sep2_depthwise" not in kept and "sep1_depthwise" in kept  # a rule keeps it whole
    qat = te.quantize(model)
    assert type(qat.get_layer("quant_sep1").layer).__name__ == "FoldedConv2DBatchNorm"
    qat.compile("sgd", "mse")
    qat.fit(x, np.zeros((8, 4), np.float32), epochs=2, verbose=0)
    report = te.verify(qat, te.to_tflite(qat, x), x, kernels="reference")
    assert report.weights_exact and len(report.weights) == 6
    assert report.reference is not None and report.reference_exact_fraction == 1.0


def test_scale_layers_become_add_with_the_scale_folded_into_the_conv():
    """InceptionResNetV2's ``CustomScaleLayer`` ``x + up * scale``: an ``Add`` of the same
    name, ``scale`` folded into the Conv2D producing ``up`` (``W * s``, ``b * s``). Same
    function up to float32 rounding (one product reassociated: rtol 1e-5). A scaled
    input from a layer with a nonlinear activation cannot take the scale: kept."""
    import sys

    from tfmot_ext.rewrites import scale_layers_as_add

    scale_layer = sys.modules[keras.applications.InceptionResNetV2.__module__].CustomScaleLayer
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    up = L.Conv2D(8, 1, name="up")(L.Conv2D(4, 1, activation="relu", name="branch")(x))
    h = L.Activation("relu")(scale_layer(0.17, name="block")([x, up]))
    relu_up = L.Conv2D(8, 1, activation="relu", name="relu_up")(h)
    h = scale_layer(0.5, name="kept")([h, relu_up])
    model = keras.Model(inp, L.Dense(2, name="fc")(L.GlobalAveragePooling2D()(h)))
    new = scale_layers_as_add(model)
    assert isinstance(new.get_layer("block"), L.Add)
    assert type(new.get_layer("kept")).__name__ == "CustomScaleLayer"
    for old_w, new_w in zip(model.get_layer("up").get_weights(),
                            new.get_layer("up").get_weights(), strict=True):
        np.testing.assert_array_equal(new_w, old_w * np.float32(0.17))
    x6 = np.random.default_rng(0).normal(size=(4, 6, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(new.predict(x6, verbose=0), model.predict(x6, verbose=0),
                               rtol=1e-5, atol=1e-6)
    plain = keras.Model(inp, x)
    assert scale_layers_as_add(plain) is plain  # nothing to rewrite: the same model


@pytest.mark.slow
def test_duplicate_activations_merge_and_the_relu_folds():
    """NASNet's pattern: a BN output read by several identical ReLU layers. The converter
    merges them and fuses the one ReLU into the conv (its own output range skipped);
    merged before quantizing, the ReLU folds into the conv in QAT too, so the integer
    reference (and the QAT model) round once, as deployed. A ReLU with another config
    (max_value) is a different function: kept."""
    from tfmot_ext.rewrites import merge_duplicate_activations

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    b = L.BatchNormalization(momentum=0.9, name="bn")(L.Conv2D(8, 3, padding="same",
                                                               name="conv")(inp))
    r1, r2 = L.Activation("relu", name="r1")(b), L.Activation("relu", name="r2")(b)
    r6 = L.ReLU(max_value=6.0, name="r6")(b)
    h = L.Concatenate()([L.Conv2D(4, 1, name="left")(r1),
                         L.DepthwiseConv2D(3, padding="same", name="right")(r2), r6])
    model = keras.Model(inp, L.Dense(3, name="fc")(L.GlobalAveragePooling2D()(h)))
    new = merge_duplicate_activations(model)
    names = {la.name for la in new.layers}
    assert "r1" in names and "r2" not in names and "r6" in names
    assert new.get_layer("right").input.ref() == new.get_layer("r1").output.ref()
    x = np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(new.predict(x, verbose=0), model.predict(x, verbose=0))
    assert merge_duplicate_activations(new) is new  # nothing left to merge
    plain = keras.Model(inp, L.Activation("relu")(inp))
    assert merge_duplicate_activations(plain) is plain
    # end to end: two identical ReLUs alone after the BN fold into the conv
    model = keras.Model(inp, L.Dense(3, name="fc")(L.GlobalAveragePooling2D()(
        L.Concatenate()([L.Conv2D(4, 1, name="left")(r1),
                         L.DepthwiseConv2D(3, padding="same", name="right")(r2)]))))
    qat = te.quantize(model)
    folded = qat.get_layer("quant_conv").layer
    assert type(folded).__name__ == "FoldedConv2DBatchNorm"
    assert folded.get_config()["activation"] == "relu"
    assert not {"quant_r1", "quant_r2"} & {la.name for la in qat.layers}
    qat.compile("sgd", "mse")
    qat.fit(x, np.zeros((8, 3), np.float32), epochs=2, verbose=0)
    report = te.verify(qat, te.to_tflite(qat, x), x)
    assert report.weights_exact and len(report.weights) == 4
    assert report.reference is not None and report.reference_exact_fraction == 1.0
