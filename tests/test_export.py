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
