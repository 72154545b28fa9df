"""Exports: npz / JSON encodings / C header (compiled with the system C compiler), atomic."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tfmot_ext as te
from tfmot_ext._compat import keras
from tfmot_ext.errors import ExportError
from tfmot_ext.export import atomic_path, pack_int4, to_encodings, unpack_int4
from tfmot_ext.extract import extract

L = keras.layers


@pytest.fixture(scope="module")
def params():
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    inp = keras.Input((8, 8, 2))
    x = L.Conv2D(5, 3, activation="relu", name="conv")(inp)
    x = L.DepthwiseConv2D(3, activation="relu", name="dw")(x)
    x = L.Flatten()(x)
    model = keras.Model(inp, L.Dense(3, name="fc")(x))
    qat = te.quantize(model, [te.Rule(name="dw", config=te.depthwise_conv_config(4))])
    data = rng.normal(size=(32, 8, 8, 2)).astype(np.float32)
    qat.compile("adam", "mse")
    qat.fit(data, rng.normal(size=(32, 3)), epochs=1, verbose=0)
    return extract(qat)


@given(st.lists(st.integers(-8, 7), max_size=41))
def test_pack_int4_round_trip(values):
    v = np.array(values, np.int8)
    packed = pack_int4(v)
    assert packed.size == (v.size + 1) // 2
    np.testing.assert_array_equal(unpack_int4(packed, v.size), v)


def test_pack_int4_rejects_wide_values():
    with pytest.raises(ExportError, match=r"\[-8, 7\]"):
        pack_int4(np.array([8], np.int8))


def test_npz_round_trip(params, tmp_path):
    te.export(params, tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz") as z:
        for p in params.quantized_layers():
            np.testing.assert_array_equal(z[f"{p.name}/kernel_int"], p.kernel_int)
            assert z[f"{p.name}/kernel_int"].dtype == p.kernel_int.dtype
            np.testing.assert_array_equal(z[f"{p.name}/bias_int"], p.bias_int)
            np.testing.assert_array_equal(z[f"{p.name}/kernel_scale"], p.kernel_scale)
            np.testing.assert_array_equal(z[f"{p.name}/shift"], p.shift)


def test_json_encodings_are_exact_and_versioned(params, tmp_path):
    te.export(params, tmp_path / "p.json")
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["format"] == "tfmot_ext.encodings" and doc["version"] == 1
    by_name = {layer["name"]: layer for layer in doc["layers"]}
    assert list(by_name) == list(params)
    for p in params.quantized_layers():
        k = by_name[p.name]["kernel"]
        np.testing.assert_array_equal(np.float32(k["scale"]), p.kernel_scale)
        assert k["bits"] == p.bits and k["shape"] == list(p.kernel_int.shape)
        o = by_name[p.name]["output"]
        assert np.float32(o["scale"]) == np.float32(p.output_scale)
        assert by_name[p.name]["requant"]["shift"] == np.atleast_1d(p.shift).tolist()
        # min/max describe the integer grid: max = (qmax - zp) * scale
        np.testing.assert_array_equal(np.float32(k["max"]),
                                      np.float32(127 if p.bits == 8 else 7) * p.kernel_scale)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="no C compiler")
def test_c_header_compiles_and_holds_the_integers(params, tmp_path):
    te.export(params, tmp_path / "model.h", pack_low_bits=True)
    checks = []
    for p in params.quantized_layers():
        base = f"model_{p.name}"
        n = p.kernel_int.size
        checks.append(
            f'{{ long s = 0; for (int i = 0; i < {n}; i++) s += {base}_kernel[i];'
            f' printf("{p.name} kernel %ld\\n", s); }}')
        checks.append(
            f'{{ long s = 0; for (int i = 0; i < {p.bias_int.size}; i++) s += {base}_bias[i];'
            f' printf("{p.name} bias %ld\\n", s); }}')
        checks.append(f'printf("{p.name} scale0 %.9g\\n", (double){base}_kernel_scale[0]);')
        if p.bits <= 4:
            checks.append(
                f'{{ long s = 0; for (int i = 0; i < {n}; i++) {{'
                f' int v = ({base}_kernel_packed[i / 2] >> (4 * (i % 2))) & 15;'
                f' if (v >= 8) v -= 16; s += v * (i + 1); }}'
                f' printf("{p.name} packed %ld\\n", s); }}')
    src = ('#include <stdio.h>\n#include "model.h"\nint main(void) {\n'
           + "\n".join(checks) + "\nreturn 0;\n}\n")
    (tmp_path / "main.c").write_text(src)
    cc = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([cc, "-std=c99", "-Wall", "-Werror", "-Wno-unused-const-variable",
                    "-o", str(tmp_path / "main"), str(tmp_path / "main.c")], check=True,
                   cwd=tmp_path)
    out = subprocess.run([str(tmp_path / "main")], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    expect = []
    for p in params.quantized_layers():
        expect.append(f"{p.name} kernel {int(p.kernel_int.astype(np.int64).sum())}")
        expect.append(f"{p.name} bias {int(p.bias_int.astype(np.int64).sum())}")
        expect.append(f"{p.name} scale0 {float(np.atleast_1d(p.kernel_scale)[0]):.9g}")
        if p.bits <= 4:
            flat = p.kernel_int.astype(np.int64).ravel()
            expect.append(f"{p.name} packed {int((flat * np.arange(1, flat.size + 1)).sum())}")
    assert out == expect


@pytest.mark.parametrize("name", ["p.json", "p.npz", "p.h", "m.tflite", "r.html"])
def test_crash_mid_write_leaves_previous_file(name, params, tmp_path, monkeypatch):
    """Every writer of the package: exports, .tflite files, HTML reports."""
    from tfmot_ext.report import LayerReport

    target = tmp_path / name
    reports = [LayerReport("l", "Conv2D", False, 8, True, 40.0, 8, 30.0, 0.01)]

    def write(path):
        if name.endswith(".tflite"):
            te.save_tflite(b"\x00\x00\x00\x00TFL3 model bytes", path)
        elif name.endswith(".html"):
            te.write_html_report(reports, path)
        else:
            te.export(params, path)

    write(target)
    before = target.read_bytes()

    def boom(fd):
        raise OSError("disk died")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk died"):
        write(target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_export_bad_targets(params, tmp_path):
    with pytest.raises(ExportError, match=r"\.npz, \.json or \.h"):
        te.export(params, tmp_path / "p.txt")
    with pytest.raises(ExportError, match="does not exist"):
        te.export(params, tmp_path / "nope" / "p.json")


def test_encodings_in_memory(params):
    doc = to_encodings(params)
    json.dumps(doc, allow_nan=False)
    assert doc["edges"] == [list(e) for e in params.edges]


def test_atomic_path_for_writers_that_take_a_name(tmp_path):
    """Keras's save and numpy.save write through a temporary name (the demo's qat.h5)."""
    target = tmp_path / "m.h5"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="crash"), atomic_path(target) as tmp:
        assert tmp.endswith(".h5") and os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("crash")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.h5"]
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        f.write(b"new")
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["m.h5"]


def test_atomic_files_get_ordinary_permissions(params, tmp_path):
    """Not mkstemp's 0600: what open() would give under the current umask."""
    umask = os.umask(0o022)
    try:
        te.export(params, tmp_path / "p.h")
        with atomic_path(tmp_path / "m.bin") as tmp, open(tmp, "wb") as f:
            f.write(b"x")
        assert (tmp_path / "p.h").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "m.bin").stat().st_mode & 0o777 == 0o644
        (tmp_path / "p.h").chmod(0o600)  # an existing file keeps its mode
        te.export(params, tmp_path / "p.h")
        assert (tmp_path / "p.h").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(umask)


