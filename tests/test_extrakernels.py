"""The kernels of tfmot_ext.extrakernels against closed forms (the bit-exactness against
the interpreter is tests/test_parity_fuzz.py's), and the 1-D and dilation rewrites
against the layers they replace."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfmot_ext import extrakernels as xk
from tfmot_ext import kernels as ops
from tfmot_ext._compat import keras, tf
from tfmot_ext.dilation import native_dilations
from tfmot_ext.params import LayerQuantParams, TensorQuant
from tfmot_ext.ranks import conv1d_as_conv2d

L = keras.layers


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.sampled_from(["same", "valid"]),
       st.sampled_from([None, 1]), st.integers(3, 6), st.integers(0, 2**16))
def test_transpose_conv_accumulator_is_tfs_conv2d_transpose(k, s, padding, op, size, seed):
    """Closed form: the int32 accumulator equals Keras's float Conv2DTranspose of the
    zero-point-shifted integers (exact: integer sums far below 2**24)."""
    if op is not None and op >= s:  # Keras needs op < s (and TF's oneDNN kernel aborts
        op = None  # on an explicit output_padding of 0, so 0 is not drawn)
    rng = np.random.default_rng(seed)
    xs = rng.integers(-20, 20, (2, size, size + 1, 2))
    kern = rng.integers(-20, 20, (k, k, 3, 2))
    layer = L.Conv2DTranspose(3, k, strides=s, padding=padding, use_bias=False,
                              output_padding=None if op is None else (op, op))
    layer.build((None, size, size + 1, 2))
    layer.set_weights([kern.astype(np.float32)])
    expect = layer(xs.astype(np.float32)).numpy()
    got = xk.transpose_conv_accumulator(xs, kern, (s, s), padding,
                                        None if op is None else (op, op))
    np.testing.assert_array_equal(got, expect.astype(np.int64))


@given(st.floats(0.01, 0.5), st.floats(0.05, 0.9), st.floats(0.01, 0.5), st.integers(-20, 20))
def test_leaky_relu_within_one_lsb_of_the_real_function(s_in, alpha, s_out, z):
    """``q_y`` is ``leaky(s_x (q - z_x)) / s_y`` rounded by TFLite's fixed-point
    multiply (bit-exactness with the interpreter is the fuzzer's test)."""
    q = np.arange(-128, 128, dtype=np.int8)
    y = xk.leaky_relu(ops.IntTensor(q, s_in, z), alpha, s_out, 0).values.astype(np.int64)
    d = s_in * (q.astype(np.float64) - z)
    exact = np.clip(np.where(d >= 0, d, alpha * d) / s_out, -128, 127)
    # MBQM rounds twice (the high multiply, then the shift: -121 * 0.375 = -45.375
    # becomes round(-90.75) = -91, then -45.5 -> -46), so within one LSB, not half
    assert np.all(np.abs(y - exact) <= 1.0)


def test_gelu_table_is_the_rounded_function():
    t = xk.gelu_lut(0.05, -3, 0.04, -20).astype(np.int64)
    d = 0.05 * (np.arange(-128, 128) + 3)
    from math import erf
    g = np.array([0.5 * v * (1 + erf(v / np.sqrt(2))) for v in d])
    np.testing.assert_array_less(np.abs(t - np.clip(np.round(g / 0.04) - 20, -128, 127)), 1.5)


def test_max_min_put_inputs_on_the_output_scale():
    a = ops.IntTensor(np.array([[-100, 0, 50]], np.int8), 0.1, 0)
    b = ops.IntTensor(np.array([[10, -10, 120]], np.int8), 0.05, 0)
    p = LayerQuantParams(name="m", kind="Maximum", inputs=("a", "b"), quantized=True,
                         output=TensorQuant(0.1, 0, 8, -12.8, 12.7, -12.8, 12.7))
    y = xk.MORE_NARY["Maximum"](p, [a, b], ops.Call("m"))
    assert y.values.tolist() == [[5, 0, 60]] and y.scale == 0.1


def test_one_d_kernels_are_the_two_d_ones(rng):
    x = rng.integers(-128, 128, (2, 9, 3)).astype(np.int8)
    for kind, cfg, keras_layer in [
            ("MaxPooling1D", {"pool_size": 2}, L.MaxPooling1D(2)),
            ("ZeroPadding1D", {"padding": (1, 2)}, L.ZeroPadding1D((1, 2))),
            ("Cropping1D", {"cropping": (2, 1)}, L.Cropping1D((2, 1))),
            ("UpSampling1D", {"size": 3}, L.UpSampling1D(3))]:
        p = LayerQuantParams(name="l", kind=kind, inputs=("x",), quantized=False, config=cfg)
        y = xk.MORE_UNARY[kind](p, ops.IntTensor(x, 0.1, 0), ops.Call("l"))
        np.testing.assert_array_equal(y.values, keras_layer(x.astype(np.float32)).numpy(),
                                      err_msg=kind)


def test_deconv_output_length_is_keras():
    from tf_keras.src.utils import conv_utils
    for size, k, pad, s, op in [(4, 3, "same", 2, None), (5, 2, "valid", 3, None),
                                (4, 3, "same", 2, 1), (5, 3, "valid", 2, 1)]:
        assert xk.deconv_output_length(size, k, pad, s, op) == conv_utils.deconv_output_length(
            size, k, pad, output_padding=op, stride=s)


def _seq_model(layer_fn, shape=(11, 3)):
    inp = keras.Input(shape)
    x = layer_fn(inp)
    x = L.BatchNormalization(momentum=0.9)(x)
    x = L.ReLU()(x)
    x = L.MaxPooling1D(2)(x)
    return keras.Model(inp, L.Dense(2)(x))


@pytest.mark.parametrize("make", [
    lambda: L.Conv1D(4, 3, padding="causal", dilation_rate=2),
    lambda: L.Conv1D(6, 3, strides=2, groups=3, padding="same"),
    lambda: L.DepthwiseConv1D(3, depth_multiplier=2),
    lambda: L.SeparableConv1D(4, 3, padding="same"),
    lambda: L.Conv1DTranspose(4, 3, strides=2, padding="same"),
])
def test_conv1d_segments_become_2d_with_the_same_function(make, rng):
    model = _seq_model(lambda t: make()(t))
    x = rng.normal(size=(4, 11, 3)).astype(np.float32)
    model.layers[2].set_weights([rng.uniform(0.5, 2.0, w.shape).astype(np.float32)
                                 for w in model.layers[2].get_weights()])
    new = conv1d_as_conv2d(model)
    kinds = [type(la).__name__ for la in new.layers]
    assert not any(k.endswith("1D") and k != "Dense" for k in kinds[1:-1]), kinds
    assert {la.name for la in model.layers} <= {la.name for la in new.layers}
    np.testing.assert_allclose(new.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: L.Conv2D(3, 3, padding="same", dilation_rate=2),
                                  lambda: L.DepthwiseConv2D(3, dilation_rate=(2, 3))])
