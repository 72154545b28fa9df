"""scheme: which chains the folding scheme folds, and what the default scheme keeps."""

from __future__ import annotations

import pytest

import tfmot_ext as te
from tfmot_ext._compat import default_8bit_transforms, keras
from tfmot_ext.scheme import is_folded, safe_default_transforms

L = keras.layers


def _chain(op: keras.layers.Layer, act: keras.layers.Layer | None,
           branch: bool = False) -> keras.Model:
    inp = keras.Input((8, 8, 4))
    z = op(inp)
    x = L.BatchNormalization(momentum=0.9, name="bn")(z)
    if act is not None:
        x = act(x)
    x = L.Flatten()(x)
    if branch:  # the op's output also feeds another layer: BN cannot fold into it
        x = L.Concatenate()([x, L.Flatten()(z)])
    return keras.Model(inp, L.Dense(2)(x))


def _folded(qat: keras.Model) -> dict[str, str]:
    return {la.layer.name: la.layer.activation for la in qat.layers if is_folded(la)}


@pytest.mark.parametrize("op,act,fused", [
    (L.Conv2D(3, 3, name="op"), L.ReLU(6.0), "relu6"),
    (L.Conv2D(3, 3, name="op"), L.Activation("relu"), "relu"),
    (L.DepthwiseConv2D(3, name="op"), L.ReLU(), "relu"),
    (L.Conv2D(3, 3, name="op"), None, "linear"),
    # TFLite does not fuse a leaky ReLU: BN folds, the activation stays a layer
    (L.Conv2D(3, 3, name="op"), L.ReLU(negative_slope=0.1), "linear"),
])
def test_folding_scheme_folds_op_bn_and_the_activation_tflite_fuses(op, act, fused):
    qat = te.quantize(_chain(op, act))
    assert list(_folded(qat).values()) == [fused]
    assert not any(isinstance(getattr(la, "layer", la), L.BatchNormalization)
                   for la in qat.layers)


def test_a_bn_whose_op_feeds_another_layer_is_not_folded_into_it():
    qat = te.quantize(_chain(L.Conv2D(3, 3, name="op"), L.ReLU(), branch=True))
    assert "op" not in _folded(qat)


def test_default_scheme_keeps_batchnorm_unfolded():
    qat = te.quantize(_chain(L.Conv2D(3, 3, name="op"), L.ReLU()), scheme=te.DefaultScheme())
    assert _folded(qat) == {}
    assert any(isinstance(getattr(la, "layer", la), L.BatchNormalization) for la in qat.layers)


def test_safe_default_transforms_replace_the_relu_transforms_that_drop_custom_configs():
    """tfmot's LayerReLUQuantize / LayerReluActivationQuantize replace a Conv/Dense's
    custom config by a NoOp one; the safe list holds subclasses that keep it, and no
    instance of the originals (nor tfmot's input quantizer: tfmot_ext's all-values one)."""
    transforms = safe_default_transforms()
    for name in ("LayerReLUQuantize", "LayerReluActivationQuantize", "InputLayerQuantize"):
        original = getattr(default_8bit_transforms, name)
        assert not any(type(t) is original for t in transforms), name
        assert any(isinstance(t, original) for t in transforms), name  # its safe subclass
