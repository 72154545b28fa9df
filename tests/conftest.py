"""Shared fixtures: seeded RNGs, a clean Keras session, small models."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tfmot_ext._compat import keras, tf

L = keras.layers


@pytest.fixture(autouse=True)
def _clean_session():
    keras.backend.clear_session()
    tf.random.set_seed(0)
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def build_cnn(input_shape=(12, 12, 1), classes=3, bn_momentum=0.9, multiplier=2) -> keras.Model:
    """Conv/BN/ReLU -> DepthwiseConv/BN/ReLU6 -> Conv -> pool -> Dense: every preset kind."""
    inp = keras.Input(input_shape)
    x = L.Conv2D(4, 3, name="conv_first")(inp)
    x = L.BatchNormalization(momentum=bn_momentum, name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=multiplier, name="dw")(x)
    x = L.BatchNormalization(momentum=bn_momentum, name="bn2")(x)
    x = L.ReLU(6.0, name="relu2")(x)
    x = L.Conv2D(6, 1, activation="relu", name="pw")(x)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Flatten(name="flat")(x)
    out = L.Dense(classes, name="head")(x)
    return keras.Model(inp, out, name="cnn")


@pytest.fixture
def cnn() -> keras.Model:
    return build_cnn()


@pytest.fixture
def images(rng) -> np.ndarray:
    return rng.normal(size=(16, 12, 12, 1)).astype(np.float32)


def env_snapshot() -> dict[str, str]:
    return dict(os.environ)
