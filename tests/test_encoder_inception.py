"""InceptionV3 encoders: Keras ImageNet (`inception_v3`) and the offline nsfwjs conversion."""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from ml.encoders import EncoderError, get_encoder, tfjs
from ml.encoders import inception as inc
from ml.encoders import inception_offline as off

# -- inception_v3 (random weights only: the ImageNet file is not available offline) ----------------


def _write_keras2_notop(model, path: Path) -> None:
    """Write `model`'s weights in the layout of Keras' notop .h5 (Keras 2, topological order)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.5"
        for layer in model.layers:
            group = f.create_group(layer.name)
            variables = layer.trainable_weights + layer.non_trainable_weights
            names = [f"{layer.name}/{v.name}:0".encode() for v in variables]
            group.attrs["weight_names"] = names
            for name, var in zip(names, variables, strict=True):
                group.create_dataset(name.decode(), data=np.asarray(var))


def test_inception_random_shapes():
    enc = get_encoder("inception_v3", weights="random")
    assert enc.feature_shape == (8, 8, 2048)
    assert "random" in enc.weight_source
    feats = enc.encode([Image.new("RGB", (40, 30), "red")])
    assert feats.shape == (1, 64, 2048) and feats.dtype == np.float32
    assert enc.scale(np.array([[0, 255]], np.uint8)).tolist() == [[-1.0, 1.0]]


def test_inception_without_weights_fails_fast_and_clearly(tmp_path, monkeypatch):
    keras_home = tmp_path / "keras"
    keras_home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    monkeypatch.delenv(inc.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(inc, "DOWNLOAD_HOST", ("imgcap-test.invalid", 443))  # never resolves
    started = time.perf_counter()
    with pytest.raises(EncoderError) as err:
        get_encoder("inception_v3").model  # noqa: B018 (building is the point)
    assert time.perf_counter() - started < 30
    message = str(err.value)
    for option in (
        inc.WEIGHTS_ENV,
        str(keras_home / "models" / inc.KERAS_NOTOP_FILE),
        "weights=",
        "inception_v3_offline",
    ):
        assert option in message

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(inc.WEIGHTS_ENV, str(empty))
    with pytest.raises(EncoderError, match=inc.WEIGHTS_ENV) as err:
        get_encoder("inception_v3").model  # noqa: B018
    assert "inception_v3_offline" in str(err.value)


def test_inception_loads_weights_file_from_env(tmp_path, monkeypatch):
    import keras

    reference = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(75, 75, 3))
    _write_keras2_notop(reference, tmp_path / inc.KERAS_NOTOP_FILE)
    monkeypatch.setenv(inc.WEIGHTS_ENV, str(tmp_path))  # a folder holding the notop file
    enc = get_encoder("inception_v3", image_size=75)
    enc.model  # noqa: B018 (weight_source is set when the model is built)
    assert str(tmp_path / inc.KERAS_NOTOP_FILE) in enc.weight_source
    ours, theirs = enc.model.weights, reference.weights
    assert len(ours) == len(theirs) == 376
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# -- inception_v3_offline: pure helpers -----------------------------------------------------------


def test_parse_js_literal():
    text = 'x={a:1,b:[.5,-2e-3,!0,!1,null],"c d":"q\\"u",e:{},f:[]};'
    value, end = tfjs.parse_js_literal(text, 2)
    assert value == {"a": 1, "b": [0.5, -0.002, True, False, None], "c d": 'q"u', "e": {}, "f": []}
    assert text[end] == ";"


def test_dequantise_across_shards():
    manifest = [
        {
            "paths": ["s1", "s2"],
            "weights": [
                {
                    "name": "a",
                    "shape": [2, 2],
                    "dtype": "float32",
                    "quantization": {"min": -1.0, "scale": 0.5, "dtype": "uint8"},
                },
                {
                    "name": "b",
                    "shape": [3],
                    "dtype": "float32",
                    "quantization": {"min": 2.0, "scale": 0.25, "dtype": "uint8"},
                },
            ],
        }
    ]
    weights = tfjs.dequantise(manifest, {"s1": bytes([0, 1, 2, 3, 4]), "s2": bytes([5, 6])})
    np.testing.assert_allclose(weights["a"], [[-1.0, -0.5], [0.0, 0.5]])
    np.testing.assert_allclose(weights["b"], [3.0, 3.25, 3.5])


def test_offline_options_and_missing_npm(tmp_path, monkeypatch):
    enc = off.InceptionV3OfflineEncoder(scaling="keras")
    assert enc.scale(np.array([0, 255], np.uint8)).tolist() == [-1.0, 1.0]
    # The default: [0, 1], what nsfwjs' BatchNorm statistics were estimated on (and measured better).
    assert off.InceptionV3OfflineEncoder().scale(np.array([0, 255], np.uint8)).tolist() == [0.0, 1.0]
    with pytest.raises(EncoderError):
        off.InceptionV3OfflineEncoder(scaling="caffe")
    with pytest.raises(EncoderError, match="mixed5"):
        off.InceptionV3OfflineEncoder(tap="mixed7")  # retrained by nsfwjs: not ImageNet
    monkeypatch.setenv("IMGCAP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(off.shutil, "which", lambda _: None)
    with pytest.raises(EncoderError, match="make install"):
        off.InceptionV3OfflineEncoder().model  # noqa: B018


# -- inception_v3_offline: the real conversion (built once per session) ---------------------------


@pytest.fixture(scope="session")
def nsfwjs_build(tmp_path_factory) -> dict:
    """Make sure the converted weights exist; fetch nsfwjs with npm only if they do not."""
    tarball = None
    if not off.cache_path().exists():
        tarball = off.fetch_tarball(tmp_path_factory.mktemp("npm"))
        started = time.perf_counter()
        off.build_cache(tarball)
        print(f"built inception_v3_offline weights in {time.perf_counter() - started:.1f}s")
    return {"tarball": tarball, "tmp": tmp_path_factory}


@pytest.fixture(scope="session")
def offline_encoder(nsfwjs_build) -> off.InceptionV3OfflineEncoder:
    enc = get_encoder("inception_v3_offline")
    enc.model  # noqa: B018
    return enc


def test_offline_shapes(offline_encoder):
    assert offline_encoder.feature_shape == (17, 17, 768)
    assert offline_encoder.weight_source.startswith("npm nsfwjs@4.4.0")
    feats = offline_encoder.encode([Image.new("RGB", (64, 48), "blue")])
    assert feats.shape == (1, 289, 768)
    assert np.isfinite(feats).all()


def test_offline_weights_equal_dequantised_values(nsfwjs_build, offline_encoder):
    tarball = nsfwjs_build["tarball"]
    if tarball is None:  # the cache was already there: use npm's local cache, never the network
        try:
            tarball = off.fetch_tarball(nsfwjs_build["tmp"].mktemp("npm"), offline=True)
        except EncoderError as exc:
            pytest.skip(f"nsfwjs tarball not in npm's cache: {exc}")
    config, weights = off.read_tarball(tarball)
    model = offline_encoder.model
    ours = off.layer_order(model.get_config(), "mixed5")
    theirs = off.layer_order(config, "mixed5")
    pairs = [(a, b) for (a, cls), (b, _) in zip(ours, theirs, strict=True) if cls in off.WEIGHTED_CLASSES]
    assert len(pairs) == 100  # 50 convolutions, 50 batch norms
    for our_name, their_name in (pairs[0], pairs[1], pairs[57], pairs[-1]):
        layer = model.get_layer(our_name)
        for var in layer.weights:
            np.testing.assert_array_equal(np.asarray(var), weights[f"{their_name}/{var.name}"])
    assert model.get_layer(pairs[0][0]).weights[0].shape == (3, 3, 3, 32)


def _pooled_cosines(enc, images) -> np.ndarray:
    feats = enc.encode(images).mean(axis=1)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    return feats @ feats.T


def test_offline_features_are_not_random(offline_encoder):
    from skimage import data

    cat = Image.fromarray(data.chelsea())
    cos = _pooled_cosines(
        offline_encoder, [cat, cat.transpose(Image.FLIP_LEFT_RIGHT), Image.fromarray(data.coffee())]
    )
    # Measured: flip 0.99, coffee 0.76; a randomly initialised net gives ~1.0 for both.
    assert cos[0, 1] > 0.95
    assert cos[0, 2] < 0.9
    assert cos[0, 1] - cos[0, 2] > 0.1


def test_offline_second_build_comes_from_cache(nsfwjs_build, monkeypatch):
    path = off.cache_path()
    stamp = os.stat(path).st_mtime_ns

    def refuse(*_args, **_kwargs):
        raise AssertionError("rebuilt although the cache exists")

    monkeypatch.setattr(off, "fetch_tarball", refuse)
    monkeypatch.setattr(off, "tap_model", refuse)
    assert off.build_cache() == path
    assert os.stat(path).st_mtime_ns == stamp