def test_native_dilations_same_values_one_op_and_restored(make, rng):
    inp = keras.Input((9, 10, 2))
    layer = make()
    model = keras.Model(inp, layer(inp))
    x = tf.constant(rng.normal(size=(2, 9, 10, 2)).astype(np.float32))
    before = model(x).numpy()

    @tf.function
    def f(t):
        return model(t)

    with native_dilations(model) as n:
        assert n == 1
        ops_in = {o.type for o in f.get_concrete_function(x).graph.get_operations()}
        np.testing.assert_allclose(model(x).numpy(), before, rtol=1e-5, atol=1e-5)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x) ** 2)
        assert all(g is not None for g in tape.gradient(loss, model.trainable_weights))
    assert "SpaceToBatchND" not in ops_in
    assert "convolution_op" not in vars(layer) and "call" not in vars(layer)


def test_resize_bilinear_is_tflites_own_vectors():
    """TFLite's ``TestResizeBilinearHalfPixelCenters_2x2to4x6`` (resize_bilinear_test.cc),
    both centre conventions: the expected integers are TFLite's."""
    q = np.array([127, -128, 64, 0], np.int8).reshape(1, 2, 2, 1)
    corners = [[127, 42, -43, -128, -128, -128], [96, 42, -11, -64, -64, -64],
               [64, 43, 21, 0, 0, 0], [64, 43, 21, 0, 0, 0]]
    centres = [[127, 127, 42, -43, -128, -128], [111, 111, 42, -27, -96, -96],
               [80, 80, 43, 5, -32, -32], [64, 64, 43, 21, 0, 0]]
    assert xk.resize_bilinear(q, 4, 6, half_pixel_centers=False)[0, ..., 0].tolist() == corners
    assert xk.resize_bilinear(q, 4, 6, half_pixel_centers=True)[0, ..., 0].tolist() == centres

