"""Quantizers: values and gradients against NumPy closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from tfmot_ext import qmath
from tfmot_ext._compat import keras, tf
from tfmot_ext.errors import ConfigError
from tfmot_ext.qmath import normalize_axis
from tfmot_ext.quantizers import (
    FixedRangeQuantizer,
    LSQQuantizer,
    MinMaxQuantizer,
    PowerOfTwoQuantizer,
    activation_quantizer,
    lsq_grad_scale,
    weight_quantizer,
)

ALL_BITS = list(range(2, 17))


class _Holder(keras.layers.Layer):
    """A bare layer to own quantizer variables (what QuantizeWrapper does)."""


def _build(q, shape, name="kernel"):
    holder = _Holder()
    return q.build(shape, name, holder)


def _np_range_per(x, axes):
    if axes is None:
        return x.min(), x.max()
    rank = x.ndim
    perm = [i for i in range(rank) if i not in axes] + list(axes)
    flat = np.transpose(x, perm).reshape(-1, int(np.prod([x.shape[a] for a in axes])))
    return flat.min(0), flat.max(0)


def _np_fake_quant(x, lo, hi, bits, narrow, axes):
    if axes is None:
        return qmath.fake_quant(x, lo, hi, bits, narrow)
    rank = x.ndim
    perm = [i for i in range(rank) if i not in axes] + list(axes)
    moved = np.transpose(x, perm)
    flat = moved.reshape(*moved.shape[: rank - len(axes)], -1)
    out = qmath.fake_quant(flat, lo, hi, bits, narrow, axis=flat.ndim - 1)
    return np.transpose(out.reshape(moved.shape), np.argsort(perm))


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("symmetric,narrow", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize("axis", [None, -1, 0, (2, 3)])
def test_minmax_matches_closed_form(bits, symmetric, narrow, axis, rng):
    x = (rng.normal(size=(3, 3, 4, 2)) * rng.choice([1e-3, 1.0, 50.0])).astype(np.float32)
    q = MinMaxQuantizer(bits=bits, per_channel=axis is not None, axis=axis, symmetric=symmetric,
                        narrow_range=narrow)
    v = _build(q, x.shape)
    got = q(tf.constant(x), True, v).numpy()
    axes = normalize_axis(axis, 4)
    lo, hi = _np_range_per(x, axes)
    np.testing.assert_array_equal(v["min_var"].numpy(), lo)
    np.testing.assert_array_equal(v["max_var"].numpy(), hi)
    elo, ehi = q.effective_range(lo, hi)
    np.testing.assert_array_equal(got, _np_fake_quant(x, elo, ehi, bits, narrow, axes))
    # inference (current value's range for last_value weights): same output
    np.testing.assert_array_equal(q(tf.constant(x), False, v).numpy(), got)
    # one optimizer step later the inference range follows the weight, not the stored one
    x2 = x * np.float32(1.5)
    lo2, hi2 = q.effective_range(*_np_range_per(x2, axes))
    np.testing.assert_array_equal(q(tf.constant(x2), False, v).numpy(),
                                  _np_fake_quant(x2, lo2, hi2, bits, narrow, axes))
    if symmetric:
        r = qmath.nudge(elo, ehi, bits, narrow)
        assert np.all(r.zero_point == 0)


def test_depthwise_axis_gives_one_range_per_channel_times_multiplier(rng):
    # tfmot's per-axis quantizer reduces over the last (multiplier) axis only: with
    # multiplier 1 a 4-channel depthwise kernel gets a single range. Ours gets 4.
    k = rng.normal(size=(3, 3, 4, 1)).astype(np.float32) * np.array([1, 10, 100, 1000],
                                                                     np.float32)[:, None]
    q = weight_quantizer(8).with_axis((2, 3))
    v = _build(q, k.shape, "depthwise_kernel")
    q(tf.constant(k), True, v)
    assert v["max_var"].shape == (4,)
    np.testing.assert_allclose(v["max_var"].numpy(), k.reshape(9, 4).max(0))


def test_moving_average_and_all_values_tracking(rng):
    xs = [(rng.normal(size=(8, 5)) * s).astype(np.float32) for s in (1.0, 3.0, 0.5)]
    d = 0.9
    ema = MinMaxQuantizer(8, range_tracking="moving_average", ema_decay=d)
    allv = MinMaxQuantizer(8, range_tracking="all_values")
    ve, va = _build(ema, None, "output"), _build(allv, None, "output")
    exp_lo = exp_hi = None
    for x in xs:
        ema(tf.constant(x), True, ve)
        allv(tf.constant(x), True, va)
        if exp_lo is None:
            exp_lo, exp_hi = np.float32(x.min()), np.float32(x.max())
        else:
            exp_lo = np.float32(exp_lo * np.float32(d) + x.min() * np.float32(1 - d))
            exp_hi = np.float32(exp_hi * np.float32(d) + x.max() * np.float32(1 - d))
    np.testing.assert_allclose(ve["min_var"].numpy(), exp_lo, rtol=1e-6)
    np.testing.assert_allclose(ve["max_var"].numpy(), exp_hi, rtol=1e-6)
    np.testing.assert_array_equal(va["min_var"].numpy(), min(0.0, min(x.min() for x in xs)))
    np.testing.assert_array_equal(va["max_var"].numpy(), max(x.max() for x in xs))


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
@pytest.mark.parametrize("per_channel", [False, True])
def test_straight_through_gradient(bits, per_channel, rng):
    x = tf.constant((rng.normal(size=(6, 3)) * 2).astype(np.float32))
    # all_values: inference uses the stored range, which the test fixes to [-1, 1]
    q = FixedRangeQuantizer(-1.0, 1.0, bits) if not per_channel else MinMaxQuantizer(
        bits, per_channel=True, symmetric=True, range_tracking="all_values")
    v = _build(q, x.shape)
    if per_channel:  # fix the range to [-1, 1] per channel through the stored vars
        v["min_var"].assign(-np.ones(3, np.float32))
        v["max_var"].assign(np.ones(3, np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = q(x, False, v)
    g = tape.gradient(y, x).numpy()
    if per_channel:
        lo, hi = q.effective_range(-np.ones(3, np.float32), np.ones(3, np.float32))
        r = qmath.nudge(lo, hi, bits, False)
    else:
        r = qmath.nudge(-1.0, 1.0, bits, False)
    inside = (x.numpy() >= r.nudged_min) & (x.numpy() <= r.nudged_max)
    np.testing.assert_array_equal(g, inside.astype(np.float32))


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_power_of_two_scale(bits, symmetric, rng):
    x = (rng.normal(size=(50,)) * 3 + (0 if symmetric else 2)).astype(np.float32)
    q = PowerOfTwoQuantizer(bits, symmetric=symmetric)
    v = _build(q, x.shape)
    y = q(tf.constant(x), True, v).numpy()
    lo, hi = q.effective_range(x.min(), x.max())
    r = qmath.nudge(lo, hi, bits, False)
    s = float(r.scale)
    assert s == 2.0 ** round(np.log2(s))
    np.testing.assert_array_equal(y, qmath.fake_quant(x, lo, hi, bits))
    steps = y / s
    np.testing.assert_array_equal(steps, np.round(steps))


def test_fixed_range_clip_to_unit_interval(rng):
    x = (rng.normal(size=200) * 2).astype(np.float32)
    q = FixedRangeQuantizer(-1.0, 1.0, bits=8)
    assert _build(q, x.shape) == {}
    y = q(tf.constant(x), True, {}).numpy()
    np.testing.assert_array_equal(y, qmath.fake_quant(x, -1.0, 1.0, 8))
    r = qmath.nudge(-1.0, 1.0, 8)
    assert y.max() <= r.nudged_max and y.min() >= r.nudged_min


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("signed", [True, False])
def test_lsq_forward_and_gradients(bits, signed, rng):
    x_np = (rng.normal(size=(32, 4)) * 0.7 + (0 if signed else 0.5)).astype(np.float32)
    q = LSQQuantizer(bits, signed=signed)
    v = _build(q, x_np.shape)
    x = tf.constant(x_np)
    q(x, True, v)  # initialise the step from the data
    qn, qp = q.levels()
    s0 = np.float32(2 * np.abs(x_np).mean() / np.sqrt(qp))
    np.testing.assert_allclose(v["step"].numpy(), s0, rtol=1e-6)
    s = np.float32(v["step"].numpy())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = q(x, True, v)
        loss = tf.reduce_sum(y * tf.constant(np.linspace(-1, 1, x_np.size, dtype=np.float32)
                                             .reshape(x_np.shape)))
    w = np.linspace(-1, 1, x_np.size, dtype=np.float32).reshape(x_np.shape)
    xs = x_np / s
    # forward: clamp(round(x/s)) * s, rounding half up as FakeQuant does (no exact ties here)
    expect = np.clip(np.floor(xs + 0.5), qn, qp) * s
    np.testing.assert_allclose(y.numpy(), expect, rtol=0, atol=float(s) * 1e-5)
    inside = (xs >= qn) & (xs <= qp)
    np.testing.assert_array_equal(tape.gradient(loss, x).numpy(), w * inside)
    ds_el = np.where(inside, np.round(xs) - xs, np.where(xs < qn, qn, qp))
    g = lsq_grad_scale(x_np.size, bits, signed)
    np.testing.assert_allclose(tape.gradient(loss, v["step"]).numpy(), (w * ds_el).sum() * g,
                               rtol=1e-4)


def test_lsq_per_channel_step_shape(rng):
    k = rng.normal(size=(3, 3, 2, 5)).astype(np.float32)
    q = LSQQuantizer(4, per_channel=True)
    v = _build(q, k.shape)
    q(tf.constant(k), True, v)
    np.testing.assert_allclose(v["step"].numpy(),
                               2 * np.abs(k.reshape(-1, 5)).mean(0) / np.sqrt(7), rtol=1e-5)


@pytest.mark.parametrize("q", [
    MinMaxQuantizer(4, per_channel=True, axis=(2, 3), symmetric=True, narrow_range=True),
    PowerOfTwoQuantizer(6, range_tracking="all_values"),
    FixedRangeQuantizer(0.0, 6.0, bits=8),
    LSQQuantizer(3, per_channel=True, axis=-1),
    activation_quantizer(8, ema_decay=0.99),
])
def test_config_round_trip_and_equality(q):
    cfg = q.get_config()
    q2 = type(q).from_config(cfg)
    assert q2 == q and q2.get_config() == cfg
    ser = keras.utils.serialize_keras_object(q)
    assert ser["registered_name"] == f"tfmot_ext>{type(q).__name__}"
    assert keras.utils.deserialize_keras_object(ser) == q
    assert q != MinMaxQuantizer(2)


def test_config_is_exactly_the_constructor_arguments():
    import inspect
    for cls in (MinMaxQuantizer, PowerOfTwoQuantizer, FixedRangeQuantizer, LSQQuantizer):
        params = list(inspect.signature(cls.__init__).parameters)[1:]
        assert list(cls().get_config()) == params


@pytest.mark.parametrize("kwargs,match", [
    (dict(bits=1), "bits"),
    (dict(bits=17), "bits"),
    (dict(axis=1), "per_channel"),
    (dict(range_tracking="ema"), "range_tracking"),
    (dict(ema_decay=1.0), "ema_decay"),
])
def test_minmax_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MinMaxQuantizer(**kwargs)


def test_bad_axis_and_fixed_range():
    q = MinMaxQuantizer(8, per_channel=True, axis=5)
    with pytest.raises(ConfigError, match="out of range"):
        _build(q, (3, 3))
    with pytest.raises(ConfigError, match="min <= 0 <= max"):
        FixedRangeQuantizer(0.5, 1.0)
    with pytest.raises(ConfigError, match="finite"):
        FixedRangeQuantizer(-np.inf, 1.0)
    with pytest.raises(ConfigError, match="contiguous"):
        normalize_axis((0, 2), 3)


@pytest.mark.parametrize("q", [weight_quantizer(8), weight_quantizer(2, per_channel=False),
                               activation_quantizer(16), PowerOfTwoQuantizer(4),
                               LSQQuantizer(4)])
def test_degenerate_inputs_give_finite_outputs(q):
    for x in (np.zeros((4, 3), np.float32), np.full((4, 3), 2.5, np.float32),
              np.full((4, 3), 1e-30, np.float32)):
        v = _build(q, x.shape)
        for training in (True, False):
            y = q(tf.constant(x), training, v).numpy()
            assert np.isfinite(y).all()
        if not x.any():
            np.testing.assert_array_equal(y, 0.0)


@pytest.mark.parametrize("q", [MinMaxQuantizer(8, per_channel=True),
                               LSQQuantizer(4, per_channel=True)])
def test_per_channel_without_a_shape_is_an_error(q):
    # tfmot builds activation quantizers with no tensor shape
    with pytest.raises(ConfigError, match="per-channel quantization needs a known"):
        _build(q, None, "post_activation")


@pytest.mark.parametrize("bits", [2, 3, 5, 6, 7])
@pytest.mark.parametrize("narrow", [True, False])
def test_int8_embedding_twins_and_grid(bits, narrow, rng):
    """The TF range of the int8 embedding equals qmath's bit for bit, and the 8-bit
    grid on it holds the b-bit grid: 8-bit scale ``s / 2**(8-b)`` (within one float32
    ulp: FakeQuant recomputes it from the range), zero point ``z * 2**(8-b)`` exactly,
    every b-bit integer times ``2**(8-b)`` in range."""
    from tfmot_ext.fakequant import int8_embedding_range_tf

    for symmetric in (True, False):
        q = MinMaxQuantizer(bits, per_channel=True, symmetric=symmetric, narrow_range=narrow)
        x = rng.normal(size=(5, 7)).astype(np.float32) * rng.uniform(0.1, 3, 7).astype(
            np.float32) + (0 if symmetric else 0.7)
        lo, hi = q.effective_range(*_np_range_per(x, (1,)))
        r = qmath.nudge(lo, hi, bits, narrow)
        lo8, hi8 = qmath.int8_embedding_range(r.scale, r.zero_point, bits, narrow)
        tf_lo8, tf_hi8 = int8_embedding_range_tf(tf.constant(lo), tf.constant(hi), bits, narrow)
        np.testing.assert_array_equal(tf_lo8.numpy(), lo8)
        np.testing.assert_array_equal(tf_hi8.numpy(), hi8)
        r8 = qmath.nudge(lo8, hi8, 8, narrow)
        f = 1 << (8 - bits)
        # FakeQuant's 8-bit nudge redoes (hi8 - lo8) / 254 or 255 in float32: one ulp
        s8 = (r.scale / np.float32(f)).astype(np.float32)
        assert np.abs(r8.scale.view(np.int32).astype(np.int64) - s8.view(np.int32)).max() <= 1
        np.testing.assert_array_equal(r8.zero_point, r.zero_point * f)
        qmin, qmax = qmath.integer_range(bits, narrow)
        qmin8, qmax8 = qmath.integer_range(8, narrow)
        assert qmin8 <= qmin * f and qmax * f <= qmax8


@pytest.mark.parametrize("bits", [3, 6])
def test_int8_embedding_keeps_the_values_and_only_for_the_named(bits, rng):
    """Traced inside ``embed_in_int8([q])``, ``q``'s inference output is its b-bit
    fake-quant output (the FakeQuant on the embedded range rounds each value to
    itself: within one float32 ulp, the 8-bit op's own arithmetic); another
    quantizer, and ``q`` at 4 or 8 bits, trace no second FakeQuant."""
    from tfmot_ext.quantizers import embed_in_int8

    x = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
    q, other = weight_quantizer(bits), weight_quantizer(bits)
    wq, wo = _build(q, x.shape), _build(other, x.shape)

    def fake_quants(quantizer, qvars):
        g = tf.function(lambda t: quantizer(t, False, qvars)).get_concrete_function(
            tf.TensorSpec(x.shape, tf.float32)).graph
        return sum(op.type.startswith("FakeQuant") for op in g.get_operations())

    plain = q(tf.constant(x), False, wq).numpy()
    with embed_in_int8([q]):
        embedded = tf.function(lambda t: q(t, False, wq))(tf.constant(x)).numpy()
        assert fake_quants(q, wq) == 2 and fake_quants(other, wo) == 1
    assert fake_quants(q, wq) == 1
    ulps = np.abs(plain.view(np.int32).astype(np.int64) - embedded.view(np.int32))
    assert ulps.max() <= 1
    with embed_in_int8([weight_quantizer(4), weight_quantizer(8)]) as _:
        assert fake_quants(weight_quantizer(4), _build(weight_quantizer(4), x.shape)) == 1
