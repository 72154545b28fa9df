"""BatchNorm folding: float equivalence, BN training semantics, freeze, TFLite parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import convert_int8, keras_layout, tflite_weight_ops

import tfmot_ext as te
from tfmot_ext import qmath
from tfmot_ext._compat import keras, tf, tfmot
from tfmot_ext.folding import (
    FoldedConv2DBatchNorm,
    FoldedDenseBatchNorm,
    FoldedDepthwiseConv2DBatchNorm,
)
from tfmot_ext.scheme import FoldBatchNorm, FoldingScheme, LayoutTransform
from tfmot_ext.tflite import interpreter

L = keras.layers

KINDS = [
    (L.Conv2D, dict(filters=5, kernel_size=3, padding="same", strides=2),
     FoldedConv2DBatchNorm, (4, 9, 9, 3), "kernel"),
    (L.Conv2D, dict(filters=6, kernel_size=3, groups=3, padding="same"),  # grouped (RegNet)
     FoldedConv2DBatchNorm, (4, 9, 9, 3), "kernel"),
    (L.DepthwiseConv2D, dict(kernel_size=3, depth_multiplier=2), FoldedDepthwiseConv2DBatchNorm,
     (4, 9, 9, 3), "depthwise_kernel"),
    (L.Dense, dict(units=6), FoldedDenseBatchNorm, (16, 7), "kernel"),
]


def _pair(kind, kwargs, folded_cls, shape, attr, act, rng):
    """A float op + BN (+ act) and the equivalent folded layer with the same weights."""
    op, bn = kind(**kwargs), L.BatchNormalization(momentum=0.9)
    x = rng.normal(size=shape).astype(np.float32)
    bn(op(x))
    for v in bn.weights:
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
                 * (1.0 if "var" in v.name or "gamma" in v.name else rng.normal()))
    op.bias.assign(rng.normal(size=op.bias.shape).astype(np.float32))
    f = folded_cls(op.get_config(), epsilon=bn.epsilon, momentum=0.9, activation=act)
    f(x)
    f.kernel.assign(getattr(op, attr))
    f.bias.assign(op.bias)
    for n in ("gamma", "beta", "moving_mean", "moving_variance"):
        getattr(f, n).assign(getattr(bn, n))
    fn = {"linear": lambda t: t, "relu": tf.nn.relu, "relu6": tf.nn.relu6}[act]
    return op, bn, f, x, fn


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.mark.parametrize("kind,kwargs,folded_cls,shape,attr", KINDS)
@pytest.mark.parametrize("act", ["linear", "relu", "relu6"])
def test_unquantized_folded_layer_equals_op_plus_bn(kind, kwargs, folded_cls, shape, attr, act,
                                                    rng):
    op, bn, f, x, fn = _pair(kind, kwargs, folded_cls, shape, attr, act, rng)
    # inference: the folded form equals BN(op(x)) up to float32 reassociation
    assert _rel(f(x, training=False).numpy(), fn(bn(op(x), training=False)).numpy()) <= 1e-5
    # training: batch statistics, and the moving statistics update exactly like Keras's BN
    y_f = f(x, training=True).numpy()
    y_k = fn(bn(op(x), training=True)).numpy()
    assert _rel(y_f, y_k) <= 1e-5
    np.testing.assert_allclose(f.moving_mean.numpy(), bn.moving_mean.numpy(), rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_allclose(f.moving_variance.numpy(), bn.moving_variance.numpy(), rtol=1e-6)


def test_fold_numpy_matches_the_layer_bit_for_bit(rng):
    for kind, kwargs, folded_cls, shape, attr in KINDS:
        _, _, f, _, _ = _pair(kind, kwargs, folded_cls, shape, attr, "linear", rng)
        w, b = f.folded_kernel_and_bias()
        wn, bn_ = qmath.fold_batch_norm(f.kernel.numpy(), f.bias.numpy(), f.gamma.numpy(),
                                        f.beta.numpy(), f.moving_mean.numpy(),
                                        f.moving_variance.numpy(), f.epsilon,
                                        depthwise=attr == "depthwise_kernel")
        np.testing.assert_array_equal(w.numpy(), wn)
        np.testing.assert_array_equal(b.numpy(), bn_)


def test_freeze_delay_and_callback(rng):
    kind, kwargs, folded_cls, shape, attr = KINDS[0]
    op, bn, f, x, _fn = _pair(kind, kwargs, folded_cls, shape, attr, "relu", rng)
    f2 = FoldedConv2DBatchNorm(op.get_config(), epsilon=bn.epsilon, momentum=0.9,
                               activation="relu", freeze_bn_delay=2)
    f2(x)
    f2.set_weights(f.get_weights())
    for _ in range(2):  # steps 0 and 1 update the statistics
        before = f2.moving_mean.numpy().copy()
        f2(x, training=True)
        assert not np.array_equal(f2.moving_mean.numpy(), before)
    before = f2.moving_mean.numpy().copy()
    y_train = f2(x, training=True).numpy()  # step 2: frozen
    np.testing.assert_array_equal(f2.moving_mean.numpy(), before)
    np.testing.assert_array_equal(y_train, f2(x, training=False).numpy())
    # callback
    model = keras.Sequential([keras.Input(shape[1:]), f])
    cb = te.FreezeBatchNorm(0)
    cb.set_model(model)
    cb.on_epoch_begin(0)
    mm = f.moving_mean.numpy().copy()
    np.testing.assert_array_equal(f(x, training=True).numpy(), f(x, training=False).numpy())
    np.testing.assert_array_equal(f.moving_mean.numpy(), mm)


def _state(model):
    """Every weight but the freeze bookkeeping (``bn_step``, ``bn_frozen``), in order."""
    return [(w.name, w.numpy()) for w in model.weights
            if "bn_step" not in w.name and "bn_frozen" not in w.name]


def test_traced_freeze_state_trains_like_the_cond_form(rng):
    """Without ``freeze_bn_delay`` the train step is traced for the frozen state (no
    ``tf.cond``); FreezeBatchNorm retraces it. Same ops on the same values as the
    ``tf.cond`` form freezing at the same step (a delay of one epoch): after an unfrozen
    and a frozen epoch every kernel, gamma, moving statistic and quantizer range is equal
    bit for bit; beta and bias within 1e-6 of their largest value (their gradients are
    sums over the batch, which TF may order differently with and without the cond:
    float32 rounding, measured 2e-7)."""
    x = rng.normal(size=(64, 10, 10, 3)).astype(np.float32)
    y = rng.normal(size=(64, 3)).astype(np.float32)
    keras.utils.set_random_seed(0)
    float_model = _bn_net()
    static = te.quantize(float_model)
    cond = te.quantize(keras.models.clone_model(float_model),
                       scheme=FoldingScheme(freeze_bn_delay=4))  # 64 / 16 steps = 1 epoch
    cond.set_weights(static.get_weights())
    means = []
    for model, cb in ((static, [te.FreezeBatchNorm(1)]), (cond, [])):
        model.compile(keras.optimizers.Adam(1e-2), "mse")  # Adam: zero gradients move it
        model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0, callbacks=cb)
        means.append(model.get_layer("quant_conv").layer.moving_mean.numpy().copy())
        model.fit(x, y, initial_epoch=1, epochs=2, batch_size=16, shuffle=False, verbose=0,
                  callbacks=cb)
        # frozen in the second epoch: the moving statistics stayed
        np.testing.assert_array_equal(model.get_layer("quant_conv").layer.moving_mean, means[-1])
    assert not np.array_equal(means[0], np.zeros_like(means[0]))  # the first epoch updated them
    a, b = _state(static), _state(cond)
    assert len(a) == len(b) > 20
    for (name, va), (_, vb) in zip(a, b):
        if any(k in name for k in ("kernel", "moving_", "_min", "_max", "gamma")):
            np.testing.assert_array_equal(va, vb, err_msg=name)
        else:  # beta/bias gradients are sums over the batch that TF may order differently
            assert np.abs(va - vb).max() <= 1e-6 * np.abs(vb).max(), name


def test_stale_trace_of_a_custom_loop_fails_naming_the_layer(rng):
    model = te.quantize(_bn_net())
    x = rng.normal(size=(8, 10, 10, 3)).astype(np.float32)
    step = tf.function(lambda t: model(t, training=True))
    step(x)
    te.freeze_batch_norm(model)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"conv.*freeze_batch_norm.*retrace"):
        step(x)
    folded = model.get_layer("quant_conv").layer
    mm = folded.moving_mean.numpy().copy()
    fresh = tf.function(lambda t: model(t, training=True))
    np.testing.assert_array_equal(fresh(x), model(x, training=False))  # frozen form
    np.testing.assert_array_equal(folded.moving_mean, mm)


def _bn_net(bn_momentum=0.9):
    inp = keras.Input((10, 10, 3))
    x = L.Conv2D(8, 3, name="conv")(inp)
    x = L.BatchNormalization(momentum=bn_momentum, name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = L.BatchNormalization(momentum=bn_momentum, name="bn2")(x)
    x = L.ReLU(6.0, name="r2")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(6, name="fc")(x)
    x = L.BatchNormalization(momentum=bn_momentum, name="bn3")(x)
    return keras.Model(inp, L.Dense(3, name="head")(x))


class _FoldOnly(FoldingScheme):
    """Folding transforms only: no input quantization, for the float-equivalence test."""

    def get_layout_transformer(self):
        return LayoutTransform([FoldBatchNorm(True), FoldBatchNorm(False)])


def test_folded_model_without_quantization_equals_float_model(rng):
    model = _bn_net()
    x = rng.normal(size=(16, 10, 10, 3)).astype(np.float32)
    model.compile("adam", "mse")
    model.fit(x, rng.normal(size=(16, 3)), epochs=2, verbose=0)  # non-trivial statistics
    annotated = te.annotate(model, [te.Rule(config=te.no_op_config())])
    with te.quantize_scope():
        folded = tfmot.quantization.keras.quantize_apply(annotated, scheme=_FoldOnly())
    kinds = {type(getattr(la, "layer", la)).__name__ for la in folded.layers}
    assert {"FoldedConv2DBatchNorm", "FoldedDepthwiseConv2DBatchNorm",
            "FoldedDenseBatchNorm"} <= kinds
    assert _rel(folded.predict(x, verbose=0), model.predict(x, verbose=0)) <= 1e-5


def _trained_qat(policy, rng, scheme=None):
    qat = te.quantize(_bn_net(), policy, scheme)
    x = rng.normal(size=(64, 10, 10, 3)).astype(np.float32)
    qat.compile(keras.optimizers.Adam(1e-2), "mse")
    qat.fit(x, rng.normal(size=(64, 3)).astype(np.float32), epochs=2, batch_size=16, verbose=0)
    return qat, x


@pytest.mark.slow
@pytest.mark.parametrize("per_channel", [True, False])
def test_tflite_deploys_exactly_the_trained_folded_kernels(per_channel, rng):
    policy = [
        te.Rule(layer_type=L.Conv2D, config=te.conv_config(8, per_channel=per_channel)),
        te.Rule(layer_type=L.DepthwiseConv2D,
                config=te.depthwise_conv_config(8, per_channel=per_channel)),
    ]
    qat, x = _trained_qat(policy, rng)
    params = te.extract(qat)
    folded = [p for p in params.values() if p.folded]
    assert {p.name for p in folded} == {"quant_conv", "quant_dw", "quant_fc"}
    ops = tflite_weight_ops(convert_int8(qat, x[:16]))
    for op in ops:
        (name,) = [n for n in params if f"/{n}/" in op["filter_name"]]
        p = params[name]
        np.testing.assert_array_equal(keras_layout(op["op"], op["filter"], p.kernel_int.shape),
                                      p.kernel_int, err_msg=name)
        np.testing.assert_array_equal(op["bias"], p.bias_int, err_msg=name)
        if not per_channel:  # what was trained per tensor is deployed per tensor
            assert len(op["filter_scales"]) == 1, name
        else:
            assert len(op["filter_scales"]) == p.kernel_scale.size
    # the folded kernel's fake-quant values are what the layer computes
    for p in folded:
        inner = qat.get_layer(p.name).layer
        w_fold, _ = inner.folded_kernel_and_bias()
        fq = inner.weight_quantizer(w_fold, False, inner._qvars).numpy()
        np.testing.assert_array_equal(p.dequantized_kernel(), fq)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["h5", "savedmodel"])
def test_folded_round_trips(fmt, rng, tmp_path):
    qat, x = _trained_qat(None, rng)
    path = tmp_path / ("m.h5" if fmt == "h5" else "sm")
    qat.save(str(path))
    with te.quantize_scope():
        back = keras.models.load_model(str(path))
    np.testing.assert_array_equal(back.predict(x, verbose=0), qat.predict(x, verbose=0))
    for va, vb in zip(qat.weights, back.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.name)
    if fmt == "h5":
        live, disk = te.extract(qat), te.extract(path)
        for name in live:
            if live[name].kernel_int is not None:
                np.testing.assert_array_equal(live[name].kernel_int, disk[name].kernel_int)
                np.testing.assert_array_equal(live[name].bias_int, disk[name].bias_int)


def test_four_bit_folded_grid(rng):
    qat, _ = _trained_qat([te.Rule(layer_type=L.Conv2D, config=te.conv_config(4))], rng)
    p = te.extract(qat)["quant_conv"]
    assert p.folded and p.bits == 4
    assert p.kernel_int.min() >= -7 and p.kernel_int.max() <= 7
    r = qmath.nudge(-7 * p.kernel_scale, 7 * p.kernel_scale, 4, True)
    np.testing.assert_array_equal(r.scale, p.kernel_scale)


@pytest.fixture(scope="module")
def mnist():
    from tfmot_ext import demo

    return demo.load_mnist_5k()


@pytest.mark.slow
@pytest.mark.parametrize("per_channel,bits", [(True, 8), (False, 8), (True, 4)])
def test_mnist_qat_vs_tflite_within_one_lsb(per_channel, bits, mnist):
    """On the 1,000 MNIST 5k test images: at 8 bits every output element within 1
    output LSB of the QAT model and >= 99.9 % prediction agreement; at 4 bits the
    measured figures below (the trained 4-bit grid is what is deployed; the output
    differences come from rounding amplified by high-gain layers).

    Measured at this seed. Re-run at seeds 1 and 2, the 8-bit cases hold; at 4 bits
    1-LSB differences amplified by a high-gain 4-bit layer put 1-2 elements 2 LSB off
    (docs/folding.md), so the 4-bit end-to-end bound is 2 LSB, asserted with the count;
    the per-layer bound given equal inputs is test_layer_drift_within_one_lsb's."""
    from tfmot_ext import demo

    x_tr, y_tr, x_te, y_te = mnist
    keras.utils.set_random_seed(0)
    model = demo.build_cnn()
    demo._compile(model, 2e-3)
    model.fit(x_tr, y_tr, epochs=3, batch_size=64, verbose=0)
    policy = [te.Rule(layer_type=L.DepthwiseConv2D,
                      config=te.depthwise_conv_config(bits, per_channel=per_channel)),
              te.Rule(layer_type=L.Conv2D, config=te.conv_config(bits, per_channel=per_channel))]
    qat = te.quantize(model, policy)
    demo._compile(qat, 5e-4)
    qat.fit(x_tr, y_tr, epochs=1, batch_size=64, verbose=0)
    ref = qat.predict(x_te, verbose=0)
    content = convert_int8(qat, x_tr[:100])
    s_out, z_out = interpreter(content).get_output_details()[0]["quantization"]
    got = te.run_int8(content, x_te, kernels="default").astype(np.int32)  # XNNPACK
    expected = np.round(ref / s_out + z_out).astype(np.int32)
    diff = np.abs(got - expected)
    if bits == 8:
        assert diff.max() <= 1
    else:  # documented limit (docs/folding.md, Guarantees): 1-LSB rounding differences
        # amplified by high-gain 4-bit folded layers, at most 2 LSB. How many elements
        # reach 2 depends on the trained model, which depends on the CPU's float kernels
        # (oneDNN picks them by instruction set): at this seed 2 of the 10,000 output
        # elements on the CI machine, 24 on an AVX-512/AMX one; asserted: at most 0.3 %
        assert diff.max() <= 2 and (diff > 1).sum() <= 30, ((diff > 1).sum(), diff.max())
    agree = got.argmax(1) == ref.argmax(1)
    if bits == 8:
        assert agree.mean() >= 0.999
    else:
        # the same amplification flips near ties: measured 2 of 1,000 predictions on the
        # CI machine, 3 on an AVX-512/AMX one, each an image whose two largest QAT logits
        # are within 2 output LSB of each other (what is asserted, with at most 0.5 %)
        top2 = np.sort(expected, axis=1)[:, -2:]
        assert agree.mean() >= 0.995
        assert np.all(top2[~agree, 1] - top2[~agree, 0] <= 2)
        # so the deployed accuracy is the QAT model's up to those flips (measured: both
        # were right in QAT, 95.1 % vs 94.9 %)
        right_qat, right_tfl = (ref.argmax(1) == y_te).sum(), (got.argmax(1) == y_te).sum()
        assert abs(int(right_qat) - int(right_tfl)) <= int((~agree).sum())


