"""TFLite Micro's kernels where they differ from TFLite's (tfmot_ext.microkernels, the
``"micro"`` rounding), bit for bit against the tflite-micro interpreter on lone int8
operators, over every int8 input and several quantizations; and the measured fact that
TFLite's own kernels differ there (so the ``"micro"`` rounding is needed)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from conftest import ptq_int8

from tfmot_ext import extrakernels as xk
from tfmot_ext import kernels as ops
from tfmot_ext import microkernels as mk
from tfmot_ext._compat import interpreter_ops, keras
from tfmot_ext.fixedpoint import mbqm, quantize_multiplier, requant_multiplier
from tfmot_ext.params import LayerQuantParams, TensorQuant
from tfmot_ext.tflite import op_outputs, undelegated, weight_tensors

pytest.importorskip("tflite_micro", reason="the tflite-micro package (the micro extra)")
from tflite_micro.python.tflite_micro import runtime as tflm

L = keras.layers
ALL_INT8 = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)


def _convert(model: keras.Model, ranges: list[tuple[float, float]]) -> bytes:
    """Full-integer post-training conversion, each input calibrated on [lo, hi] (the
    first sample holds both ends, the others are uniform in between)."""
    rng = np.random.default_rng(0)

    def sample(shape: tuple[int, ...], lo: float, hi: float, ends: bool) -> np.ndarray:
        x = rng.uniform(lo, hi, (1, *shape)).astype(np.float32)
        if ends:
            x.flat[0], x.flat[1] = lo, hi
        return x

    def representative():
        for k in range(16):
            yield [sample(tuple(inp.shape[1:]), lo, hi, k == 0)
                   for inp, (lo, hi) in zip(model.inputs, ranges, strict=True)]

    return ptq_int8(model, representative)


@functools.cache
def _unary(layer: str, lo: float, hi: float) -> bytes:
    inp = keras.Input((256,))
    make = {"sigmoid": lambda: L.Activation("sigmoid"), "tanh": lambda: L.Activation("tanh"),
            "relu6": lambda: L.ReLU(6.0)}[layer]
    return _convert(keras.Model(inp, make()(inp)), [(lo, hi)])


def _io(content: bytes) -> tuple[tuple[float, int], tuple[float, int], list[str]]:
    interp, _ = undelegated(content)
    ops_ = [op["op_name"] for op in interpreter_ops(interp)]
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    return i["quantization"], o["quantization"], ops_


def _micro(content: bytes, *xs: np.ndarray) -> np.ndarray:
    interp = tflm.Interpreter.from_bytes(content)
    for k, x in enumerate(xs):
        interp.set_input(x, k)
    interp.invoke()
    return np.asarray(interp.get_output(0))


#: input ranges of the lone LOGISTIC/TANH; the last makes the input scale about 2, where
#: TFLite Micro saturates |q - z| >= 3 (its fixed-point input radius) and TFLite's
#: table rounds logistic(-6) * 256 = 0.63 to 1 (found by sweeping the two functions)
RANGES = [(-1.0, 1.0), (-4.0, 4.0), (-8.0, 2.0), (-20.0, 20.0), (-0.3, 0.5), (-60.0, 5.0),
          (-375.4, 140.9)]


@pytest.mark.parametrize("fn", ["sigmoid", "tanh"])
def test_logistic_tanh_are_tflite_micros_fixed_point(fn):
    """Every int8 input, seven input quantizations: TFLite Micro's LOGISTIC/TANH equal
    :func:`logistic_int8`/:func:`tanh_int8` bit for bit. TFLite's table (its builtin
    kernels) agrees with them except where the fixed point saturates first: measured,
    LOGISTIC differs on the last range only, TANH nowhere."""
    differ = {}
    for lo, hi in RANGES:
        content = _unary(fn, lo, hi)
        (s, z), (s_out, z_out), names = _io(content)
        assert names == ["LOGISTIC" if fn == "sigmoid" else "TANH"]
        micro = mk.logistic_int8 if fn == "sigmoid" else mk.tanh_int8
        np.testing.assert_array_equal(_micro(content, ALL_INT8), micro(ALL_INT8, s, z),
                                      err_msg=f"{fn} calibrated on [{lo}, {hi}]")
        builtin = op_outputs(content, ALL_INT8, "builtin", intermediates=False)[0].values
        assert (s_out, z_out) == ((1 / 256, -128) if fn == "sigmoid" else (1 / 128, 0))
        differ[(lo, hi)] = int((builtin.reshape(1, 256) != micro(ALL_INT8, s, z)).sum())
    assert {r for r, n in differ.items() if n} == ({RANGES[-1]} if fn == "sigmoid" else set())


@pytest.mark.parametrize("lo,hi", [(-3.0, 9.0), (-1.0, 4.0), (0.0, 12.0)])
def test_relu6_clamps_without_requantizing(lo, hi):
    """A lone RELU6 whose output scale differs from its input's: TFLite Micro clamps
    the input integers (:func:`relu6_int8`), TFLite requantizes them."""
    content = _unary("relu6", lo, hi)
    (s, z), (s_out, z_out), names = _io(content)
    assert names == ["RELU6"] and (s, z) != (s_out, z_out)
    np.testing.assert_array_equal(_micro(content, ALL_INT8), mk.relu6_int8(ALL_INT8, s, z))
    p = LayerQuantParams(name="r", kind="ReLU", inputs=("x",), quantized=True,
                         config={"max_value": 6.0},
                         output=TensorQuant(s_out, z_out, 8, 0.0, 6.0, 0.0, 6.0))
    for rounding, kernels in (("micro", None), ("optimized", "builtin")):
        y = ops.UNARY["ReLU"](p, ops.IntTensor(ALL_INT8, s, z), ops.Call("r", rounding))
        theirs = (_micro(content, ALL_INT8) if kernels is None else
                  op_outputs(content, ALL_INT8, kernels, intermediates=False)[0].values)
        np.testing.assert_array_equal(y.values, np.asarray(theirs).reshape(1, 256))
    assert not np.array_equal(_micro(content, ALL_INT8), op_outputs(
        content, ALL_INT8, "builtin", intermediates=False)[0].values.reshape(1, 256))


@pytest.mark.parametrize("r1,r2", [((-1.0, 1.0), (-5.0, 3.0)), ((-0.7, 0.2), (-0.1, 0.9)),
                                   ((-30.0, 30.0), (-1.0, 1.0))])
def test_sub_is_tflite_micros(r1, r2):
    """SUB of two inputs at different scales on all 65,536 int8 pairs: TFLite Micro
    equals the reference's ``"micro"`` SUB (float32 multiplier quotients)."""
    a, b = keras.Input((256,)), keras.Input((256,))
    content = _convert(keras.Model([a, b], L.Subtract()([a, b])), [r1, r2])
    interp, _ = undelegated(content)
    (qa, qb), out = interp.get_input_details(), interp.get_output_details()[0]
    assert [op["op_name"] for op in interpreter_ops(interp)] == ["SUB"]
    xa = np.repeat(ALL_INT8, 256, axis=0)                  # (256, 256): every pair
    xb = np.repeat(ALL_INT8.reshape(256, 1), 256, axis=1)
    micro = np.stack([_micro(content, xa[i : i + 1], xb[i : i + 1]) for i in range(256)])
    s, z = out["quantization"]
    p = LayerQuantParams(name="s", kind="Subtract", inputs=("a", "b"), quantized=True,
                         output=TensorQuant(s, z, 8, -1.0, 1.0, -1.0, 1.0))
    y = ops.add_sub(p, [ops.IntTensor(xa, *qa["quantization"]),
                        ops.IntTensor(xb, *qb["quantization"])], ops.Call("s", "micro"),
                    subtract=True)
    np.testing.assert_array_equal(micro.reshape(256, 256), y.values)