def test_export_refuses_a_layer_whose_deployment_is_unknown(tmp_path):
    """A quantized kernel whose input comes from a float layer has no int32 bias or
    multiplier; the export stops naming it, and writes nothing."""
    import dataclasses
    from collections import OrderedDict

    from tfmot_ext.errors import ExportError
    from tfmot_ext.export import incomplete_layers
    from tfmot_ext.params import LayerQuantParams, QuantizedModelParams

    p = LayerQuantParams("conv", "Conv2D", ("x",), True, bits=8, kernel_attr="kernel",
                         kernel_int=np.zeros((1, 1, 2, 2), np.int8),
                         kernel_scale=np.float32([0.1, 0.1]),
                         kernel_zero_point=np.int32([0, 0]), bias=np.float32([0.5, 0.0]))
    params = QuantizedModelParams(OrderedDict(conv=p), (), "test")
    assert incomplete_layers(params) == [
        "conv: no input scale, output scale, requantization, int32 bias"]
    for ext in ("h", "json", "npz"):
        with pytest.raises(ExportError, match=r"conv: no input scale.*output_only"):
            te.export(params, tmp_path / f"m.{ext}")
    assert list(tmp_path.iterdir()) == []
    bare = QuantizedModelParams(OrderedDict(conv=dataclasses.replace(p, kernel_int=None)),
                                (), "test")
    assert incomplete_layers(bare) == []


