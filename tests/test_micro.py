"""TFLite Micro end to end: a QAT model's ``.tflite`` on the tflite-micro interpreter,
bit for bit with ``run_reference(..., rounding="micro")`` on every tensor; the arena it
needs; the batch-1 shapes TFLite Micro needs; its typed refusals."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import small_qat

import tfmot_ext as te
from tfmot_ext import micro
from tfmot_ext._compat import interpreter_ops, keras
from tfmot_ext.errors import ConfigError, ConversionError, IntegerReferenceError
from tfmot_ext.matching import compare_with_tflite
from tfmot_ext.tflite import fixed_shapes, op_outputs, undelegated

pytest.importorskip("tflite_micro", reason="the tflite-micro package (the micro extra)")

L = keras.layers


@pytest.fixture(scope="module")
def sequence_model():
    """A Dense on a sequence (its (N * T, C) reshape merges the batch) into a Conv1D and
    a max pooling: the model the dynamic-batch conversion stores wrong shapes for."""
    rng = np.random.default_rng(3)
    keras.utils.set_random_seed(3)
    inp = keras.Input((12, 3))
    x = L.Dense(8, activation="relu")(inp)
    x = L.Conv1D(6, 3, padding="same", activation="relu")(x)
    x = L.MaxPooling1D(2)(x)
    model = keras.Model(inp, L.Dense(2)(L.Flatten()(x)))
    qat = te.quantize(model)
    data = rng.normal(size=(48, 12, 3)).astype(np.float32)
    qat.compile("adam", "mse")
    qat.fit(data, rng.normal(size=(48, 2)), epochs=2, verbose=0)
    return qat, data


def test_verify_micro_is_bit_exact_and_reports_the_arena(rng, tmp_path):
    qat, data = small_qat(rng, epochs=2)
    tfl = te.to_tflite(qat, data, fixed_batch=True)
    report = te.verify(qat, tfl, data, kernels="micro", require_reference=True)
    assert report.passed and report.reference_exact_fraction == 1.0, str(report)
    assert report.arena_bytes is not None and report.arena_bytes % 16 == 0
    assert f"TFLite Micro tensor arena: {report.arena_bytes} bytes" in str(report)
    # the least arena: it runs there and not 16 bytes below (probed in child processes)
    (tmp_path / "m.tflite").write_bytes(tfl)
    assert micro._runs_in(str(tmp_path / "m.tflite"), report.arena_bytes)
    assert not micro._runs_in(str(tmp_path / "m.tflite"), report.arena_bytes - 16)


def test_dynamic_batch_is_refused_with_the_fix_and_fixed_shapes_run(sequence_model):
    qat, data = sequence_model
    dynamic = te.to_tflite(qat, data)
    with pytest.raises(ConversionError, match=r"RESHAPE.*fixed_batch=True"):
        micro.op_outputs(dynamic, np.zeros((1, 12, 3), np.int8))
    fixed = fixed_shapes(dynamic)
    # the same operators, tensors and quantization; TFLite's outputs unchanged
    (a, da), (b, db) = undelegated(dynamic), undelegated(fixed)
    assert [o["op_name"] for o in interpreter_ops(a)] == [o["op_name"] for o in interpreter_ops(b)]
    assert [(d["name"], d["quantization"]) for d in da.values()] == [
        (d["name"], d["quantization"]) for d in db.values()]
    assert all(-1 not in d["shape_signature"] for d in db.values())
    for k in ("builtin", "reference"):
        np.testing.assert_array_equal(op_outputs(dynamic, data, k, intermediates=False)[0].values,
                                      op_outputs(fixed, data, k, intermediates=False)[0].values)
    params = te.extract(qat)
    matches = compare_with_tflite(params, fixed, data, "micro")
    assert matches and all(m.layer is not None and m.mismatched == 0 for m in matches), matches
    assert fixed_shapes(fixed) == fixed  # idempotent


def test_run_reference_micro_equals_tflite_micro_on_the_outputs(sequence_model):
    qat, data = sequence_model
    fixed = te.to_tflite(qat, data, fixed_batch=True)
    params = te.extract(qat)
    ref = te.run_reference(params, data, rounding="micro")
    (out,) = op_outputs(fixed, data, "micro", intermediates=False)
    np.testing.assert_array_equal(ref.output.values.reshape(out.values.shape), out.values)


def test_gelu_is_refused_by_tflite_micro_and_the_micro_reference(rng):
    inp = keras.Input((6,))
    qat = te.quantize(keras.Model(inp, L.Dense(4, activation="gelu")(inp)))
    data = rng.normal(size=(16, 6)).astype(np.float32)
    qat.compile("adam", "mse")
    qat.fit(data, rng.normal(size=(16, 4)), epochs=1, verbose=0)
    tfl = te.to_tflite(qat, data, fixed_batch=True)
    with pytest.raises(ConversionError, match="GELU"):
        te.verify(qat, tfl, data, kernels="micro")
    with pytest.raises(IntegerReferenceError, match="TFLite Micro has no GELU"):
        te.run_reference(te.extract(qat), data, rounding="micro")


def test_without_the_package_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tflite_micro.python.tflite_micro", None)
    with pytest.raises(ConfigError, match=r"tfmot-ext\[micro\]"):
        micro.interpreter(b"")
    assert not micro.available()