def test_fully_connected_rounds_twice_in_tflite_micro(rng):
    """A lone FULLY_CONNECTED on 400 random rows: TFLite Micro's outputs are the
    accumulator requantized with the double-rounding MBQM (``mbqm("micro", fc=True)``),
    TFLite's reference kernel's with the single rounding; measured, the two differ by
    1 LSB on some of the 4,000 outputs."""
    inp = keras.Input((64,))
    model = keras.Model(inp, L.Dense(10)(inp))
    model.layers[1].set_weights([rng.normal(size=(64, 10)).astype(np.float32),
                                 rng.normal(size=10).astype(np.float32)])
    content = _convert(model, [(-3.0, 3.0)])
    (w,) = weight_tensors(content)
    x = rng.integers(-128, 128, (400, 64)).astype(np.int8)
    acc = (x.astype(np.int64) - w.input_zero_point) @ w.filter.astype(np.int64).T + w.bias
    m0, shift = quantize_multiplier(requant_multiplier(
        w.input_scale, w.filter_scales, w.output_scale, per_tensor_fc=w.filter_scales.size == 1))
    theirs = {k: op_outputs(content, x, k, intermediates=False)[0].values.reshape(400, 10)
              for k in ("micro", "reference")}
    for rounding, kernels in (("micro", "micro"), ("reference", "reference")):
        y = np.clip(mbqm(rounding, fc=True)(acc, m0, shift) + w.output_zero_point, -128, 127)
        np.testing.assert_array_equal(y, theirs[kernels])
    diff = np.abs(theirs["micro"].astype(int) - theirs["reference"])
    assert diff.max() == 1 and diff.sum() > 0


