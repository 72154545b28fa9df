"""The tfmot-ext command: every subcommand end to end, errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tfmot_ext as te
from tfmot_ext import cli
from tfmot_ext._compat import keras

L = keras.layers


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trained folded QAT CNN saved as H5, calibration data as .npy."""
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    inp = keras.Input((10, 10, 2))
    x = L.Conv2D(6, 3, name="conv")(inp)
    x = L.BatchNormalization(momentum=0.9, name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    qat = te.quantize(keras.Model(inp, L.Dense(3, name="fc")(x)))
    data = rng.normal(size=(64, 10, 10, 2)).astype(np.float32)
    qat.compile("adam", "mse")
    qat.fit(data, rng.normal(size=(64, 3)), epochs=2, verbose=0)
    d = tmp_path_factory.mktemp("cli")
    qat.save(str(d / "qat.h5"))
    np.save(d / "data.npy", data)
    return d


def test_help_for_every_command(capsys):
    for argv in (["--help"], *([c, "--help"] for c in
                                ("inspect", "extract", "convert", "verify", "report"))):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 0
    assert "report.html" in capsys.readouterr().out


def test_inspect_and_extract(saved, capsys):
    assert cli.main(["inspect", str(saved / "qat.h5")]) == 0
    out = capsys.readouterr().out
    assert "quant_conv" in out and "FoldedConv2DBatchNorm" in out and "per-channel" in out
    assert cli.main(["extract", str(saved / "qat.h5"), "-o", str(saved / "p.json")]) == 0
    doc = json.loads((saved / "p.json").read_text())
    assert doc["format"] == "tfmot_ext.encodings"
    assert "quant_conv" in {la["name"] for la in doc["layers"]}
    assert cli.main(["extract", str(saved / "qat.h5"), "-o", str(saved / "p.h"),
                     "--pack-low-bits"]) == 0
    assert "quant_fc_kernel" in (saved / "p.h").read_text()


@pytest.mark.slow
def test_convert_verify_report(saved, capsys):
    h5, data = str(saved / "qat.h5"), str(saved / "data.npy")
    tfl = str(saved / "m.tflite")
    assert cli.main(["convert", h5, "--calib", data, "-o", tfl]) == 0
    assert (saved / "m.tflite").read_bytes()[4:8] == b"TFL3"
    # this small untrained net's last Dense amplifies the <= 1 LSB GAP rounding
    # difference (see docs/integer_inference.md), hence the lower output threshold
    assert cli.main(["verify", h5, tfl, "--data", data, "--require-reference",
                     "--min-within-1lsb", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "PARITY OK" in out and "bit-exact" in out
    # an impossible threshold fails with exit code 1
    assert cli.main(["verify", h5, tfl, "--data", data, "--min-within-1lsb", "1.5"]) == 1
    assert "PARITY FAILED" in capsys.readouterr().out
    # TFLite Micro: batch-1 shapes, its kernels, the arena it needs
    fixed = str(saved / "fixed.tflite")
    assert cli.main(["convert", h5, "--calib", data, "-o", fixed, "--fixed-batch"]) == 0
    assert cli.main(["verify", h5, fixed, "--data", data, "--kernels", "micro",
                     "--require-reference", "--min-within-1lsb", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "micro kernels" in out and "TFLite Micro tensor arena:" in out, out
    html = saved / "r.html"
    assert cli.main(["report", h5, "--data", data, "-o", str(html)]) == 0
    page = html.read_text()
    assert "quant_conv" in page and "data:image/png;base64," in page
    assert "lowest weight SQNR" in capsys.readouterr().out


def test_errors_go_to_stderr_with_exit_2(saved, tmp_path, capsys):
    assert cli.main(["inspect", str(tmp_path / "missing.h5")]) == 2
    err = capsys.readouterr().err
    assert "missing.h5" in err and "no such file" in err
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    assert cli.main(["convert", str(saved / "qat.h5"), "--calib", str(tmp_path / "bad.npy"),
                     "-o", str(tmp_path / "x.tflite")]) == 2
    assert "bad.npy" in capsys.readouterr().err
    assert not (tmp_path / "x.tflite").exists()
    assert cli.main(["extract", str(saved / "qat.h5"), "-o", str(tmp_path / "x.txt")]) == 2
    assert ".npz, .json or .h" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["convert", str(saved / "qat.h5")])  # --calib and -o missing
    assert e.value.code == 2


def test_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "tfmot_ext.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "inspect" in out and "Exit codes" in out


_MY_LAYERS = '''
import tf_keras as keras


@keras.saving.register_keras_serializable(package="my_layers")
class Halve(keras.layers.Layer):
    def call(self, x):
        return x * 0.5
'''


@pytest.mark.slow
def test_custom_objects_let_convert_verify_and_report_load_a_custom_layer(
        tmp_path, monkeypatch, capsys):
    """As the user met it: ``convert``/``verify``/``report`` ended in "Unknown layer" for
    a model with a custom layer; ``--custom-objects MODULE:ATTR`` imports the user's
    module (asked for by name) and passes the class to the loader."""
    (tmp_path / "my_layers.py").write_text(_MY_LAYERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 2))
    x = my_layers.Halve(name="halve")(L.Conv2D(3, 3, activation="relu", name="conv")(inp))
    qat = te.quantize(keras.Model(inp, L.Dense(2, name="fc")(L.Flatten()(x))),
                      unsupported="output_only")
    data = np.random.default_rng(0).normal(size=(16, 6, 6, 2)).astype(np.float32)
    qat(data, training=True)
    qat.save(str(tmp_path / "qat.h5"))
    np.save(tmp_path / "x.npy", data)
    h5, x, out = str(tmp_path / "qat.h5"), str(tmp_path / "x.npy"), str(tmp_path / "m.tflite")
    custom = ["--custom-objects", "my_layers:Halve"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}

    def fresh(*extra: str) -> subprocess.CompletedProcess[str]:
        """``tfmot-ext convert`` in a process that never imported my_layers."""
        argv = ["convert", h5, "--calib", x, "-o", out, *extra]
        code = f"import sys; from tfmot_ext.cli import main; sys.exit(main({argv!r}))"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=300, env=env)

    run = fresh()
    assert run.returncode == 2 and "Halve" in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "m.tflite").exists()
    run = fresh(*custom)
    assert run.returncode == 0, run.stderr[-2000:]
    assert cli.main(["verify", h5, out, "--data", x, *custom]) == 0
    assert "PARITY OK" in capsys.readouterr().out
    with pytest.raises(te.TfmotExtError, match="MODULE:ATTR"):
        cli.custom_objects_from(["my_layers"])
    assert cli.main(["convert", h5, "--calib", x, "-o", out, "--custom-objects",
                     "no_such_module:X"]) == 2
