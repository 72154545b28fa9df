"""Post-training calibration: set a QAT model's ranges from data, change no weight.

``calibrate(qat, data)`` is post-training quantization with tfmot_ext's quantizers and
BatchNorm folded: the model from :func:`tfmot_ext.quantize` is run on the data in
training mode, so that every quantizer records the range it sees, while

* each folded layer runs frozen (its moving statistics, the float model's, fold into
  the kernel as deployed; no batch statistics), and so does every BatchNormalization
  left unfolded (``trainable = False``: tf_keras then normalizes with the moving
  statistics),
* dropout and noise layers are switched off (rate, standard deviation 0),
* every activation range starts empty and tracks all values (the min and max over the
  whole data, what the converter's own calibration takes): tfmot_ext's moving-average
  quantizers switch to ``all_values``, tfmot's ``MovingAverageQuantizer`` (the registry's,
  on Add, Concatenate, pooling, ...) runs as its ``AllValuesQuantizer`` (same
  variables; its ±6 initial range would otherwise dominate),

and afterwards every variable that is not a quantizer's range (kernels, biases,
BatchNorm statistics, step counters, freeze flags) is restored to its value before:
bit for bit, the weights are the float model's. Deployed with :func:`tfmot_ext.to_tflite`,
the result is exactly what :func:`tfmot_ext.extract` and the integer reference give,
as after QAT.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from tfmot_ext._compat import QuantizeLayer, QuantizeWrapper, check_keras2, keras, tfmot
from tfmot_ext.errors import ConversionError
from tfmot_ext.folding import FoldedBatchNormBase
from tfmot_ext.quantizers import MinMaxQuantizer
from tfmot_ext.summary import range_variables, weight_quantizers

__all__ = ["calibrate", "is_range_variable"]

logger = logging.getLogger(__name__)

#: Layers whose training-mode behaviour is noise, switched off while calibrating, with
#: the attribute that sets its strength.
_NOISE = ((keras.layers.Dropout, "rate"), (keras.layers.GaussianNoise, "stddev"),
          (keras.layers.GaussianDropout, "rate"), (keras.layers.AlphaDropout, "rate"))


def is_range_variable(name: str) -> bool:
    """Whether a variable (by name) holds a quantizer's range: ``*_min``, ``*_max`` or an
    LSQ ``*_step`` (not the wrappers' ``optimizer_step`` nor a folded ``bn_step``).

    >>> is_range_variable("quant_conv/post_activation_min:0"), is_range_variable("c/bn_step:0")
    (True, False)
    """
    short = name.split("/")[-1].split(":")[0]
    return short.endswith(("_min", "_max")) or (
        short.endswith("_step") and short not in ("optimizer_step", "bn_step"))


def _quantizers(model: Any) -> list[Any]:
    out: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, QuantizeLayer):
            out.append(layer.quantizer)
        elif isinstance(layer, QuantizeWrapper):
            cfg, inner = layer.quantize_config, layer.layer
            out += [q for _, q in weight_quantizers(layer)]
            out += [q for _, q in cfg.get_activations_and_quantizers(inner)]
            out += list(cfg.get_output_quantizers(inner))
    return [q for q in out if q is not None]


def _batches(data: Any, batch_size: int) -> list[np.ndarray]:
    x = np.asarray(data, np.float32)
    if x.ndim == 0 or len(x) == 0:
        raise ConversionError("calibrate: no calibration data; pass an array of real "
                              "inputs, shape (N, *input_shape)")
    if not np.all(np.isfinite(x)):
        raise ConversionError("calibrate: the calibration data has NaN or Inf values")
    return [x[i:i + batch_size] for i in range(0, len(x), batch_size)]


def calibrate(model: Any, data: Any, *, batch_size: int = 32) -> Any:
    """Set every range of a QAT model from ``data``, changing no weight (see the module
    docstring); returns ``model`` (calibrated in place).

    Args:
        model: a QAT model from :func:`tfmot_ext.quantize`, untrained or trained.
        data: real inputs, shape ``(N, *input_shape)``; a few hundred are usual.
        batch_size: inputs per forward pass.

    Raises:
        ConversionError: no data, or NaN/Inf in it.
    """
    check_keras2(model, "model")
    batches = _batches(data, batch_size)
    kept = [(v, v.numpy()) for v in model.variables if not is_range_variable(v.name)]
    inners = [getattr(la, "layer", la) for la in model.layers]
    noise = []
    for inner in inners:
        attr = next((a for cls, a in _NOISE if isinstance(inner, cls)), None)
        if attr is not None:
            noise.append((inner, attr, getattr(inner, attr)))
    quantizers = _quantizers(model)
    tracked = [(q, q.range_tracking) for q in quantizers
               if isinstance(q, MinMaxQuantizer) and q.range_tracking == "moving_average"]
    tq = tfmot.quantization.keras.quantizers
    averaging = [q for q in quantizers if type(q) is tq.MovingAverageQuantizer]
    folded = [f for f in inners if isinstance(f, FoldedBatchNormBase)]
    batchnorms = [(b, b.trainable) for b in inners
                  if isinstance(b, keras.layers.BatchNormalization)]
    ranges = [v for layer in model.layers for pair in range_variables(layer).values()
              for v in pair]
    try:
        for layer, attr, _ in noise:
            setattr(layer, attr, 0.0)
        for q, _ in tracked:
            q.range_tracking = "all_values"
        for q in averaging:  # the same min/max variables, all-values updates
            q.__class__ = tq.AllValuesQuantizer
        for f in folded:
            f.bn_frozen.assign(1)
        for b, _ in batchnorms:
            b.trainable = False
        for v in ranges:  # empty: the data alone sets them
            v.assign(np.zeros(v.shape, v.dtype.as_numpy_dtype))
        for x in batches:
            model(x, training=True)
    finally:
        for layer, attr, value in noise:
            setattr(layer, attr, value)
        for q, mode in tracked:
            q.range_tracking = mode
        for q in averaging:
            q.__class__ = tq.MovingAverageQuantizer
        for b, trainable in batchnorms:
            b.trainable = trainable
        for v, value in kept:  # weights, BN statistics, step counters, freeze flags
            v.assign(value)
    logger.info("calibrated '%s' on %d inputs: %d quantizers, %d folded layers frozen for "
                "it, %d noise layers off", model.name, sum(len(b) for b in batches),
                len(quantizers), len(folded), len(noise))
    return model