# ------------------------------------------------------------------ rebuild from an export
# A hardware team's view: only the JSON file, and this interpreter written from the
# export's own description (convention, rounding, attributes); no tfmot_ext object.


def _srdhm(a, b):
    ab = a.astype(np.int64) * np.int64(b)
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = (ab + nudge)
    return np.where(q >= 0, q >> 31, -((-q) >> 31))  # C division truncates toward zero


def _rdbpot(x, e):
    mask = (np.int64(1) << e) - 1
    return (x >> e) + ((x & mask) > ((mask >> 1) + (x < 0)))


def _mbqm(x, m0, shift, fc=False):
    m0, shift = np.asarray(m0, np.int64), np.asarray(shift, np.int64)
    if fc:  # reference FULLY_CONNECTED: one rounding
        total = 31 - shift
        return (x * m0 + (np.int64(1) << (total - 1))) >> total
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    return _rdbpot(_srdhm(x * (np.int64(1) << left), m0), right)


def _q31(m):
    q, e = np.frexp(np.float64(m))
    m0 = np.int64(np.sign(q) * np.floor(np.abs(q) * 2.0**31 + 0.5))
    if m0 == 2**31:
        m0, e = m0 // 2, e + 1
    return m0, e


def _same_pad(size, k, stride, dil):
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dil + 1 - size, 0)
    return total // 2, total - total // 2