_MIRRORED_SCRIPT = r"""
import json, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import tfmot_ext as te
from tfmot_ext._compat import keras
L = keras.layers
rng = np.random.default_rng(0)
x = rng.normal(size=(32, 8, 8, 3)).astype(np.float32)
y = rng.normal(size=(32, 2)).astype(np.float32)
# both halves of the batch (one per replica) hold the global extremes, so the input's
# all-values range is the same on each replica as on one device
x[[0, 16], 0, 0, 0] = 6.0
x[[1, 17], 0, 0, 0] = -6.0

def build(sync):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, name="c")(inp)
    h = L.BatchNormalization(momentum=0.5, synchronized=sync, name="bn")(h)
    h = L.ReLU(name="r")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    qat = te.quantize(keras.Model(inp, L.Dense(2, name="fc")(h)))
    qat.compile(keras.optimizers.SGD(0.0), "mse")   # lr 0: only statistics move
    return qat

out = {}
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # one per process
for mode in ("single", "mirrored", "mirrored_sync"):
    if mode == "single":
        qat = build(False)
        qat.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
        diverged = []
    else:
        with strategy.scope():
            qat = build(mode == "mirrored_sync")
        qat.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
        diverged = [v.name for la in qat.layers for v in la.weights
                    if not all(np.array_equal(strategy.experimental_local_results(v)[0].numpy(),
                                              r.numpy())
                               for r in strategy.experimental_local_results(v)[1:])]
    c = qat.get_layer("quant_c").layer
    out[mode] = {"diverged": diverged, "sync": c.synchronized,
                 "mean": c.moving_mean.numpy().tolist(),
                 "var": c.moving_variance.numpy().tolist()}
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_mirrored_strategy_replicas_stay_in_sync(tmp_path):
    """Two replicas (logical CPUs, a fresh process): no variable of the QAT model
    diverges between replicas; synchronized BN gives the single-device statistics of
    the global batch, plain BN averages the replicas' own (a different variance)."""
    import json
    import subprocess
    import sys

    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=600)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, proc.stderr[-3000:]
    r = json.loads(line[0][len("RESULT"):])
    assert r["mirrored"]["diverged"] == [] and r["mirrored_sync"]["diverged"] == []
    assert r["mirrored_sync"]["sync"] and not r["mirrored"]["sync"]
    single, sync, plain = (np.array(r[m]["var"]) for m in ("single", "mirrored_sync", "mirrored"))
    # global-batch statistics from all-reduced sums vs TF's fused kernel: float32
    # rounding of sums over 16 x 36 elements, far below the per-replica difference
    np.testing.assert_allclose(sync, single, rtol=1e-5)
    np.testing.assert_allclose(r["mirrored_sync"]["mean"], r["single"]["mean"], atol=1e-6)
    assert np.max(np.abs(plain - single)) > 1e-4


