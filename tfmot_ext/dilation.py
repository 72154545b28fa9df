"""Dilated convolutions deployed as TFLite's dilated CONV_2D / DEPTHWISE_CONV_2D.

Off TPUs, ``tf.nn.convolution`` and ``tf.nn.depthwise_conv2d`` compute a dilated
convolution as SPACE_TO_BATCH_ND -> convolution -> BATCH_TO_SPACE_ND, and in a QAT graph
the converter leaves that unfused, with the bias (and a fused ReLU) in a separate ADD:
measured on a ``Conv2D(dilation_rate=2, padding="same")``, the int32 bias matched no
TFLite tensor and the ADD rounded on a scale of the converter's. The same layer written
as one native ``Conv2D``/``DepthwiseConv2dNative`` op with a ``dilations`` attribute
converts to one CONV_2D (DEPTHWISE_CONV_2D) with the dilation factors, the trained
integers and the fused bias.

:func:`dilated_conv2d` and :func:`dilated_depthwise_conv2d` are that op, with the
gradient taken through the space-to-batch form (some CPU builds of TF have no gradient
kernel for the native dilated op). The folded layers use them always;
:func:`native_dilations` makes the Keras ``Conv2D``/``DepthwiseConv2D`` layers of a model
use them while :func:`tfmot_ext.to_tflite` converts it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

from tfmot_ext._compat import keras, set_grouped_convolution_op, tf, unset_grouped_convolution_op

__all__ = ["dilated_conv2d", "dilated_depthwise_conv2d", "native_dilations"]


def _with_space_to_batch_gradient(native: Any, reference: Any, x: tf.Tensor,
                                  kernel: tf.Tensor) -> tf.Tensor:
    @tf.custom_gradient
    def op(xx: tf.Tensor, kk: tf.Tensor) -> Any:
        def grad(dy: tf.Tensor) -> Any:
            with tf.GradientTape() as tape:
                tape.watch([xx, kk])
                y2 = reference(xx, kk)
            return tape.gradient(y2, [xx, kk], output_gradients=dy)

        return native(xx, kk), grad

    return op(x, kernel)


def dilated_conv2d(x: tf.Tensor, kernel: tf.Tensor, strides: tuple[int, ...], padding: str,
                   dilations: tuple[int, ...]) -> tf.Tensor:
    """A dilated Conv2D (NHWC) whose graph is one native ``Conv2D`` op (module docstring);
    its gradient is ``tf.nn.convolution``'s."""
    return _with_space_to_batch_gradient(
        lambda a, k: tf.nn.conv2d(a, k, strides=strides, padding=padding, dilations=dilations),
        lambda a, k: tf.nn.convolution(a, k, strides=strides, padding=padding,
                                       dilations=dilations), x, kernel)


def dilated_depthwise_conv2d(x: tf.Tensor, kernel: tf.Tensor, strides: tuple[int, int],
                             padding: str, dilations: tuple[int, int]) -> tf.Tensor:
    """A dilated depthwise Conv2D (NHWC) as one ``DepthwiseConv2dNative`` op; its gradient
    is ``tf.nn.depthwise_conv2d``'s."""
    s4 = [1, int(strides[0]), int(strides[1]), 1]
    d4 = [1, int(dilations[0]), int(dilations[1]), 1]
    return _with_space_to_batch_gradient(
        lambda a, k: tf.raw_ops.DepthwiseConv2dNative(input=a, filter=k, strides=s4,
                                                       padding=padding, dilations=d4),
        lambda a, k: tf.nn.depthwise_conv2d(a, k, strides=s4, padding=padding,
                                            dilations=list(dilations)), x, kernel)


def _conv_op(layer: Any, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    return dilated_conv2d(inputs, kernel, tuple(layer.strides), layer.padding.upper(),
                          tuple(layer.dilation_rate))


def _depthwise_call(layer: Any, inputs: tf.Tensor) -> tf.Tensor:
    """``DepthwiseConv2D.call`` with the native dilated op (bias, then activation)."""
    y = dilated_depthwise_conv2d(inputs, layer.depthwise_kernel, tuple(layer.strides),
                                 layer.padding.upper(), tuple(layer.dilation_rate))
    if layer.use_bias:
        y = tf.nn.bias_add(y, layer.bias)
    return layer.activation(y) if layer.activation is not None else y


def _dilated(layer: Any) -> bool:
    return (tuple(getattr(layer, "dilation_rate", (1, 1))) != (1, 1)
            and getattr(layer, "data_format", "channels_last") == "channels_last")


@contextlib.contextmanager
def native_dilations(model: Any) -> Iterator[int]:
    """Within the block, every dilated Keras ``Conv2D`` and ``DepthwiseConv2D`` of
    ``model`` (also inside tfmot's wrappers) computes with the native op: the instance's
    ``convolution_op`` (Conv2D), its cached XLA function (a grouped Conv2D,
    :func:`tfmot_ext._compat.set_grouped_convolution_op`) or ``call``
    (DepthwiseConv2D) is overridden, and restored on exit. Yields how many layers it changed."""
    undo: list[Callable[[], None]] = []
    for outer in model.layers:
        layer = getattr(outer, "layer", outer)  # a QuantizeWrapper's wrapped layer
        if type(layer) is keras.layers.Conv2D and _dilated(layer) and layer.groups == 1:
            layer.convolution_op = functools.partial(_conv_op, layer)
            undo.append(functools.partial(delattr, layer, "convolution_op"))
        elif type(layer) is keras.layers.Conv2D and _dilated(layer):
            # a grouped Conv2D computes through Keras's cached XLA function instead
            set_grouped_convolution_op(layer, functools.partial(_conv_op, layer))
            undo.append(functools.partial(unset_grouped_convolution_op, layer))
        elif type(layer) is keras.layers.DepthwiseConv2D and _dilated(layer):
            layer.call = functools.partial(_depthwise_call, layer)
            undo.append(functools.partial(delattr, layer, "call"))
    try:
        yield len(undo)
    finally:
        for restore in undo:
            restore()
