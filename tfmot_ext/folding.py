"""BatchNorm folded into the preceding Conv2D / DepthwiseConv2D / Dense during QAT.

The folded layers fake-quantize the *folded* kernel, the one the TFLite converter
deploys, instead of tfmot's unfolded kernel that the converter later folds and
re-quantizes. With ``sigma = sqrt(moving_variance + epsilon)``:

    W_fold = W * gamma / sigma                    (per output channel)
    b_fold = beta + (b - moving_mean) * gamma / sigma
    y      = act(op(x, FQ(W_fold)) + b_fold)      (inference, and training once frozen)

Training before the freeze uses batch statistics, with the correction of Jacob et
al. 2017 (section 3.2) and Krishnamoorthi 2018 (arXiv 1806.08342, section 3.2) that
keeps the quantized weights built on the *moving* sigma (so they do not jitter with
each batch):

    z      = op(x, FQ(W_fold)) * sigma / gamma + b      (the unfolded pre-BN output)
           = op(x, FQ(W_fold) * sigma / gamma) + b      (op is linear: computed so)
    mu_B, var_B = moments(z)                           (over all but the channel axis)
    y      = act((z - mu_B) * gamma / sqrt(var_B + eps) + beta)
           = act(op(x, FQ(W_fold)) * sigma / sigma_B
                 + beta - (mu_B - b) * gamma / sigma_B)

and updates ``moving_* <- momentum * moving_* + (1 - momentum) * batch_*`` as Keras's
BatchNormalization does (on rank-4 tensors, where Keras uses its fused kernel, the
variance with Bessel's correction ``n / (n - 1)``).
After ``freeze_bn_delay`` training steps (or when
:class:`FreezeBatchNorm` fires) the moving statistics stop updating and training
uses the inference form above.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from tfmot_ext._compat import keras, tf
from tfmot_ext.dilation import dilated_conv2d, dilated_depthwise_conv2d
from tfmot_ext.errors import ConfigError
from tfmot_ext.rules import FUSED_ACTIVATIONS

__all__ = [
    "FoldedBatchNormBase",
    "FoldedConv2DBatchNorm",
    "FoldedDenseBatchNorm",
    "FoldedDepthwiseConv2DBatchNorm",
    "FreezeBatchNorm",
    "freeze_batch_norm",
]

logger = logging.getLogger(__name__)
register = keras.utils.register_keras_serializable(package="tfmot_ext")


def _deserialize_quantizer(q: Any) -> Any:
    if q is None or not isinstance(q, dict):
        return q
    return keras.utils.deserialize_keras_object(q)


class FoldedBatchNormBase(keras.layers.Layer):
    """Shared code of the folded layers; subclasses define the linear op.

    Args:
        layer_config: the config of the original Conv2D/DepthwiseConv2D/Dense (its
            ``activation`` must be linear; ``use_bias`` is honoured).
        epsilon: BatchNormalization epsilon.
        momentum: BatchNormalization momentum for the moving statistics.
        activation: fused activation after the BN: "linear", "relu" or "relu6".
        weight_quantizer: quantizer of the folded kernel, or None (float).
        freeze_bn_delay: training steps after which the moving statistics freeze;
            None never freezes by itself (use :class:`FreezeBatchNorm`).
        synchronized: under a ``tf.distribute`` strategy with several replicas, take
            the batch statistics over the global batch (all-reduced sums), as Keras's
            ``BatchNormalization(synchronized=True)``; otherwise each replica normalizes
            with its own batch and the moving statistics average the replicas' updates.

    Distribution: the moving statistics and the quantizer ranges are mirrored with
    ``MEAN`` aggregation (every replica's update is averaged and written to all
    copies), the step counters with ``ONLY_FIRST_REPLICA``.
    """

    _KERNEL: ClassVar[str] = "kernel"
    _CONFIG_KEYS: ClassVar[tuple[str, ...]] = (
        "layer_config", "epsilon", "momentum", "activation", "weight_quantizer",
        "freeze_bn_delay", "synchronized")

    def __init__(self, layer_config: dict[str, Any], epsilon: float = 1e-3,
                 momentum: float = 0.99, activation: str = "linear",
                 weight_quantizer: Any = None, freeze_bn_delay: int | None = None,
                 synchronized: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if activation not in FUSED_ACTIVATIONS:
            raise ConfigError(f"{type(self).__name__} '{self.name}': activation must be one of "
                              f"{sorted(FUSED_ACTIVATIONS)} (what TFLite fuses), got "
                              f"{activation!r}")
        act = layer_config.get("activation", "linear")
        if act not in (None, "linear"):
            raise ConfigError(f"{type(self).__name__} '{self.name}': the folded layer's own "
                              f"activation must be linear (BN comes after it), got {act!r}")
        if freeze_bn_delay is not None and int(freeze_bn_delay) < 0:
            raise ConfigError(f"{type(self).__name__}: freeze_bn_delay must be >= 0")
        self.layer_config = dict(layer_config)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        self.activation = activation
        self.weight_quantizer = _deserialize_quantizer(weight_quantizer)
        self.freeze_bn_delay = None if freeze_bn_delay is None else int(freeze_bn_delay)
        self.synchronized = bool(synchronized)

    # -- config ----------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        base = super().get_config()
        q = self.weight_quantizer
        base.update({
            "layer_config": self.layer_config, "epsilon": self.epsilon,
            "momentum": self.momentum, "activation": self.activation,
            "weight_quantizer": None if q is None else keras.utils.serialize_keras_object(q),
            "freeze_bn_delay": self.freeze_bn_delay, "synchronized": self.synchronized,
        })
        return base

    # -- subclass hooks ----------------------------------------------------------
    def _kernel_shape(self, input_shape: Any) -> tuple[int, ...]:
        raise NotImplementedError

    def _op(self, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def _train_op(self, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        """The op in a training step: :meth:`_op` unless a subclass has an equal form
        TF trains more reliably (the inference graph, which the converter reads, keeps
        :meth:`_op`)."""
        return self._op(x, kernel)

    def _channels(self) -> int:
        raise NotImplementedError

    def _scale_kernel(self, kernel: tf.Tensor, sf: tf.Tensor) -> tf.Tensor:
        return kernel * sf

    # -- build / call -----------------------------------------------------------------
    def build(self, input_shape: Any) -> None:
        cfg = self.layer_config
        shape = self._kernel_shape(input_shape)
        init = keras.initializers.get
        self.kernel = self.add_weight(
            self._KERNEL, shape=shape, initializer=init(cfg.get(
                "depthwise_initializer" if self._KERNEL == "depthwise_kernel"
                else "kernel_initializer", "glorot_uniform")), trainable=True)
        n = self._channels()
        self.use_bias = bool(cfg.get("use_bias", True))
        self.bias = self.add_weight("bias", shape=(n,), initializer="zeros",
                                    trainable=True) if self.use_bias else None
        self.gamma = self.add_weight("gamma", shape=(n,), initializer="ones", trainable=True)
        self.beta = self.add_weight("beta", shape=(n,), initializer="zeros", trainable=True)
        mean, first = tf.VariableAggregation.MEAN, tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.moving_mean = self.add_weight("moving_mean", shape=(n,), initializer="zeros",
                                           trainable=False, aggregation=mean)
        self.moving_variance = self.add_weight("moving_variance", shape=(n,),
                                               initializer="ones", trainable=False,
                                               aggregation=mean)
        self.bn_step = self.add_weight("bn_step", shape=(), dtype=tf.int32,
                                       initializer="zeros", trainable=False, aggregation=first)
        self.bn_frozen = self.add_weight("bn_frozen", shape=(), dtype=tf.int32,
                                         initializer="zeros", trainable=False,
                                         aggregation=first)
        self._qvars = (self.weight_quantizer.build(shape, self._KERNEL, self)
                       if self.weight_quantizer is not None else {})
        super().build(input_shape)

    def _scale_factor_and_bias(self) -> tuple[tf.Tensor, tf.Tensor]:
        """``gamma / sqrt(moving_variance + epsilon)`` and the op's bias (0 without one).

        Written as ``DivNoNan(gamma, sqrt(.))``: square root and division are correctly
        rounded on every CPU, and TF's graph optimizers leave ``DivNoNan`` alone (they
        rewrite ``x / sqrt(y)`` into ``x * rsqrt(y)``, and TF's ``rsqrt`` is a hardware
        approximation refined by a Newton step, measured 35 % of values one ulp off the
        rounded ``1 / sqrt``, and CPU-dependent). So eager, tf.function, the TFLite
        conversion and :func:`tfmot_ext.qmath.fold_batch_norm` (NumPy, no TensorFlow)
        compute the same folded kernel bit for bit.
        """
        sf = tf.math.divide_no_nan(self.gamma,
                                   tf.sqrt(self.moving_variance + np.float32(self.epsilon)))
        return sf, self.bias if self.bias is not None else tf.zeros_like(sf)

    def folded_kernel_and_bias(self) -> tuple[tf.Tensor, tf.Tensor]:
        """``(W_fold, b_fold)`` from the moving statistics (float, unquantized)."""
        sf, b = self._scale_factor_and_bias()
        return self._scale_kernel(self.kernel, sf), self._folded_bias(sf, b)

    def _folded_bias(self, sf: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        """``b_fold = beta + (b - moving_mean) * sf``."""
        return self.beta + (b - self.moving_mean) * sf

    def _activate(self, y: tf.Tensor) -> tf.Tensor:
        if self.activation == "relu":
            return tf.nn.relu(y)
        if self.activation == "relu6":
            return tf.nn.relu6(y)
        return y

    def _quantized_kernel(self, w_fold: tf.Tensor, training: bool) -> tf.Tensor:
        if self.weight_quantizer is None:
            return w_fold
        return self.weight_quantizer(w_fold, training, self._qvars)

    def _inference(self, x: tf.Tensor) -> tf.Tensor:
        w_fold, b_fold = self.folded_kernel_and_bias()
        # bias_add, not "+": the converter fuses Conv -> BiasAdd into the op's bias
        return tf.nn.bias_add(self._op(x, self._quantized_kernel(w_fold, False)), b_fold)

    def _batch_statistics(self, z0: tf.Tensor, b: tf.Tensor) -> tuple[
            tf.Tensor, tf.Tensor, tf.Tensor]:
        """BN with batch statistics of the unfolded pre-BN output ``z = z0 + b``.

        ``z0 = op(x, FQ(W_fold)) / sf`` is the op's output without its bias. Returns
        ``(out, mean, var)``: the normalized output and the statistics the moving
        averages take (unbiased variance on rank 4, biased on rank 2, as Keras's fused
        and non-fused BN store them).
        """
        ctx = tf.distribute.get_replica_context()
        if self.synchronized and ctx is not None and ctx.num_replicas_in_sync > 1:
            # global-batch statistics: all-reduced sums of z and z^2 and the count
            z = z0 + b
            axes = list(range(z.shape.rank - 1))
            count = tf.cast(tf.reduce_prod(tf.shape(z)[:-1]), tf.float32)
            s1, s2 = tf.reduce_sum(z, axes), tf.reduce_sum(tf.square(z), axes)
            count, s1, s2 = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [count, s1, s2])
            mean = s1 / count
            var_b = tf.maximum(s2 / count - tf.square(mean), 0.0)
            out = ((z - mean) * (self.gamma * tf.math.rsqrt(var_b + np.float32(self.epsilon)))
                   + self.beta)
            var = var_b * count / tf.maximum(count - 1, 1) if z0.shape.rank == 4 else var_b
            return out, mean, var
        if z0.shape.rank == 4:
            # BN's output does not depend on the shift b, so TF's fused kernel runs on z0
            # (the kernel Keras's BN uses on rank-4 tensors, returning the unbiased batch
            # variance Keras stores)
            out, mean, var = tf.compat.v1.nn.fused_batch_norm(
                z0, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
            return out, mean + b, var
        # Keras's BN is not fused here and stores the biased batch variance
        z = z0 + b
        mean, var = tf.nn.moments(z, axes=list(range(z.shape.rank - 1)))
        out = (z - mean) * (self.gamma / tf.sqrt(var + np.float32(self.epsilon))) + self.beta
        return out, mean, var

    def _train(self, x: tf.Tensor) -> tf.Tensor:
        """One training step.

        The folded kernel ``W * sf`` (moving statistics) is fake-quantized; until the
        freeze the output is BN with batch statistics of ``op(x, FQ(W_fold)) / sf`` (the
        batch correction) and the moving statistics update; once frozen it is the
        inference form ``op(x, FQ(W_fold)) + b_fold`` and they stay.

        The op is linear and ``sf`` is per output channel, so
        ``op(x, FQ(W_fold)) / sf = op(x, FQ(W_fold) / sf)``: the op runs once, on the
        quantized kernel divided by ``sf`` before the freeze and by exactly 1 after it
        (bit-identical to inference then). Dividing the kernel instead of the
        activation-sized output saves an elementwise pass forward and backward, and
        the op runs outside the ``tf.cond`` (MobileNetV2 0.35 train step, measured side by
        side: 1.43x a float step dividing the output, 1.20x dividing the kernel; see
        docs/folding.md).

        Without ``freeze_bn_delay`` and without a distribution strategy the step is
        traced for the frozen state it finds (:meth:`_train_static`, no control flow).
        With a delay a ``tf.cond`` on the step count runs only the needed tail. Under a
        strategy, a ``tf.cond`` around the (cross-replica synchronized) updates cannot run:
        both tails are computed, one is selected, and the moving statistics are written
        with their old values once frozen.
        """
        static = self._frozen_at_trace()
        if static is not None:
            return self._train_static(x, static)
        frozen = self._frozen(self.bn_step.assign_add(1))
        sf, b = self._scale_factor_and_bias()
        q = self._quantized_kernel(self._scale_kernel(self.kernel, sf), True)
        unscale = tf.where(frozen, tf.ones_like(sf), tf.math.reciprocal(sf))
        z0 = self._train_op(x, self._scale_kernel(q, unscale))

        def folded() -> tf.Tensor:
            return tf.nn.bias_add(z0, self._folded_bias(sf, b))

        if not tf.distribute.has_strategy():
            def batch_corrected() -> tf.Tensor:
                out, mean, var = self._batch_statistics(z0, b)
                with tf.control_dependencies(self._moving_updates(mean, var)):
                    return tf.identity(out)

            return tf.cond(frozen, folded, batch_corrected)
        out, mean, var = self._batch_statistics(z0, b)
        with tf.control_dependencies(self._moving_updates(mean, var, keep=frozen)):
            return tf.where(frozen, folded(), out)

    def _frozen_at_trace(self) -> bool | None:
        """The frozen state, as a Python bool, where the step may be traced for it.

        That is without a distribution strategy and without ``freeze_bn_delay`` (the
        freeze then comes only from :func:`freeze_batch_norm`, which asks Keras to
        retrace its train function), read eagerly when the step is traced. None where
        the state must stay a tensor (a step-count freeze, or under a strategy).
        """
        if self.freeze_bn_delay is not None or tf.distribute.has_strategy():
            return None
        with tf.init_scope():
            if not tf.executing_eagerly():
                return None
            return bool(self.bn_frozen.numpy() > 0)

    def _train_static(self, x: tf.Tensor, frozen: bool) -> tf.Tensor:
        """:meth:`_train` with the frozen state fixed when traced: no ``tf.cond``.

        The same values and gradients as the ``tf.cond`` form (its branch for that
        state), without the control flow's per-layer cost. A step traced unfrozen
        checks, each run, that the layer has not been frozen since (a stale trace in a
        custom training loop fails loudly instead of training unfrozen; XLA drops that
        ``Assert``). ``bn_step``
        counts steps for ``freeze_bn_delay`` only and stays here.
        """
        sf, b = self._scale_factor_and_bias()
        q = self._quantized_kernel(self._scale_kernel(self.kernel, sf), True)
        if frozen:
            return tf.nn.bias_add(self._train_op(x, q), self._folded_bias(sf, b))
        stale = tf.debugging.Assert(
            tf.equal(self.bn_frozen, 0),
            [f"{self.name} was frozen (freeze_batch_norm) after this training step was "
             "traced; retrace it: model.make_train_function(force=True), or re-create "
             "the tf.function of a custom training loop"])
        z0 = self._train_op(x, self._scale_kernel(q, tf.math.reciprocal(sf)))
        out, mean, var = self._batch_statistics(z0, b)
        if self.bias is not None:
            # BN cancels the bias: a zero gradient, not None (as the tf.cond form gives;
            # Keras warns on None and Adam's moments keep moving on zero)
            out = out + tf.reshape(b * 0.0, [1] * (out.shape.rank - 1) + [-1])
        with tf.control_dependencies([stale, *self._moving_updates(mean, var)]):
            return tf.identity(out)

    def _moving_updates(self, mean: tf.Tensor, var: tf.Tensor, keep: Any = None) -> list[Any]:
        """Moving-average updates ``v <- v * momentum + batch * (1 - momentum)``; where
        ``keep`` (the frozen flag) is true each variable is written its own value."""
        m = np.float32(self.momentum)
        new_mean = self.moving_mean * m + mean * (1 - m)
        new_var = self.moving_variance * m + var * (1 - m)
        if keep is not None:
            new_mean = tf.where(keep, self.moving_mean, new_mean)
            new_var = tf.where(keep, self.moving_variance, new_var)
        return [self.moving_mean.assign(new_mean), self.moving_variance.assign(new_var)]

    def _frozen(self, step: tf.Tensor) -> tf.Tensor:
        """Whether this training step (``step``: 1 for the first) runs frozen: after a
        :func:`freeze_batch_norm`, or past the first ``freeze_bn_delay`` steps."""
        frozen = self.bn_frozen > 0
        if self.freeze_bn_delay is not None:
            frozen = tf.logical_or(frozen, step > self.freeze_bn_delay)
        return frozen

    def call(self, inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        if training is None:
            training = keras.backend.learning_phase()
        if isinstance(training, (bool, int)):
            return self._activate(self._train(inputs) if training
                                  else self._inference(inputs))
        return self._activate(tf.cond(tf.cast(training, tf.bool), lambda: self._train(inputs),
                                      lambda: self._inference(inputs)))

    def compute_output_shape(self, input_shape: Any) -> Any:
        raise NotImplementedError


def _conv_arg(cfg: dict[str, Any], key: str, rank: int, default: Any) -> tuple[int, ...]:
    v = cfg.get(key, default)
    return tuple(v) if isinstance(v, (list, tuple)) else (int(v),) * rank


@register
class FoldedConv2DBatchNorm(FoldedBatchNormBase):
    """Conv2D (channels_last; grouped too) + BatchNormalization (+ ReLU/ReLU6), folded.

    A grouped kernel ``(H, W, C_in / groups, C_out)`` is one native grouped ``Conv2D``
    (TFLite's ``CONV_2D`` with groups), folded and quantized per output channel.
    """

    def _kernel_shape(self, input_shape: Any) -> tuple[int, ...]:
        cfg = self.layer_config
        groups = int(cfg.get("groups", 1))
        if cfg.get("data_format", "channels_last") not in (None, "channels_last"):
            raise ConfigError(f"{self.name}: only channels_last Conv2D is foldable")
        if int(input_shape[-1]) % groups or int(cfg["filters"]) % groups:
            raise ConfigError(f"{self.name}: {input_shape[-1]} input channels and "
                              f"{cfg['filters']} filters must be multiples of groups={groups}")
        kh, kw = _conv_arg(cfg, "kernel_size", 2, 1)
        return (kh, kw, int(input_shape[-1]) // groups, int(cfg["filters"]))

    def _channels(self) -> int:
        return int(self.layer_config["filters"])

    def _op(self, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        cfg = self.layer_config
        strides = _conv_arg(cfg, "strides", 2, 1)
        padding = str(cfg.get("padding", "valid")).upper()
        dilations = _conv_arg(cfg, "dilation_rate", 2, 1)
        if int(cfg.get("groups", 1)) > 1:
            return _grouped_conv2d(x, kernel, tuple(strides), padding, tuple(dilations))
        if tuple(dilations) == (1, 1):
            return tf.nn.conv2d(x, kernel, strides=strides, padding=padding)
        return dilated_conv2d(x, kernel, tuple(strides), padding, tuple(dilations))

    def compute_output_shape(self, input_shape: Any) -> Any:
        conv = keras.layers.Conv2D.from_config({**self.layer_config, "name": "shape_probe"})
        return conv.compute_output_shape(input_shape)


@tf.function(jit_compile=True)
def _grouped_conv2d(x: tf.Tensor, kernel: tf.Tensor, strides: tuple[int, ...], padding: str,
                    dilations: tuple[int, ...]) -> tf.Tensor:
    """A grouped Conv2D, XLA-compiled as Keras's Conv2D does it: TF's CPU kernels have no
    gradient for grouped convolutions; the converter inlines it into one ``CONV_2D``."""
    return tf.nn.conv2d(x, kernel, strides=strides, padding=padding, dilations=dilations)


@register
class FoldedDepthwiseConv2DBatchNorm(FoldedBatchNormBase):
    """DepthwiseConv2D + BatchNormalization (+ ReLU/ReLU6), folded per ``C x M`` channel."""

    _KERNEL = "depthwise_kernel"

    def _kernel_shape(self, input_shape: Any) -> tuple[int, ...]:
        cfg = self.layer_config
        kh, kw = _conv_arg(cfg, "kernel_size", 2, 1)
        self._in_channels = int(input_shape[-1])
        return (kh, kw, self._in_channels, int(cfg.get("depth_multiplier", 1)))

    def _channels(self) -> int:
        return int(self.kernel.shape[-2] * self.kernel.shape[-1])

    def _scale_kernel(self, kernel: tf.Tensor, sf: tf.Tensor) -> tf.Tensor:
        return kernel * tf.reshape(sf, kernel.shape[-2:])

    def _op(self, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        cfg = self.layer_config
        sh, sw = _conv_arg(cfg, "strides", 2, 1)
        padding = str(cfg.get("padding", "valid")).upper()
        dh, dw = _conv_arg(cfg, "dilation_rate", 2, 1)
        if (dh, dw) != (1, 1):  # one native op: TFLite's dilated DEPTHWISE_CONV_2D
            return dilated_depthwise_conv2d(x, kernel, (sh, sw), padding, (dh, dw))
        return tf.nn.depthwise_conv2d(x, kernel, strides=(1, sh, sw, 1), padding=padding)

    def _train_op(self, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        """A 1x1, stride-1, multiplier-1 depthwise (the affine of a standalone BN) is the
        per-channel product ``y[..., c] = x[..., c] * k[0, 0, c, 0]``, bit-identical (one
        product per output, no sum), and trained as that product: TF's oneDNN CPU kernels
        abort some such 1-channel depthwise convolutions in a training step ("could not
        create a primitive descriptor for the reorder primitive", parity fuzzer model
        122 of seed 0)."""
        cfg = self.layer_config
        pointwise = (_conv_arg(cfg, "kernel_size", 2, 1) == (1, 1)
                     and _conv_arg(cfg, "strides", 2, 1) == (1, 1)
                     and int(cfg.get("depth_multiplier", 1)) == 1)
        if pointwise:
            return x * tf.reshape(kernel, [-1])
        return self._op(x, kernel)

    def compute_output_shape(self, input_shape: Any) -> Any:
        conv = keras.layers.DepthwiseConv2D.from_config(
            {**self.layer_config, "name": "shape_probe"})
        return conv.compute_output_shape(input_shape)


@register
class FoldedDenseBatchNorm(FoldedBatchNormBase):
    """Dense (on rank-2 inputs) + BatchNormalization (+ ReLU/ReLU6), folded."""

    def _kernel_shape(self, input_shape: Any) -> tuple[int, ...]:
        return (int(input_shape[-1]), int(self.layer_config["units"]))

    def _channels(self) -> int:
        return int(self.layer_config["units"])

    def _op(self, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        return tf.matmul(x, kernel)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (*tuple(input_shape[:-1]), int(self.layer_config["units"]))


class FreezeBatchNorm(keras.callbacks.Callback):
    """Freeze the BN statistics of every folded layer at the start of epoch ``epoch``.

    From then on training uses the moving statistics, i.e. exactly the folded
    inference form that gets deployed.
    """

    def __init__(self, epoch: int = 0) -> None:
        super().__init__()
        self.epoch = int(epoch)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch == self.epoch:
            n = freeze_batch_norm(self.model)
            logger.info("froze BatchNorm statistics of %d folded layers", n)


def freeze_batch_norm(model: Any) -> int:
    """Freeze every folded layer of ``model`` (inside QuantizeWrappers too); return the count.

    A Keras train function already traced is rebuilt (its folded layers traced their
    unfrozen form). A custom training loop must re-create its ``tf.function``: the old
    trace then stops with an error naming the layer (not under XLA, which drops the
    check: a ``jit_compile`` function traced before the freeze trains on unfrozen).
    """
    n = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, FoldedBatchNormBase):
            inner.bn_frozen.assign(1)
            n += 1
    if n and getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)
    return n
