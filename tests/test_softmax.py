"""tfmot_ext.softmax against TFLite's int8 SOFTMAX, both kernel sets, bit for bit.

Each model is a lone int8 SOFTMAX (int8 in and out) converted from ``Input -> Softmax``;
the representative data's range sets the input scale. Random int8 inputs go straight
into the interpreter, with extreme rows (all -128, all 127, all equal, one 127 among
-128s, alternating).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib
import platform
import warnings
from fractions import Fraction

import numpy as np
import pytest
from conftest import ptq_int8

from tfmot_ext._compat import interpreter_ops, keras, tf
from tfmot_ext.errors import IntegerReferenceError
from tfmot_ext.softmax import (
    _expf,
    _fma,
    _preprocess_softmax_scaling,
    softmax_optimized,
    softmax_reference,
)

R = tf.lite.experimental.OpResolverType
#: kernel set -> (resolver, the function it must match); BUILTIN adds XNNPACK, which
#: leaves int8 SOFTMAX to the optimized builtin kernel
KERNELS = {
    "reference": (R.BUILTIN_REF, softmax_reference),
    "optimized": (R.BUILTIN_WITHOUT_DEFAULT_DELEGATES, softmax_optimized),
    "xnnpack": (R.BUILTIN, softmax_optimized),
}
RANGES = (0.5, 4.0, 20.0, 100.0)
LENGTHS = (1, 3, 10, 33)


@functools.cache
def _model(shape: tuple[int, ...], data_range: float) -> bytes:
    """A lone int8 SOFTMAX over the last axis, calibrated on uniform(-range, range)."""
    inp = keras.Input(shape)
    model = keras.Model(inp, keras.layers.Softmax()(inp))
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(8):
            yield [rng.uniform(-data_range, data_range, (1, *shape)).astype(np.float32)]

    return ptq_int8(model, representative)


def _with_beta(model: bytes, beta: float) -> bytes:
    """The model with its SOFTMAX's ``beta`` rewritten (the converter always writes 1)."""
    import flatbuffers

    schema = importlib.import_module("tensorflow.lite.python.schema_py_generated")
    tree = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    for op in tree.subgraphs[0].operators:
        if isinstance(op.builtinOptions, schema.SoftmaxOptionsT):
            op.builtinOptions.beta = beta
    builder = flatbuffers.Builder(1024)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _interpreter(model: bytes, resolver, shape: tuple[int, ...] | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interp = tf.lite.Interpreter(model_content=model, experimental_op_resolver_type=resolver)
    if shape is not None:
        interp.resize_tensor_input(interp.get_input_details()[0]["index"], shape)
    interp.allocate_tensors()
    return interp


def _run(model: bytes, x: np.ndarray, resolver) -> np.ndarray:
    interp = _interpreter(model, resolver, x.shape)
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def _quantization(model: bytes) -> tuple[float, int]:
    interp = _interpreter(model, R.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    assert out["quantization"] == (1 / 256, -128)  # fixed by the int8 SOFTMAX kernel
    assert [op["op_name"] for op in interpreter_ops(interp)] == ["SOFTMAX"]
    scale, zero_point = inp["quantization"]
    return scale, zero_point


def _inputs(shape: tuple[int, ...], rng: np.random.Generator, rows: int = 200) -> np.ndarray:
    """Uniform int8 rows, narrow-spread rows, and the extreme rows."""
    wide = rng.integers(-128, 128, (rows, *shape))
    offsets = rng.integers(-124, 124, (rows, *([1] * len(shape))))
    narrow = np.clip(offsets + rng.integers(-4, 5, (rows, *shape)), -128, 127)
    n = shape[-1]
    one_hot = np.full(shape, -128)
    one_hot[..., n // 2] = 127
    alternating = np.resize(np.array([-128, 127]), shape)
    extremes = np.stack([np.full(shape, -128), np.full(shape, 127), np.full(shape, 5),
                         one_hot, alternating, -alternating - 1])
    return np.concatenate([wide, narrow, extremes]).astype(np.int8)


def _check_all_kernels(model: bytes, x: np.ndarray, beta: float = 1.0) -> dict[str, np.ndarray]:
    scale, zero_point = _quantization(model)
    got = {}
    for name, (resolver, port) in KERNELS.items():
        got[name] = _run(model, x, resolver)
        mine = port(x, scale, zero_point, beta)
        assert mine.dtype == np.int8 and mine.shape == x.shape
        bad = np.argwhere(got[name] != mine)
        assert bad.size == 0, (name, scale, bad[:5].tolist())
    return got


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("data_range", RANGES)
def test_rank2_bit_exact(data_range, length):
    rng = np.random.default_rng(int(data_range * 10) + length)
    shape = (length,)
    _check_all_kernels(_model(shape, data_range), _inputs(shape, rng))


@pytest.mark.parametrize("data_range", [4.0, 100.0])
def test_rank4_channels_bit_exact(data_range):
    shape = (2, 3, 7)
    rng = np.random.default_rng(7)
    _check_all_kernels(_model(shape, data_range), _inputs(shape, rng, rows=40))


def test_huge_scale_keeps_only_the_row_maximum():
    """beta * s_in >= 32 caps the multiplier at 2**31 - 1 (left shift 31, from 16 on);
    the reference's diff_min is then 0: all but the row's maxima give -128."""
    model = _model((10,), 5000.0)
    scale, _ = _quantization(model)
    assert scale > 32
    assert _preprocess_softmax_scaling(1.0, scale) == (2**31 - 1, 31, 0)
    _check_all_kernels(model, _inputs((10,), np.random.default_rng(3)))


@pytest.mark.parametrize("beta", [0.7, 1.9])
def test_beta(beta):
    shape = (10,)
    model = _with_beta(_model(shape, 20.0), beta)
    x = _inputs(shape, np.random.default_rng(11))
    got = _check_all_kernels(model, x, beta)
    scale, zero_point = _quantization(model)
    assert not np.array_equal(got["optimized"], softmax_optimized(x, scale, zero_point))


def test_xnnpack_does_not_take_int8_softmax():
    model = _model((10,), 4.0)
    interp = _interpreter(model, R.BUILTIN)
    assert [op["op_name"] for op in interpreter_ops(interp)] == ["SOFTMAX"]  # no DELEGATE


def test_reference_and_optimized_kernels_differ():
    """Rarely (near-ties of 256 * p), by one step: the reason for two functions."""
    shape = (10,)
    model = _model(shape, 20.0)
    x = np.random.default_rng(2024).integers(-128, 128, (50_000, *shape)).astype(np.int8)
    got = _check_all_kernels(model, x)
    diff = got["reference"].astype(np.int64) - got["optimized"]
    assert np.count_nonzero(diff) > 0
    assert np.abs(diff).max() == 1
    assert np.count_nonzero(diff) / diff.size < 1e-3
    assert np.array_equal(got["optimized"], got["xnnpack"])


def test_fma_rounds_once():
    rng = np.random.default_rng(5)
    n = 3000
    a = rng.standard_normal(n) * 2.0 ** rng.integers(-30, 30, n)
    b = rng.standard_normal(n) * 2.0 ** rng.integers(-30, 30, n)
    c = -(a * b) * (1 + rng.standard_normal(n) * 2.0 ** rng.integers(-60, 5, n))
    exact = [float(Fraction(x) * Fraction(y) + Fraction(z)) for x, y, z in zip(a, b, c)]
    assert np.array_equal(_fma(a, b, c), np.array(exact))


def _glibc_expf():
    name = ctypes.util.find_library("m")
    if platform.system() != "Linux" or platform.machine() != "x86_64" or name is None:
        return None
    if platform.libc_ver()[0] != "glibc":
        return None
    expf = ctypes.CDLL(name).expf
    expf.restype, expf.argtypes = ctypes.c_float, [ctypes.c_float]
    return np.frompyfunc(expf, 1, 1)


@pytest.mark.skipif(_glibc_expf() is None, reason="needs glibc's expf on x86-64")
def test_expf_is_glibcs():
    """The table's expf is the C library's; a correctly rounded exp differs on ~0.05%."""
    libm = _glibc_expf()
    rng = np.random.default_rng(0)
    x = np.concatenate([-rng.uniform(0, 110, 200_000), rng.uniform(0, 88, 1000),
                        [0.0, -0.0, -103.9, -104.0, 88.7]]).astype(np.float32)
    with np.errstate(over="ignore"):
        want = libm(x.astype(np.float64)).astype(np.float32)
    assert np.array_equal(_expf(x).view(np.int32), want.view(np.int32))
    rounded = np.exp(x.astype(np.float64)).astype(np.float32)
    assert np.count_nonzero(rounded != want) > 0


def test_reference_refuses_rows_where_tflite_aborts():
    """TFLite's reference kernel aborts the process (TFLITE_CHECK) once a row's sum of
    exps reaches 2**28: 512 equal values; 511 still run. The optimized kernel has no limit."""
    assert softmax_reference(np.zeros((1, 511), np.int8), 0.1, 0).max() == -127
    with pytest.raises(IntegerReferenceError, match="aborts"):
        softmax_reference(np.zeros((1, 512), np.int8), 0.1, 0)
    assert softmax_optimized(np.zeros((1, 512), np.int8), 0.1, 0).max() == -127  # 0.5 rounds up
