"""The deployment core runs without TensorFlow, tf_keras and tfmot, with the same results.

A QAT model with a folded Conv+BN+ReLU, a depthwise conv, pooling and a Dense is
trained and saved here (TensorFlow loaded); a subprocess in which importing
``tensorflow``, ``tf_keras``, ``tensorflow_model_optimization`` or ``keras`` raises then
extracts the H5 file, exports every format, runs the integer reference and the CLI's
``inspect``/``extract``. Its integers must equal the ones computed in this process, and
the CLI must print nothing on stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfmot_ext as te
from tfmot_ext._compat import keras

L = keras.layers

#: run first in the subprocess: any import of the training stack fails loudly
_BLOCK = textwrap.dedent("""
    import importlib.abc, sys
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("tensorflow", "tf_keras",
                                      "tensorflow_model_optimization", "keras"):
                raise ImportError(f"blocked import of {name}")
            return None
    sys.meta_path.insert(0, _Block())
""")


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _BLOCK + textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    rng = np.random.default_rng(0)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, use_bias=False)(inp)
    x = L.BatchNormalization(momentum=0.9)(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    qat = te.quantize(keras.Model(inp, L.Dense(3)(x)))
    data = rng.normal(size=(32, 8, 8, 3)).astype(np.float32)
    qat.compile("adam", "mse")
    qat.fit(data, rng.normal(size=(32, 3)), epochs=2, verbose=0)
    path = tmp_path_factory.mktemp("core") / "qat.h5"
    qat.save(path)
    np.save(path.parent / "x.npy", data[:4])
    return path, te.extract(path), data[:4]


def test_import_is_light_and_the_training_half_loads_on_use():
    out = _run("""
        import sys
        import tfmot_ext as te
        from tfmot_ext import cli, export, extract, matching, reference
        print(sorted(m.split(".")[0] for m in sys.modules
                     if m.split(".")[0] in ("tensorflow", "tf_keras", "h5py")))
        try:
            te.quantize
        except ImportError as e:
            print("training half:", e)
    """)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "[]"        # nothing heavy at import, not even h5py
    assert lines[1].startswith("training half: blocked import of tensorflow")


def test_extract_export_and_reference_without_tensorflow(saved, tmp_path):
    path, params, x = saved
    out = _run("""
        import json, sys
        import numpy as np
        import tfmot_ext as te
        from tfmot_ext.params import as_deployed
        params = te.extract(sys.argv[1])
        for ext in ("json", "npz", "h"):
            te.export(params, sys.argv[2] + "/m." + ext)
        run = te.run_reference(params, np.load(sys.argv[3]))
        opt = te.run_reference(params, np.load(sys.argv[3]), rounding="optimized")
        np.savez(sys.argv[2] + "/got.npz", out=run.output.values, opt=opt.output.values,
                 **{f"k_{n}": as_deployed(p).kernel_int for n, p in params.items()
                    if p.kernel_int is not None},
                 **{f"b_{n}": p.bias_int for n, p in params.items() if p.bias_int is not None},
                 **{f"m_{n}": p.multiplier_q31 for n, p in params.items()
                    if p.multiplier_q31 is not None})
        print(json.dumps(sorted(n for n, p in params.items() if p.folded)))
    """, str(path), str(tmp_path), str(path.parent / "x.npy"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]), "the test model has a folded layer"
    got = np.load(tmp_path / "got.npz")
    np.testing.assert_array_equal(got["out"], te.run_reference(params, x).output.values)
    np.testing.assert_array_equal(got["opt"], te.run_reference(params, x, "optimized")
                                  .output.values)
    for name, p in params.items():
        if p.kernel_int is not None:
            np.testing.assert_array_equal(got[f"k_{name}"], te.as_deployed(p).kernel_int)
        if p.bias_int is not None:
            np.testing.assert_array_equal(got[f"b_{name}"], p.bias_int)
        if p.multiplier_q31 is not None:
            np.testing.assert_array_equal(got[f"m_{name}"], p.multiplier_q31)
    for ext in ("json", "npz", "h"):
        assert (tmp_path / f"m.{ext}").stat().st_size > 0


def test_cli_inspect_and_extract_run_without_tensorflow_and_print_nothing_on_stderr(
        saved, tmp_path):
    path = saved[0]
    for argv in (["--help"], ["inspect", str(path)],
                 ["extract", str(path), "-o", str(tmp_path / "p.json")]):
        out = _run("""
            import sys
            from tfmot_ext.cli import main
            try:
                code = main(sys.argv[1:])
            except SystemExit as e:  # --help
                code = e.code
            sys.exit(code)
        """, *argv)
        assert out.returncode == 0, (argv, out.stderr)
        assert out.stderr == "", (argv, out.stderr)
    assert json.loads((tmp_path / "p.json").read_text())["layers"]