@pytest.mark.parametrize("lo,hi", [(-3.0, 9.0), (-8.0, 1.0)])
def test_prelu_is_tflite_micros(lo, hi, rng):
    """A lone PRELU (a trained alpha per channel) on every int8 input: TFLite Micro
    equals ``prelu(..., rounding="micro")`` (double multipliers), TFLite's builtin
    kernel ``prelu(...)`` (float32 ones)."""
    inp = keras.Input((256,))
    layer = L.PReLU()
    model = keras.Model(inp, layer(inp))
    layer.set_weights([rng.uniform(0.05, 0.6, (256,)).astype(np.float32)])
    content = _convert(model, [(lo, hi)])
    (s, z), (s_out, z_out), names = _io(content)
    assert names == ["PRELU"]
    (w,) = weight_tensors(content)
    alpha = ops.IntTensor(w.filter.reshape(1, 256), float(w.filter_scales[0]), 0)
    x = ops.IntTensor(ALL_INT8, s, z)
    np.testing.assert_array_equal(_micro(content, ALL_INT8),
                                  xk.prelu(x, alpha, s_out, z_out, "micro").values)
    builtin = op_outputs(content, ALL_INT8, "builtin", intermediates=False)[0].values
    np.testing.assert_array_equal(builtin.reshape(1, 256), xk.prelu(x, alpha, s_out, z_out).values)


def test_softmax_is_the_reference_kernels_gemmlowp(rng):
    """A lone SOFTMAX: TFLite Micro's is TFLite's reference kernel (gemmlowp), which
    ``rounding="micro"`` runs, on 200 random rows and on the rows of 20,000 random
    candidates where TFLite's optimized kernel (float32 tables) differs."""
    inp = keras.Input((10,))
    content = _convert(keras.Model(inp, L.Softmax()(inp)), [(-6.0, 6.0)])
    (s, z), _, names = _io(content)
    assert names == ["SOFTMAX"]
    candidates = rng.integers(-128, 128, (20000, 10)).astype(np.int8)
    ref, opt = (ops.softmax(ops.IntTensor(candidates, s, z), ops.Call("s", r)).values
                for r in ("micro", "optimized"))
    ties = candidates[(ref != opt).any(axis=1)][:20]
    assert len(ties) > 0  # the optimized kernel does differ somewhere
    x = np.concatenate([rng.integers(-128, 128, (200, 10)).astype(np.int8), ties])
    micro = np.stack([_micro(content, row[None]) for row in x]).reshape(x.shape)
    np.testing.assert_array_equal(micro, ops.softmax(ops.IntTensor(x, s, z),
                                                     ops.Call("s", "micro")).values)