_MULTI_WORKER = Path(__file__).resolve().parents[1] / "docs" / "examples" / "multi_worker.py"


def _run_recipe(out: Path, *args: str) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(_MULTI_WORKER), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=400)
    logs = "".join(p.read_text()[-2000:] for p in sorted(out.glob("worker*.log")))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:] + logs


def _results(out: Path, names: tuple[str, ...]) -> list[dict]:
    import json

    return [json.loads((out / f"{n}.json").read_text()) for n in names]


@pytest.mark.slow
def test_multi_worker_recipe_on_loopback(tmp_path):
    """docs/examples/multi_worker.py: two worker processes, MultiWorkerMirroredStrategy
    over gRPC on 127.0.0.1, bounded by a timeout. Training (lr 0.05): both workers end
    with bit-identical variables, the loss falls, and the chief's H5 extracts. Statistics
    (lr 0): the synchronized folded BN's moving statistics equal single-device training
    on the same global batches (float32 sums over 16 + 16 examples vs one fused kernel:
    rtol 1e-5, as for MirroredStrategy)."""
    train, stats = tmp_path / "train", tmp_path / "stats"
    _run_recipe(train, "--lr", "0.05", "--epochs", "2", "--timeout", "300")
    w0, w1 = _results(train, ("worker0", "worker1"))
    assert w0["variables"] == w1["variables"] and len(w0["variables"]) > 20
    assert w0["loss"][1] < w0["loss"][0]
    params = te.extract(train / "qat.h5")
    assert params["quant_c"].folded and params["quant_c"].kernel_int is not None

    _run_recipe(stats, "--lr", "0", "--epochs", "2", "--timeout", "300")
    _run_recipe(stats, "--lr", "0", "--epochs", "2", "--single")
    w0, w1, single = _results(stats, ("worker0", "worker1", "single"))
    assert w0["variables"] == w1["variables"]
    for key in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(w0[key], single[key], rtol=1e-5, atol=1e-7)