def _interpret(doc, x):
    """Run the exported integer network on float inputs ``x``; every layer's int8 tensor."""
    t, quant = {}, {}
    for la in doc["layers"]:
        op, a, ins = la["op"], la["attributes"], la["inputs"]
        if op == "(input)":
            continue
        if op == "QUANTIZE":
            o = la["output"]
            q = np.float32(x) / np.float32(o["scale"])
            q = np.where(q >= 0, np.floor(q + np.float32(0.5)), np.ceil(q - np.float32(0.5)))
            t[la["name"]] = np.clip(q + o["zero_point"], -128, 127).astype(np.int64)
            quant[la["name"]] = (o["scale"], o["zero_point"])
            continue
        v, (s_in, z_in) = t[ins[0]], quant[ins[0]]
        want = la["input"]
        if want is not None and (np.float32(s_in), z_in) != (np.float32(want["scale"]),
                                                             want["zero_point"]):
            m0, sh = _q31(np.float64(np.float32(s_in)) / np.float64(np.float32(want["scale"])))
            v = np.clip(_mbqm(v - z_in, m0, sh) + want["zero_point"], -128, 127)
            s_in, z_in = want["scale"], want["zero_point"]
        if op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            k = np.asarray(la["integers"]["kernel"], np.int64).reshape(la["kernel"]["shape"])
            xs = v - z_in
            if op == "FULLY_CONNECTED":
                acc = xs @ k
            else:
                (sh, sw), (dh, dw) = a["strides"], a["dilation"]
                kh, kw = k.shape[:2]
                if a["padding"] == "same":
                    ph = _same_pad(xs.shape[1], kh, sh, dh)
                    pw = _same_pad(xs.shape[2], kw, sw, dw)
                    xs = np.pad(xs, ((0, 0), ph, pw, (0, 0)))
                oh = (xs.shape[1] - (kh - 1) * dh - 1) // sh + 1
                ow = (xs.shape[2] - (kw - 1) * dw - 1) // sw + 1
                cols = np.stack([xs[:, i * dh:i * dh + (oh - 1) * sh + 1:sh,
                                     j * dw:j * dw + (ow - 1) * sw + 1:sw]
                                 for i in range(kh) for j in range(kw)], axis=-1)
                kk = k.reshape(kh * kw, *k.shape[2:])
                if op == "CONV_2D":
                    acc = np.einsum("nhwcp,pco->nhwo", cols, kk)
                else:
                    acc = np.einsum("nhwcp,pcm->nhwcm", cols, kk).reshape(*cols.shape[:3], -1)
            if "bias" in la["integers"]:
                acc = acc + np.asarray(la["integers"]["bias"], np.int64)
            r, o = la["requant"], la["output"]
            y = _mbqm(acc, r["m0"], r["shift"], fc=op == "FULLY_CONNECTED") + o["zero_point"]
            lo, hi = a["clamp"]
            t[la["name"]] = np.clip(y, lo, hi)
            quant[la["name"]] = (o["scale"], o["zero_point"])
        elif op == "MAX_POOL_2D":
            (ph_, pw_), (sh, sw) = a["pool_size"], a["strides"]
            h, w = v.shape[1:3]
            oh, ow = (h - ph_) // sh + 1, (w - pw_) // sw + 1
            t[la["name"]] = np.max([v[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
                                    for i in range(ph_) for j in range(pw_)], axis=0)
            quant[la["name"]] = (s_in, z_in)
        elif op == "RESHAPE":
            t[la["name"]] = v.reshape(len(v), -1)
            quant[la["name"]] = (s_in, z_in)
        else:
            raise AssertionError(f"this test's interpreter has no {op}")
    return t


@pytest.mark.slow
def test_an_export_alone_rebuilds_the_integer_network(tmp_path):
    """The JSON export carries the operator graph in execution order, every operator's
    attributes (strides, padding, dilation, depth multiplier, pool sizes, fused
    activation and its clamp), the convention and the rounding, and the integers: a
    NumPy interpreter written from them alone reproduces run_reference bit for bit,
    tensor by tensor (reference kernels' rounding)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    inp = keras.Input((12, 12, 2))
    x = L.ReLU()(L.BatchNormalization(momentum=0.9)(L.Conv2D(4, 3, strides=2, padding="same",
                                                             use_bias=False)(inp)))
    x = L.DepthwiseConv2D(3, padding="same", dilation_rate=2, depth_multiplier=2,
                          activation="relu")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Conv2D(5, 1, activation="relu6")(x)
    qat = te.quantize(keras.Model(inp, L.Dense(3)(L.Flatten()(x))))
    data = rng.normal(size=(32, 12, 12, 2)).astype(np.float32)
    qat.compile("adam", "mse")
    qat.fit(data, rng.normal(size=(32, 3)), epochs=2, verbose=0)
    params = te.extract(qat)
    te.export(params, tmp_path / "model.json")
    doc = json.loads((tmp_path / "model.json").read_text())
    assert doc["convention"] == "real = scale * (q - zero_point)" and "reference" in doc[
        "rounding"]
    ops = [la["op"] for la in doc["layers"]]
    assert ops == ["(input)", "QUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D",
                   "CONV_2D", "RESHAPE", "FULLY_CONNECTED"]
    dw = doc["layers"][3]["attributes"]
    assert dw["dilation"] == [2, 2] and dw["depth_multiplier"] == 2 and dw["padding"] == "same"
    ref = te.run_reference(params, data[:8])
    mine = _interpret(doc, data[:8])
    for name, tensor in ref.tensors.items():
        np.testing.assert_array_equal(mine[name], tensor.values, err_msg=name)
    # the other formats carry the same graph
    te.export(params, tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz", allow_pickle=False) as z:
        graph = json.loads(z["__encodings__"].tobytes().decode("utf-8"))
    assert [la["op"] for la in graph["layers"]] == ops
    te.export(params, tmp_path / "model.h")
    header = (tmp_path / "model.h").read_text()
    assert "real = scale * (q - zero_point)" in header and "DEPTHWISE_CONV_2D(" in header
    assert "_act_min" in header and "_dilation[2] = {\n    2, 2\n}" in header


@pytest.mark.slow
def test_an_embedding_model_exports(tmp_path):
    """An Embedding deploys as GATHER (its table's rows at the table's scale, no
    requantization): extraction gives its output that quantization, so the layer after
    it is complete and matches the .tflite (found by review: the export refused both)."""
    from tfmot_ext.export import incomplete_layers

    inp = keras.Input((5,), dtype="int32")
    x = L.Flatten()(L.Embedding(20, 4, name="emb")(inp))
    qat = te.quantize(keras.Model(inp, L.Dense(2, name="fc")(x)))
    qat(np.random.default_rng(0).integers(0, 20, (16, 5)), training=True)
    params = te.extract(qat)
    emb, fc = params["quant_emb"], params["quant_fc"]
    assert emb.kernel_int is not None and incomplete_layers(params) == []
    # the Dense after it reads the table's quantization, as TFLite's GATHER outputs it
    assert fc.input is not None and fc.input.scale == float(np.float32(emb.kernel_scale))
    assert fc.bias_int is not None and fc.multiplier_q31 is not None
    x = np.random.default_rng(1).integers(0, 20, (16, 5)).astype(np.int32)
    report = te.verify(qat, te.to_tflite(qat, x), x, reference=False)
    assert report.weights_exact, report
    te.export(params, tmp_path / "m.h")
